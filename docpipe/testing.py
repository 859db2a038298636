"""Test helpers for block authors: a contract test class and ``run_flow``.

Subclass :class:`BlockContract` in your plugin's tests (pytest collects the
subclass because its name starts with ``Test``)::

    from docpipe.testing import BlockContract

    class TestGreet(BlockContract):
        block = Greet
        params = {"greeting": "hi"}
        inputs = [{"path": "a.pdf"}, {"path": "b.pdf"}]

and run a whole flow over real files with :func:`run_flow`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from docpipe.blocks import Block, import_ref
from docpipe.engine import BatchResult, Engine
from docpipe.flow import Flow
from docpipe.planner import build_plan
from docpipe.plugins import Registry


class BlockContract:
    """The checks every block must pass. Set ``block``, ``params`` and ``inputs``."""

    block: ClassVar[type[Block]]
    params: ClassVar[dict[str, Any]] = {}
    #: inputs to run, each holding exactly the keys the block reads
    inputs: ClassVar[list[dict[str, Any]]] = []

    def test_manifest_is_valid(self) -> None:
        assert self.block.manifest.problems() == []

    def test_params_validate_and_publish_a_json_schema(self) -> None:
        self.block.Params.model_validate(self.params)
        json.dumps(self.block.params_schema())

    def test_workers_can_import_the_block(self) -> None:
        assert import_ref(self.block.ref()) is self.block

    def test_inputs_hold_exactly_the_reads(self) -> None:
        assert self.inputs, "set `inputs` to at least one real input"
        for item in self.inputs:
            assert set(item) == set(self.block.manifest.reads)

    def test_run_returns_one_declared_result_per_input(self) -> None:
        params = self.block.Params.model_validate(self.params)
        block = self.block()
        block.setup(params)
        try:
            results = block.run([dict(i) for i in self.inputs], params)
        finally:
            block.teardown()
        assert isinstance(results, list) and len(results) == len(self.inputs)
        for r in results:
            assert isinstance(r, BaseException) or set(r) == set(self.block.manifest.writes)


def run_flow(flow: Flow | dict[str, Any] | str | Path, documents: Iterable[str | Path], *,
             plugins: Iterable[str | object] = (), params: dict[str, Any] | None = None,
             workers: int = 1, store: Any = None) -> BatchResult:
    """Plan ``flow`` (a :class:`Flow`, a dict or a file) and run it over ``documents``."""
    registry = Registry(extra=plugins)
    base = Path(".")
    if isinstance(flow, Flow):
        definition = flow.to_dict()
    elif isinstance(flow, dict):
        definition = flow
    else:
        base = Path(flow).resolve().parent
        definition = json.loads(Path(flow).read_text(encoding="utf-8"))
    plan = build_plan(definition, registry, params=params, base_dir=base)
    with Engine(store, workers=workers) as engine:
        return engine.run(plan, [str(d) for d in documents])
