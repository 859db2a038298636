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
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from docpipe.artifacts import WORK_DIR_KEY
from docpipe.blocks import Artifact, Block, import_ref
from docpipe.engine import BatchResult, Engine
from docpipe.flow import Flow
from docpipe.planner import build_plan
from docpipe.plugins import Registry


class BlockContract:
    """The checks every block must pass. Set ``block``, ``params`` and ``inputs``."""

    block: ClassVar[type[Block]]
    params: ClassVar[dict[str, Any]] = {}
    #: inputs to run, each holding exactly the keys the block reads (``work_dir``, the run's
    #: folder for artifacts, may be left out: the contract gives each input a fresh one)
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
        reads = set(self.block.manifest.reads)
        for item in self.inputs:
            assert set(item) | (reads & {WORK_DIR_KEY}) == reads

    def test_run_returns_one_declared_result_per_input(self) -> None:
        params = self.block.Params.model_validate(self.params)
        block = self.block()
        block.setup(params)
        with tempfile.TemporaryDirectory(prefix="docpipe-contract-") as work:
            inputs = [dict(i) for i in self.inputs]
            if WORK_DIR_KEY in self.block.manifest.reads:
                for n, item in enumerate(inputs):
                    item.setdefault(WORK_DIR_KEY, os.path.join(work, str(n)))
                    os.makedirs(item[WORK_DIR_KEY], mode=0o700, exist_ok=True)
            try:
                results = block.run(inputs, params)
            finally:
                block.teardown()
            assert isinstance(results, list) and len(results) == len(self.inputs)
            declared = self.block.manifest.writes
            for r in results:
                assert isinstance(r, BaseException) or set(r) == set(declared)
                if isinstance(r, dict):  # an artifact lies in its run's folder, or is the input
                    for key in (k for k, t in declared.items() if t is Artifact):
                        assert r[key] is None or os.path.exists(r[key]), (key, r[key])


def run_flow(flow: Flow | dict[str, Any] | str | Path, documents: Iterable[str | Path], *,
             plugins: Iterable[str | object] = (), params: dict[str, Any] | None = None,
             workers: int = 1, store: Any = None, work_dir: str | Path | None = None,
             ) -> BatchResult:
    """Plan ``flow`` (a :class:`Flow`, a dict or a file) and run it over ``documents``
    (``work_dir``: the work area of the runs' artifacts, see :mod:`docpipe.artifacts`)."""
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
    with Engine(store, workers=workers, work_dir=work_dir) as engine:
        return engine.run(plan, [str(d) for d in documents])
