"""Plans and inputs: a flow file, a recorded flow or a recorded batch made into a
:class:`~docpipe.planner.Plan`, and the documents an input spec names."""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docpipe.flow import content_hash, redact_definition, redact_params
from docpipe.inputs import absolute, expand_inputs
from docpipe.service.errors import Conflict, NotFound, SecretsNeeded

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
    subflows = batch.get("subflows") or {}
    masked = [k for k, v in recorded.items() if v == MASKED]
    masked += [k for sub in subflows.values() for k, v in (sub.get("params") or {}).items()
               if v == MASKED and k not in given and k not in masked]
    if masked:
        raise SecretsNeeded(masked)
    return plan_pinned(batch["definition"], registry, {**recorded, **given}, subflows)


def plan_pinned(definition: dict[str, Any], registry: Registry, params: Mapping[str, Any],
                subflows: Mapping[str, dict[str, Any]] | None) -> Plan:
    """The plan of a recorded ``definition`` whose subflows are the recorded ``subflows`` (path
    relative to the flow's folder -> definition, as :func:`subflows_of` gives them), never the
    files on disk: they are written to a temporary folder laid out as the flow's was and the
    flow is planned there. Without recorded subflows (a batch recorded before they were), its
    subflows resolve from the current folder, as they always did."""
    from docpipe.planner import build_plan

    if not subflows:
        return build_plan(definition, registry, params=dict(params))
    extra = [Path(d).resolve() for d in os.environ.get("DOCPIPE_SUBFLOW_DIRS", "").split(os.pathsep) if d]
    with tempfile.TemporaryDirectory(prefix="docpipe-subflows-") as tmp:
        root = Path(tmp).resolve()
        ups = max((_ups(k) for k in subflows if not posixpath.isabs(k)), default=0)
        base = root.joinpath(*["up"] * ups)  # a ``../x.json`` lands inside the root too
        base.mkdir(parents=True, exist_ok=True)
        for key, sub in subflows.items():
            if posixpath.isabs(key):  # a subflow named by an absolute path: read from disk
                continue
            target = base.joinpath(*posixpath.normpath(key).split("/")).resolve()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(sub), encoding="utf-8")
        return build_plan(definition, registry, params=dict(params), base_dir=base,
                          subflow_dirs=(root, *extra))


def _ups(key: str) -> int:
    """How many ``..`` a relative path starts with (after normalising it)."""
    parts = posixpath.normpath(key).split("/")
    return next((i for i, part in enumerate(parts) if part != ".."), len(parts))


def _subflow_refs(value: Any) -> Iterator[tuple[str, str]]:
    """(step id, subflow path as written) of every subflow step in a definition, nested ones
    (in switch cases and fork branches) included."""
    if isinstance(value, dict):
        if isinstance(value.get("id"), str) and isinstance(value.get("subflow"), str):
            yield value["id"], value["subflow"]
        for v in value.values():
            yield from _subflow_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _subflow_refs(v)


def subflows_of(plan: Plan) -> dict[str, dict[str, Any]]:
    """The subflow definitions ``plan`` loaded, nested ones included, by path relative to the
    flow's folder (``sub/ocr.json``, ``../shared/x.json``), secret param defaults masked: what
    a batch records so that it resumes on the subflows it started with."""
    found: dict[str, dict[str, Any]] = {}

    def walk(p: Plan, folder: str) -> None:
        refs = dict(_subflow_refs(p.definition.get("steps")))
        for node in p.nodes:
            ref = refs.get(node.id)
            if node.subplan is not None and ref is not None:
                key = posixpath.normpath(posixpath.join(folder, ref))
                found[key] = redact_definition(node.subplan.definition)
                walk(node.subplan, posixpath.dirname(key))

    walk(plan, "")
    return found


def pin_subflows(store: Store, plan: Plan) -> None:
    """Have the next batch ``store`` starts record ``plan``'s subflows (:func:`subflows_of`)
    the moment it starts (``Store.record_subflows``): the engine starts the batch and does
    not pass them to ``start_batch``. For a store that starts one batch (the CLI's)."""
    subflows = subflows_of(plan)
    if not subflows:
        return
    start = store.start_batch

    def start_batch(*args: Any, **kwargs: Any) -> str:
        batch_id = start(*args, **kwargs)
        store.record_subflows(batch_id, subflows)
        return batch_id

    setattr(store, "start_batch", start_batch)  # noqa: B010 - an instance's method, for this store only


def record_flow(store: Store, plan: Plan) -> None:
    """Record ``plan``'s flow as a version (secret param defaults masked) without running it."""
    store.put_flow(plan.name, plan.version, plan.content_hash, redact_definition(plan.definition))


def find_documents(specs: Iterable[str], warn: Callable[[str, str], None]) -> list[str]:
    """The documents that ``specs`` (files, folders, globs) name, as absolute paths, in
    order, each once; see :func:`docpipe.inputs.expand_inputs` (``warn`` hears of skipped
    entries; a spec that names nothing raises :class:`~docpipe.inputs.InputError`)."""
    return [absolute(d) for d in expand_inputs(specs, warn)]


def previous_batch(store: Store, plan: Plan, documents: list[str]) -> str | None:
    """The newest batch of this flow (by name: its file may have changed since, see
    :func:`pinned_changes`) over these exact documents (finished or not: a finished one has
    nothing left to run, and its results are written again as they are)."""
    for b in store.list_batches(limit=200):
        if b["flow"] == plan.name and store.batch_inputs(b["id"]) == documents:
            return str(b["id"])
    return None


class ParamsDiffer(Conflict):
    """``-p`` params given to a resume that differ from those the batch started with: a batch
    runs on one set of params (a rerun, ``docpipe runs rerun``, is how to try others)."""

    def __init__(self, batch_id: str, differences: list[str]) -> None:
        self.differences = differences
        super().__init__(f"batch {batch_id} started with other params; a resume runs on the params it "
                         "started with: " + "; ".join(differences), field="params")


def _same(a: Any, b: Any) -> bool:
    """Equal as recorded (JSON): ``3`` and ``3.0`` are, a tuple and a list are."""
    return bool(json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str))


def check_resume_params(store: Store, batch_id: str, given: Mapping[str, Any]) -> None:
    """Refuse (:class:`ParamsDiffer`, each difference as ``key: recorded "auto", given "eng"``)
    params given to a resume of batch ``batch_id`` that differ from those it recorded;
    equal ones are fine, and secret ones (recorded masked) are exempt: they must be given again."""
    batch = store.batch(batch_id)
    if batch is None:
        raise NotFound(f"no batch {batch_id} in {store.url}", field="batch_id")
    recorded = batch["params"] or {}
    differences = []
    for key, value in given.items():
        if redact_params({key: "x"})[key] == MASKED or recorded.get(key) == MASKED:
            continue
        if key not in recorded:
            differences.append(f"{key}: not a param of the batch, given {json.dumps(value, default=str)}")
        elif not _same(recorded[key], value):
            differences.append(f"{key}: recorded {json.dumps(recorded[key], default=str)}, "
                               f"given {json.dumps(value, default=str)}")
    if differences:
        raise ParamsDiffer(batch_id, differences)


def pinned_changes(store: Store, batch_id: str, plan: Plan | None = None) -> list[str]:
    """What changed since batch ``batch_id`` started, which a resume does not follow: the flow
    (``plan``, the flow file as it is now; without one, the file the batch's recorded command
    line named, if it is still there) and each subflow. One sentence each; ``[]``: nothing."""
    batch = store.batch(batch_id)
    if batch is None:
        raise NotFound(f"no batch {batch_id} in {store.url}", field="batch_id")
    name, recorded = batch["flow"], batch["definition"]
    now: dict[str, Any] | None = redact_definition(plan.definition) if plan is not None else _argv_flow(batch)
    notes = []
    pinned = f"resuming on the definition it started with (version {batch['flow_version']}, " \
             f"hash {batch['content_hash'][:12]})"
    if now is not None and content_hash(now) != content_hash(redact_definition(recorded)):
        notes.append(f"flow {name} changed since batch {batch_id} started: {pinned}")
    if plan is not None:
        on_disk = subflows_of(plan)
        for key, sub in (batch.get("subflows") or {}).items():
            if key in on_disk and content_hash(on_disk[key]) != content_hash(sub):
                notes.append(f"subflow {key} of flow {name} changed since batch {batch_id} started: "
                             f"resuming on the definition it started with (hash {content_hash(sub)[:12]})")
    return notes


def _argv_flow(batch: dict[str, Any]) -> dict[str, Any] | None:
    """The definition in the flow file the batch's recorded command line named (``docpipe run
    FLOW ...``), if that file is still there (relative to this folder) and is the same flow."""
    from docpipe.errors import FlowError
    from docpipe.flow import load_definition

    argv = list(batch.get("argv") or [])
    if "run" not in argv:
        return None
    after = argv[argv.index("run") + 1:]
    for before, arg in zip(["run", *after], after, strict=False):
        if arg.endswith(".json") and not arg.startswith("-") and before not in ("-p", "--param"):
            try:
                found = load_definition(arg)
            except FlowError:
                return None
            return found if found.get("name") == batch["flow"] else None
    return None
