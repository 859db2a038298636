"""Queries over the recorded runs: ids by unique prefix, time filters, a run with its own
duration and everything its steps wrote."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from docpipe.service.errors import Ambiguous, NotFound, ServiceError
from docpipe.status import Status

if TYPE_CHECKING:  # the store (SQLAlchemy) loads late: `docpipe --help` needs none of it
    from docpipe.store import Store

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str | None) -> float | None:
    """``30m``, ``2h``, ``7d`` (ago) or an ISO 8601 date/time -> epoch seconds."""
    if text is None:
        return None
    m = _AGO.fullmatch(text.strip())
    if m:
        return time.time() - float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ServiceError(f"{text!r}: use 30m, 2h, 7d or an ISO date like 2026-11-25T08:00",
                           field="since") from None


def full_id(store: Store, given: str, what: Literal["run", "batch", "task"]) -> str:
    """The run, batch or review task id that starts with ``given`` (a unique prefix will do,
    as in git). :class:`NotFound` or :class:`Ambiguous` (``field``: ``run_id``, ``batch_id``
    or ``task_id``)."""
    import sqlalchemy as sa

    from docpipe.store.schema import batches, flow_runs, review_tasks

    table = {"run": flow_runs, "batch": batches, "task": review_tasks}[what]
    prefix = given.strip().lower()
    query = sa.select(table.c.id).where(table.c.id.startswith(prefix, autoescape=True)).limit(3)
    with store.engine.connect() as conn:
        found = [] if not prefix else list(conn.execute(query).scalars())
    if given in found:
        return given
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise NotFound(f"no {what} {given} in {store!r}", field=f"{what}_id")
    shown = ", ".join(found[:2]) + (", ..." if len(found) > 2 else "")
    raise Ambiguous(f"{given!r} is the start of several {what} ids ({shown}): give more of it",
                    field=f"{what}_id")


def own_duration(run: dict[str, Any]) -> float | None:
    """Seconds the run's own steps took: the time covered by its task attempts of this
    attempt (since its last start; steps that ran at the same time count once), without
    the time it waited for a worker. A run is admitted with the rest of its batch (up to
    --max-in-flight at once), so its start to its end is about the batch's duration."""
    start, end = run.get("started_at"), run.get("finished_at")
    if start is None or end is None:
        return None
    spans = sorted((t["started_at"], t["finished_at"]) for t in run.get("tasks", ())
                   if t["started_at"] is not None and t["finished_at"] is not None
                   and t["started_at"] >= start)  # earlier attempts (before a resume) excluded
    if not spans:
        return float(end - start)
    busy, (lo, hi) = 0.0, spans[0]
    for a, b in spans[1:]:
        if a > hi:
            busy, lo, hi = busy + hi - lo, a, b
        else:
            hi = max(hi, b)
    return busy + hi - lo


@dataclass(frozen=True)
class RunQuery:
    """Which runs to list: every filter that is given must match."""

    status: str | None = None
    flow: str | None = None
    #: a batch id or a unique prefix of one
    batch: str | None = None
    correlation_id: str | None = None
    #: ``30m``, ``2h``, ``7d`` or an ISO date/time (see :func:`parse_since`)
    since: str | None = None
    limit: int = 50


@dataclass
class RunList:
    """Runs, newest first, each with ``duration`` (its own, :func:`own_duration`) and
    ``in_flight`` (its start to its end); ``counts``: every matching run by status."""

    runs: list[dict[str, Any]]
    counts: dict[str, int]


def list_runs(store: Store, query: RunQuery) -> RunList:
    """The runs ``query`` selects (at most ``query.limit``) and the counts of all that match."""
    batch_id = full_id(store, query.batch, "batch") if query.batch else None
    since = parse_since(query.since)
    rows = store.list_runs(status=query.status, flow=query.flow, batch_id=batch_id,
                           correlation_id=query.correlation_id, since=since, limit=query.limit)
    counts = store.count_runs(flow=query.flow, batch_id=batch_id, correlation_id=query.correlation_id,
                              since=since)
    for r in rows:
        full = store.get_run(r["id"], resolve_blobs=False)
        r["in_flight"], r["duration"] = r["duration"], own_duration(full or r)
    return RunList(rows, counts)


def show_run(store: Store, run_id: str) -> dict[str, Any]:
    """Run ``run_id`` (or a unique prefix of it) with every task attempt, ``duration`` (its
    own) and ``in_flight`` (its start to its end)."""
    run = store.get_run(full_id(store, run_id, "run"))
    if run is None:  # deleted between the two reads
        raise NotFound(f"no run {run_id}", field="run_id")
    run["in_flight"], run["duration"] = run["duration"], own_duration(run)
    return run


def step_outputs(run: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """key -> (step, value) for every key a succeeded step wrote (the latest attempt wins)."""
    found: dict[str, tuple[str, Any]] = {}
    for t in run["tasks"]:
        if t["status"] == Status.SUCCEEDED and isinstance(t.get("outputs"), dict):
            for k, v in t["outputs"].items():
                found[k] = (t["step"], v)
    return found


def output_value(run: dict[str, Any], key: str) -> Any:
    """One value of ``run``: a flow output, else what a step wrote under ``key``."""
    outputs = run["outputs"] or {}
    if key in outputs:
        return outputs[key]
    written = step_outputs(run)
    if key not in written:
        known = sorted({*outputs, *written})
        raise NotFound(f"run {run['id']} has no output {key!r} (it has: {', '.join(known) or 'none'})",
                       field="output")
    return written[key][1]
