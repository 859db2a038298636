"""Plans and inputs: a flow file, a recorded flow or a recorded batch made into a
:class:`~docpipe.planner.Plan`, and the documents an input spec names."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docpipe.flow import redact_definition
from docpipe.inputs import absolute, expand_inputs
from docpipe.service.errors import NotFound, SecretsNeeded

if TYPE_CHECKING:  # the planner and the store load late: `docpipe --help` needs neither
    from docpipe.planner import Plan
    from docpipe.plugins import Registry
    from docpipe.store import Store

#: a recorded param whose value was masked because its name looks secret
MASKED = "***"


def plan_flow(path: str | Path, registry: Registry, params: Mapping[str, Any] | None = None) -> Plan:
    """The plan of the flow file ``path`` with ``registry``'s blocks; ``params`` override
    the flow's. Raises :class:`~docpipe.errors.FlowError` with every issue found."""
    from docpipe.planner import plan_file

    return plan_file(path, registry, dict(params or {}))


def plan_definition(definition: dict[str, Any], registry: Registry,
                    params: Mapping[str, Any] | None = None) -> Plan:
    """The plan of a recorded flow definition. Its secret param defaults were masked when
    it was recorded: :class:`SecretsNeeded` unless ``params`` gives them."""
    given = dict(params or {})
    masked = [k for k, v in (definition.get("params") or {}).items() if v == MASKED and k not in given]
    if masked:
        raise SecretsNeeded(masked)
    from docpipe.planner import build_plan

    return build_plan(definition, registry, params=given)


def plan_batch(store: Store, batch_id: str, registry: Registry,
               params: Mapping[str, Any] | None = None) -> Plan:
    """The plan batch ``batch_id`` started with (its recorded definition and params, ``params``
    overriding them), to resume or retry it. Secret params were masked in the record:
    :class:`SecretsNeeded` unless ``params`` gives them again."""
    batch = store.batch(batch_id)
    if batch is None:
        raise NotFound(f"no batch {batch_id} in {store.url}", field="batch_id")
    given = dict(params or {})
    recorded = {k: v for k, v in (batch["params"] or {}).items() if k not in given}
    masked = [k for k, v in recorded.items() if v == MASKED]
    if masked:
        raise SecretsNeeded(masked)
    from docpipe.planner import build_plan

    return build_plan(batch["definition"], registry, params={**recorded, **given})


def record_flow(store: Store, plan: Plan) -> None:
    """Record ``plan``'s flow as a version (secret param defaults masked) without running it."""
    store.put_flow(plan.name, plan.version, plan.content_hash, redact_definition(plan.definition))


def find_documents(specs: Iterable[str], warn: Callable[[str, str], None]) -> list[str]:
    """The documents that ``specs`` (files, folders, globs) name, as absolute paths, in
    order, each once; see :func:`docpipe.inputs.expand_inputs` (``warn`` hears of skipped
    entries; a spec that names nothing raises :class:`~docpipe.inputs.InputError`)."""
    return [absolute(d) for d in expand_inputs(specs, warn)]


def previous_batch(store: Store, plan: Plan, documents: list[str]) -> str | None:
    """The newest batch of this exact flow over these exact documents (finished or not: a
    finished one has nothing left to run, and its results are written again as they are)."""
    for b in store.list_batches(limit=200):
        if b["flow"] != plan.name:
            continue
        full = store.batch(b["id"])
        if full and full["content_hash"] == plan.content_hash and store.batch_inputs(b["id"]) == documents:
            return str(b["id"])
    return None
