"""``docpipe runs …`` and ``docpipe flows …``: the recorded history, read from the store."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime
from typing import Any, Literal

import click
from rich.table import Table
from rich.text import Text

from docpipe.cli_options import console, with_run_options
from docpipe.status import Status

out = console()
err = console(stderr=True)
db_option = click.option("--db", envvar="DOCPIPE_DB", help="Store URL.")


def parse_since(text: str | None) -> float | None:
    """``30m``, ``2h``, ``7d`` (ago) or an ISO 8601 date/time -> epoch seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip())
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return time.time() - seconds
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise click.BadParameter(f"{text!r}: use 30m, 2h, 7d or an ISO date like 2026-11-25T08:00",
                                 param_hint="--since") from None


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _store(db: str | None) -> Any:
    from docpipe.store import Store

    return Store(db)


def full_id(store: Any, given: str, what: Literal["run", "batch"], hint: str) -> str:
    """The run or batch id that starts with ``given`` (a unique prefix will do, as in git);
    a usage error naming ``hint`` when none or several do."""
    import sqlalchemy as sa

    from docpipe.store.schema import batches, flow_runs

    table = flow_runs if what == "run" else batches
    prefix = given.strip().lower()
    query = sa.select(table.c.id).where(table.c.id.startswith(prefix, autoescape=True)).limit(3)
    with store.engine.connect() as conn:
        found = [] if not prefix else list(conn.execute(query).scalars())
    if given in found:
        return given
    if len(found) == 1:
        return str(found[0])
    store.close()
    if not found:
        raise click.BadParameter(f"no {what} {given} in {store!r}", param_hint=hint)
    shown = ", ".join(found[:2]) + (", ..." if len(found) > 2 else "")
    raise click.BadParameter(f"{given!r} is the start of several {what} ids ({shown}): give more "
                             "of it", param_hint=hint)


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


@click.group()
def runs() -> None:
    """Inspect, retry and resume recorded runs."""


@runs.command("list")
@click.option("--status", type=click.Choice([s.value for s in (Status.RUNNING, Status.SUCCEEDED, Status.FAILED)]))
@click.option("--flow", help="Flow name.")
@click.option("--batch", help="Batch id.")
@click.option("--correlation-id")
@click.option("--since", help="30m, 2h, 7d or an ISO date.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@db_option
def runs_list(status: str | None, flow: str | None, batch: str | None, correlation_id: str | None,
              since: str | None, limit: int, as_json: bool, db: str | None) -> None:
    """List flow runs (one per document), newest first."""
    with _store(db) as store:
        filters = {"status": status, "flow": flow, "correlation_id": correlation_id,
                   "batch_id": full_id(store, batch, "batch", "--batch") if batch else None,
                   "since": parse_since(since)}
        rows = store.list_runs(**filters, limit=limit)
        counts = store.count_runs(**{k: v for k, v in filters.items() if k != "status"})
        for r in rows:  # each document's own time, not its batch's (see own_duration)
            full = store.get_run(r["id"], resolve_blobs=False)
            r["in_flight"], r["duration"] = r["duration"], own_duration(full or r)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    out.print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no runs",
              highlight=False)
    table = Table()
    for col in ("run", "started", "flow", "document", "status", "s", "error"):
        table.add_column(col, overflow="fold", no_wrap=col == "run")
    for r in rows:
        duration = f"{r['duration']:.2f}" if r.get("duration") is not None else ""
        table.add_row(r["id"], _when(r["started_at"]), f"{r['flow']} {r['flow_version']}",
                      r["document"], r["status"], duration,
                      Text(_failure(r)))
    out.print(table)


def _failure(run: dict[str, Any]) -> str:
    """``[kind] step 'ocr[2]': message`` for a failed run, else empty."""
    if not run["error"]:
        return ""
    step = f" step '{run['failed_step']}':" if run.get("failed_step") else ""
    return f"[{run['error_kind']}]{step} {run['error']}"


#: characters of an output value `runs show` prints (``--output KEY`` prints all of it)
SHOWN = 200


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _clipped(value: Any) -> str:
    text = " ".join(_value_text(value).split())
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}… ({len(text):,} characters)"


def _step_outputs(run: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """key -> (step, value) for every key a succeeded step wrote (the latest attempt wins)."""
    found: dict[str, tuple[str, Any]] = {}
    for t in run["tasks"]:
        if t["status"] == Status.SUCCEEDED and isinstance(t.get("outputs"), dict):
            for k, v in t["outputs"].items():
                found[k] = (t["step"], v)
    return found


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True,
              help="The run, its outputs and every task attempt (with what it wrote) as JSON.")
@click.option("--output", "key", metavar="KEY",
              help="Print one value in full: a flow output or a key a step wrote "
                   "(page_texts: the text of every page).")
@db_option
def runs_show(run_id: str, as_json: bool, key: str | None, db: str | None) -> None:
    """One flow run: its outputs, every task attempt (status, worker, timings, errors) and
    tracebacks. RUN_ID may be a unique prefix of the id."""
    with _store(db) as store:
        run = store.get_run(full_id(store, run_id, "run", "RUN_ID"))
    if run is None:
        err.print(f"no run {run_id}")
        sys.exit(2)
    run["in_flight"], run["duration"] = run["duration"], own_duration(run)
    written = _step_outputs(run)
    if key is not None:
        outputs = run["outputs"] or {}
        if key not in outputs and key not in written:
            known = sorted({*outputs, *written})
            raise click.BadParameter(f"run {run['id']} has no output {key!r} (it has: "
                                     f"{', '.join(known) or 'none'})", param_hint="--output")
        click.echo(_value_text(outputs[key] if key in outputs else written[key][1]))
        return
    if as_json:
        click.echo(json.dumps(run, indent=2, ensure_ascii=False, default=str))
        return
    took = f"  {run['duration']:.2f}s" if run["duration"] is not None else ""
    out.print(f"run {run['id']}  {run['document']}  {run['status']}{took}  batch {run['batch_id']}"
              + (f"  correlation {run['correlation_id']}" if run.get("correlation_id") else ""),
              highlight=False)
    table = Table()
    for col in ("step", "block", "status", "attempt", "worker", "start", "ms", "error"):
        table.add_column(col, overflow="fold")
    for t in run["tasks"]:
        ms = f"{t['duration'] * 1000:.1f}" if t.get("duration") is not None else ""
        table.add_row(t["step"], t["block"] or "", t["status"], str(t["attempt"]),
                      t["worker"] or "", _when(t["started_at"]), ms, t["error"] or "")
    out.print(table)
    if run["outputs"]:
        out.print("outputs:", highlight=False)
        for k, v in run["outputs"].items():
            out.print(f"  {k}: {_clipped(v)}", markup=False, highlight=False)
    others = {k: sv for k, sv in written.items() if k not in (run["outputs"] or {})}
    if others:
        out.print("written by steps:", highlight=False)
        for k, (step, v) in others.items():
            out.print(f"  {k} ({step}): {_clipped(v)}", markup=False, highlight=False)
    if run["outputs"] or others:
        out.print("(--output KEY prints one value in full)", highlight=False, markup=False)
    for t in run["tasks"]:
        if t["traceback"]:
            out.print(f"traceback of step {t['step']} (attempt {t['attempt']}):", highlight=False)
            out.print(t["traceback"], markup=False, highlight=False)


@runs.command("batches")
@click.option("--limit", default=20, show_default=True)
@db_option
def runs_batches(limit: int, db: str | None) -> None:
    """List batches (one per `docpipe run`), newest first."""
    with _store(db) as store:
        rows = store.list_batches(limit=limit)
    table = Table()
    for col in ("batch", "started", "flow", "status", "inputs", "counts"):
        table.add_column(col, overflow="fold", no_wrap=col == "batch")
    for b in rows:
        counts = ", ".join(f"{k} {v}" for k, v in (b.get("counts") or {}).items())
        table.add_row(b["id"], _when(b["started_at"]), f"{b['flow']} {b['flow_version']}",
                      b["status"], str(b["n_inputs"]), counts)
    out.print(table)


@runs.command("retry")
@click.argument("batch_id")
@click.option("--run", "run_ids", multiple=True, metavar="RUN_ID",
              help="Retry only this failed run of the batch (repeatable); default: every failed one.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE")
@with_run_options
def runs_retry(batch_id: str, run_ids: tuple[str, ...], params: tuple[str, ...], out: str | None,
               workers: int | None, max_in_flight: int, db: str | None, plugins: tuple[str, ...],
               verbose: bool, quiet: bool, summary: bool) -> None:
    """Rerun the failed documents of a batch (from their last succeeded step), in the same
    batch: each document keeps one run and one row in the results. With --run, only those
    runs; the batch's other failed documents keep their failure. Takes the options of
    `docpipe run` (--executor ray too)."""
    from docpipe.cli import execute, plan_for_batch

    store = _store(db)
    batch_id = full_id(store, batch_id, "batch", "BATCH_ID")
    only: set[str] | None = None
    if run_ids:
        only = set()
        for run_id in run_ids:
            run = store.get_run(full_id(store, run_id, "run", "--run"), resolve_blobs=False)
            if run is None or run["batch_id"] != batch_id:
                store.close()
                raise click.BadParameter(f"{run_id} is not a run of batch {batch_id}", param_hint="--run")
            if run["status"] != Status.FAILED:
                store.close()
                raise click.BadParameter(f"run {run_id} is {run['status']}, not failed", param_hint="--run")
            only.add(run["document"])
    plan = plan_for_batch(store, batch_id, params, plugins)
    execute(plan, store, resume=batch_id, retry_failed=True, retry_only=only, out=out, workers=workers,
            max_in_flight=max_in_flight, verbose=verbose, quiet=quiet, summary=summary)


@click.group()
def flows() -> None:
    """Flow definitions as recorded: every version by name, version and content hash."""


@flows.command("list")
@db_option
def flows_list(db: str | None) -> None:
    """Every recorded flow version."""
    with _store(db) as store:
        rows = store.list_flows()
    table = Table()
    for col in ("flow", "version", "content hash", "recorded", "runs"):
        table.add_column(col)
    for f in rows:
        table.add_row(f["name"], f["version"], f["content_hash"][:12], _when(f["created_at"]),
                      str(f.get("n_runs", "")))
    out.print(table)


@flows.command("show")
@click.argument("name")
@click.option("--version")
@click.option("--hash", "content_hash")
@db_option
def flows_show(name: str, version: str | None, content_hash: str | None, db: str | None) -> None:
    """The exact JSON of a recorded flow version (the latest when no version is given)."""
    with _store(db) as store:
        flow = store.get_flow(name, version=version, content_hash=content_hash)
    if flow is None:
        err.print(f"no recorded flow {name}" + (f" version {version}" if version else ""))
        sys.exit(2)
    click.echo(json.dumps(flow["definition"], indent=2, ensure_ascii=False))


@flows.command("push")
@click.argument("flow_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--plugin", "plugins", multiple=True, metavar="PATH")
@db_option
def flows_push(flow_file: str, plugins: tuple[str, ...], db: str | None) -> None:
    """Validate FLOW_FILE and record it as a version without running it."""
    from docpipe.cli import plan_or_exit
    from docpipe.flow import redact_definition

    plan = plan_or_exit(flow_file, plugins, warn=False)
    with _store(db) as store:
        store.put_flow(plan.name, plan.version, plan.content_hash, redact_definition(plan.definition))
    out.print(f"recorded {plan.name} {plan.version} ({plan.content_hash[:12]})", highlight=False)


@click.command()
@db_option
def metrics(db: str | None) -> None:
    """Print Prometheus metrics computed from the run records (text exposition format)."""
    from docpipe.metrics import exposition

    with _store(db) as store:
        click.echo(exposition(store).decode(), nl=False)
