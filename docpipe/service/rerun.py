"""Rerun a run from a step, and what changed between two runs.

A rerun (``docpipe runs rerun RUN_ID --from STEP``) is a new attempt of a finished run
that keeps the earlier one: a new batch holding one new flow run (its ``rerun_of`` is the
earlier run), into which the earlier attempt's succeeded task records of every step
*before* ``STEP`` are copied as they are (outputs, blob references and times included: no
block is called for them); resuming that batch (``Engine.resume``) restores those steps
and runs ``STEP``, everything that depends on it, and whatever the earlier attempt had not
finished. Params are the earlier batch's, overlaid with the ones given (recorded with the
new batch): that is how a changed step, param or model is tried on yesterday's documents.

:func:`diff_runs` compares two runs (or attempts): their final outputs, and step by step
what each step's latest record wrote.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docpipe.service.batches import Batch
from docpipe.service.errors import Conflict, NotFound
from docpipe.service.plans import plan_batch
from docpipe.status import Status

if TYPE_CHECKING:  # the planner and the store load late: `docpipe --help` needs neither
    from docpipe.planner import Plan
    from docpipe.plugins import Registry
    from docpipe.store import Store

#: characters of a value :func:`shorten` keeps
SHORT = 60


@dataclass(frozen=True)
class Rerun:
    """A rerun made ready by :func:`prepare_rerun`: run ``batch`` (a resume) to carry it out."""

    #: the new run (a new attempt of ``of``)
    run_id: str
    #: the run it re-runs
    of: str
    step: str
    #: the steps run again by definition: ``step`` and its dependents, in the flow's order
    again: list[str]
    #: task records copied from the earlier attempt (the steps kept)
    copied: int
    batch: Batch

    @property
    def batch_id(self) -> str:
        assert self.batch.batch_id is not None
        return self.batch.batch_id


def steps_after(plan: Plan, step: str) -> list[str]:
    """``step`` and every step that depends on it, transitively, in the flow's order. An
    unknown step raises :class:`NotFound` (``field`` ``step``) listing the flow's steps."""
    ids = [n.id for n in plan.nodes]
    if step not in ids:
        raise NotFound(f"flow {plan.name} has no step {step!r}; its steps: {', '.join(ids)}", field="step")
    todo, seen = [ids.index(step)], {ids.index(step)}
    while todo:
        for d in plan.nodes[todo.pop()].dependents:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return [ids[i] for i in sorted(seen)]


def prepare_rerun(store: Store, run_id: str, step: str, registry: Registry,
                  params: Mapping[str, Any] | None = None, *, argv: Sequence[str] | None = None) -> Rerun:
    """Make run ``run_id`` ready to run again from ``step`` as a new attempt (see the module
    docstring): the new batch, its run and the copied task records are written in the store;
    run the returned :attr:`Rerun.batch` to carry it out (an interrupted rerun is resumed
    like any batch). ``params`` overlay the earlier batch's. :class:`NotFound` for an unknown
    run or step, :class:`Conflict` for a run still running or a document that is gone,
    :class:`~docpipe.service.SecretsNeeded` for secret params not given again."""
    import sqlalchemy as sa

    from docpipe.engine import redact_arg
    from docpipe.flow import redact_params
    from docpipe.inputs import display_path
    from docpipe.steps import parse
    from docpipe.store import new_id
    from docpipe.store.schema import flow_runs, task_runs

    run = store.get_run(run_id, resolve_blobs=False)
    if run is None:
        raise NotFound(f"no run {run_id}", field="run_id")
    if run["status"] == Status.RUNNING:
        raise Conflict(f"run {run_id} is running; rerun it once it has ended", field="run_id")
    batch = store.batch(run["batch_id"])
    if batch is None:
        raise NotFound(f"no batch {run['batch_id']}", field="run_id")
    plan = plan_batch(store, run["batch_id"], registry, params)
    again = steps_after(plan, step)
    document = next((d for d in store.batch_inputs(run["batch_id"]) if display_path(d) == run["document"]),
                    run["document"])
    if not Path(document).is_file():
        raise Conflict(f"{run['document']} is not there any more: a rerun reads the document again",
                       field="run_id")
    redacted = [redact_arg(a) for a in argv] if argv else None
    batch_id = store.start_batch(batch["flow_id"], redact_params(plan.params), 1, redacted,
                                 inputs=[(document, run["correlation_id"])], correlation_id=run["correlation_id"],
                                 subflows=batch.get("subflows"))
    new = new_id()
    skip = set(again)
    columns = [c for c in task_runs.c if c.name not in ("id", "flow_run_id")]
    query = (sa.select(*columns).where(task_runs.c.flow_run_id == run_id, task_runs.c.status == Status.SUCCEEDED)
             .order_by(task_runs.c.id))
    with store.engine.begin() as conn:
        copies = [{**row, "flow_run_id": new} for row in conn.execute(query).mappings()
                  if parse(row["step"]).top not in skip]
        # running, so that a resume continues it; its attempt goes up by one as the resume starts
        conn.execute(flow_runs.insert().values(
            id=new, batch_id=batch_id, flow_id=batch["flow_id"], document=run["document"], status=Status.RUNNING,
            started_at=time.time(), correlation_id=run["correlation_id"], attempt=run["attempt"], rerun_of=run_id))
        if copies:
            conn.execute(task_runs.insert(), copies)
    return Rerun(new, run_id, step, again, len(copies), Batch(plan, batch_id=batch_id))


_STEP_KINDS = ("block", "map", "expr", "switch", "fork", "join", "subflow", "review")


def step_ids(definition: Any) -> list[str]:
    """The ids of a flow definition's steps, nested ones (switch cases, fork branches)
    included, in the order they are written: what ``--from`` may name."""
    found: list[str] = []
    if isinstance(definition, dict):
        if isinstance(definition.get("id"), str) and any(k in definition for k in _STEP_KINDS):
            found.append(definition["id"])
        for key, value in definition.items():
            if key != "params":
                found += step_ids(value)
    elif isinstance(definition, list):
        for value in definition:
            found += step_ids(value)
    return found


def rerun_of(store: Store, run_id: str) -> str | None:
    """The run that run ``run_id`` re-ran from a step, if it is a rerun."""
    import sqlalchemy as sa

    from docpipe.store.schema import flow_runs

    with store.engine.connect() as conn:
        found = conn.execute(sa.select(flow_runs.c.rerun_of).where(flow_runs.c.id == run_id)).scalar()
    return None if found is None else str(found)


def reruns(store: Store, run_id: str) -> list[str]:
    """The reruns of run ``run_id``, oldest first."""
    import sqlalchemy as sa

    from docpipe.store.schema import flow_runs

    query = sa.select(flow_runs.c.id).where(flow_runs.c.rerun_of == run_id).order_by(flow_runs.c.seq)
    with store.engine.connect() as conn:
        return [str(r) for r in conn.execute(query).scalars()]


# --- diffs ----------------------------------------------------------------------------------

class _Missing:
    """A value one side does not have."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Change:
    """A value that differs: ``a`` and ``b`` (:data:`MISSING` where one run has no such key)."""

    key: str
    a: Any
    b: Any

    def as_dict(self) -> dict[str, Any]:
        """``key``, ``a`` and ``b`` shortened (:func:`shorten`; absent where a side has none)."""
        out: dict[str, Any] = {"key": self.key}
        for side in ("a", "b"):
            value = getattr(self, side)
            if value is not MISSING:
                out[side] = shorten(value)
        return out


@dataclass(frozen=True)
class StepChange:
    """A step whose latest record differs: its status in each run (``None``: the run has no
    record of it) and the keys it wrote that differ."""

    step: str
    status_a: str | None
    status_b: str | None
    changes: list[Change] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "status_a": self.status_a, "status_b": self.status_b,
                "changes": [c.as_dict() for c in self.changes]}


@dataclass(frozen=True)
class RunDiff:
    """What differs between runs ``a`` and ``b`` (:func:`diff_runs`)."""

    #: each run's id, flow, version, document, status, attempt and ``rerun_of``
    a: dict[str, Any]
    b: dict[str, Any]
    #: final outputs that differ or that one run has only
    outputs: list[Change]
    #: steps whose latest record differs (status or outputs), or that one run has only
    steps: list[StepChange]

    @property
    def same(self) -> bool:
        """No output, status or step differs."""
        return not self.outputs and not self.steps and self.a["status"] == self.b["status"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, values shortened."""
        return {"a": self.a, "b": self.b, "same": self.same, "outputs": [c.as_dict() for c in self.outputs],
                "steps": [s.as_dict() for s in self.steps]}


def shorten(value: Any, width: int = SHORT) -> str:
    """A value in one short line: text as it is, anything else as JSON, whitespace collapsed,
    clipped to ``width`` characters with its length; an offloaded value as ``blob <sha>``."""
    if isinstance(value, dict) and set(value) >= {"$blob", "size"}:
        return f"blob {str(value['$blob'])[:12]} ({value['size']:,} bytes)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else f"{text[:width]}… ({len(text):,} characters)"


def _changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Change]:
    """The keys whose values differ, in ``a``'s order then ``b``'s new ones. Blob references
    are compared as they are: equal content, equal reference."""
    return [Change(k, a.get(k, MISSING), b.get(k, MISSING)) for k in dict.fromkeys([*a, *b])
            if k not in a or k not in b or _text(a[k]) != _text(b[k])]


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _latest(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each step's latest record (the records come oldest first)."""
    return {t["step"]: t for t in run["tasks"]}


def diff_runs(store: Store, a: str, b: str) -> RunDiff:
    """What differs between runs ``a`` and ``b`` (ids or unique prefixes): their final
    outputs, and per step (path) the status and outputs of each step's latest record."""
    from docpipe.service.runs import full_id

    runs = []
    for given, what in ((a, "run_a"), (b, "run_b")):
        try:
            found = store.get_run(full_id(store, given, "run"), resolve_blobs=False)
        except NotFound as exc:
            raise NotFound(str(exc), field=what) from None
        if found is None:
            raise NotFound(f"no run {given}", field=what)
        runs.append(found)
    ra, rb = runs
    steps_a, steps_b = _latest(ra), _latest(rb)
    steps = []
    for step in dict.fromkeys([*steps_a, *steps_b]):
        ta, tb = steps_a.get(step), steps_b.get(step)
        changes = _changes((ta or {}).get("outputs") or {}, (tb or {}).get("outputs") or {})
        status_a = None if ta is None else str(ta["status"])
        status_b = None if tb is None else str(tb["status"])
        if changes or status_a != status_b:
            steps.append(StepChange(step, status_a, status_b, changes))
    return RunDiff(_summary(store, ra), _summary(store, rb), _changes(ra["outputs"] or {}, rb["outputs"] or {}),
                   steps)


def _summary(store: Store, run: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "flow", "flow_version", "document", "status", "attempt", "batch_id")
    return {**{k: run[k] for k in keys}, "rerun_of": rerun_of(store, run["id"])}
