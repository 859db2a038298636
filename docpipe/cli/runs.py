"""``docpipe runs …`` and ``docpipe metrics``: the recorded history, through the service's
queries; ``runs retry`` runs a batch again as ``docpipe resume`` does."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from docpipe import service
from docpipe.cli.options import (
    HISTORY_DB_HELP,
    RunArgs,
    closed_on_error,
    db_option,
    err,
    flow_errors,
    load_registry,
    open_store,
    out,
    param_option,
    parse_params,
    service_errors,
    when,
    with_run_options,
)
from docpipe.cli.run import batch_or_exit, execute
from docpipe.service.rerun import MISSING, Change, RunDiff, diff_runs, prepare_rerun, shorten
from docpipe.status import Status


@click.group()
def runs() -> None:
    """Inspect, retry and resume recorded runs."""


@runs.command("list")
@click.option("--status", type=click.Choice([s.value for s in (Status.RUNNING, Status.SUCCEEDED, Status.FAILED,
                                                                Status.WAITING)]))
@click.option("--flow", help="Flow name.")
@click.option("--batch", help="Batch id.")
@click.option("--correlation-id")
@click.option("--since", help="30m, 2h, 7d or an ISO date.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@db_option(HISTORY_DB_HELP)
def runs_list(status: str | None, flow: str | None, batch: str | None, correlation_id: str | None,
              since: str | None, limit: int, as_json: bool, db: str | None) -> None:
    """List flow runs (one per document), newest first."""
    query = service.RunQuery(status=status, flow=flow, batch=batch, correlation_id=correlation_id,
                             since=since, limit=limit)
    with open_store(db) as store, service_errors(batch_id="--batch", since="--since"):
        found = service.list_runs(store, query)
    if as_json:
        click.echo(json.dumps(found.runs, indent=2, default=str))
        return
    out.print("  ".join(f"{k}: {v}" for k, v in sorted(found.counts.items())) or "no runs",
              highlight=False)
    table = Table()
    for col in ("run", "started", "flow", "document", "status", "s", "error"):
        table.add_column(col, overflow="fold", no_wrap=col == "run")
    for r in found.runs:
        duration = f"{r['duration']:.2f}" if r.get("duration") is not None else ""
        table.add_row(r["id"], when(r["started_at"]), f"{r['flow']} {r['flow_version']}",
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


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True,
              help="The run, its outputs and every task attempt (with what it wrote) as JSON.")
@click.option("--output", "key", metavar="KEY",
              help="Print one value in full: a flow output or a key a step wrote "
                   "(page_texts: the text of every page).")
@db_option(HISTORY_DB_HELP)
def runs_show(run_id: str, as_json: bool, key: str | None, db: str | None) -> None:
    """One flow run: its outputs, every task attempt (status, worker, timings, errors) and
    tracebacks. RUN_ID may be a unique prefix of the id."""
    with open_store(db) as store, service_errors(run_id="RUN_ID"):
        run = service.show_run(store, run_id)
    if key is not None:
        with service_errors(output="--output"):
            click.echo(_value_text(service.output_value(run, key)))
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
                      t["worker"] or "", when(t["started_at"]), ms, t["error"] or "")
    out.print(table)
    _print_outputs(run)
    _print_provenance(run)
    for t in run["tasks"]:
        if t["traceback"]:
            out.print(f"traceback of step {t['step']} (attempt {t['attempt']}):", highlight=False)
            out.print(t["traceback"], markup=False, highlight=False)


def _provenance_text(p: dict[str, Any]) -> str:
    """One task's provenance on one line: block and version, distribution, model, hashes
    (shortened), where reused outputs came from (docs/provenance.md)."""
    parts = [f"{p.get('block')} {p.get('version')}"]
    if p.get("dist"):
        parts.append(f"({p['dist']} {p.get('dist_version')})")
    model = p.get("model")
    if model:  # sha256 digests shortened, as the hashes below
        parts.append("model " + re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b", r"\1", " ".join(_value_text(model).split())))
    parts += [f"{k} {str(p[k])[:12]}" for k in ("params", "inputs") if p.get(k)]
    source = p.get("reused_from")
    if isinstance(source, dict):
        parts.append(f"reused from run {source.get('run')} step {source.get('step')}")
    return "  ".join(parts)


def _print_provenance(run: dict[str, Any]) -> None:
    """What produced each step's outputs (its last succeeded attempt; map items left out)."""
    shown = {t["step"]: t["provenance"] for t in run["tasks"]
             if t.get("provenance") and t["status"] == Status.SUCCEEDED and "[" not in t["step"]}
    if not shown:
        return
    out.print("provenance:", highlight=False)
    for step, p in shown.items():
        out.print(f"  {step}: {_provenance_text(p)}", markup=False, highlight=False)


def _print_outputs(run: dict[str, Any]) -> None:
    """The run's flow outputs, then what its steps wrote besides, each value clipped."""
    if run["outputs"]:
        out.print("outputs:", highlight=False)
        for k, v in run["outputs"].items():
            out.print(f"  {k}: {_clipped(v)}", markup=False, highlight=False)
    others = {k: sv for k, sv in service.step_outputs(run).items() if k not in (run["outputs"] or {})}
    if others:
        out.print("written by steps:", highlight=False)
        for k, (step, v) in others.items():
            out.print(f"  {k} ({step}): {_clipped(v)}", markup=False, highlight=False)
    if run["outputs"] or others:
        out.print("(--output KEY prints one value in full)", highlight=False, markup=False)


@runs.command("batches")
@click.option("--limit", default=20, show_default=True)
@db_option(HISTORY_DB_HELP)
def runs_batches(limit: int, db: str | None) -> None:
    """List batches (one per `docpipe run`), newest first."""
    with open_store(db) as store:
        rows = store.list_batches(limit=limit)
    table = Table()
    for col in ("batch", "started", "flow", "status", "inputs", "counts"):
        table.add_column(col, overflow="fold", no_wrap=col == "batch")
    for b in rows:
        counts = ", ".join(f"{k} {v}" for k, v in (b.get("counts") or {}).items())
        table.add_row(b["id"], when(b["started_at"]), f"{b['flow']} {b['flow_version']}",
                      b["status"], str(b["n_inputs"]), counts)
    out.print(table)


@runs.command("retry")
@click.argument("batch_id")
@click.option("--run", "run_ids", multiple=True, metavar="RUN_ID",
              help="Retry only this failed run of the batch (repeatable); default: every failed one.")
@param_option(None)
@with_run_options
def runs_retry(batch_id: str, run_ids: tuple[str, ...], params: tuple[str, ...], args: RunArgs) -> None:
    """Rerun the failed documents of a batch (from their last succeeded step), in the same
    batch: each document keeps one run and one row in the results. With --run, only those
    runs; the batch's other failed documents keep their failure. Takes the options of
    `docpipe run` (--executor ray too)."""
    store = open_store(args.db)
    with closed_on_error(store):
        with service_errors(batch_id="BATCH_ID"):
            batch_id = service.full_id(store, batch_id, "batch")
        only: set[str] | None = None
        if run_ids:
            with service_errors(run_id="--run"):
                only = {service.failed_run(store, service.full_id(store, r, "run"), batch_id)["document"]
                        for r in run_ids}
        batch = batch_or_exit(store, batch_id, args, params, retry_failed=True, only=only)
    execute(store, batch, args)


@runs.command("rerun")
@click.argument("run_id")
@click.option("--from", "step", required=True, metavar="STEP",
              help="The step to run again; every step that depends on it runs again too.")
@param_option(None)
@with_run_options
def runs_rerun(run_id: str, step: str, params: tuple[str, ...], args: RunArgs) -> None:
    """Run RUN_ID again from STEP as a new attempt, keeping the earlier one: a new batch with
    one run (its rerun_of is RUN_ID) that keeps the earlier attempt's outputs of the steps
    before STEP (copied, not run) and runs STEP and its dependents. -p params overlay the
    batch's (recorded with the new batch): how a changed step or model is tried on yesterday's
    documents. Prints the new run id and what changed (as `runs diff`). Exit status as
    `docpipe run`."""
    given = parse_params(params)
    store = open_store(args.db)
    with closed_on_error(store):
        with service_errors(run_id="RUN_ID"):
            run_id = service.full_id(store, run_id, "run")
        registry = load_registry(args.plugins)
        with flow_errors(), service_errors(run_id="RUN_ID", step="--from", params="--param"):
            rerun = prepare_rerun(store, run_id, step, registry, given, argv=sys.argv)
        err.print(f"rerun of {run_id} from step {step} (runs again: {', '.join(rerun.again)}; "
                  f"{rerun.copied} task records kept): run {rerun.run_id}, batch {rerun.batch_id}", highlight=False)
    execute(store, rerun.batch, args, then=lambda s: _print_diff(diff_runs(s, run_id, rerun.run_id)))


@runs.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True, help="The differences as JSON (values shortened).")
@db_option(HISTORY_DB_HELP)
def runs_diff(run_a: str, run_b: str, as_json: bool, db: str | None) -> None:
    """Which outputs changed between two runs or attempts (a run and its rerun, or any two):
    their final outputs, then step by step the steps whose latest record differs and the steps
    only one has. Values are shortened (`runs show --output KEY` prints one in full). Exit
    status 0 whether or not they differ; 2 for an unknown run."""
    with open_store(db) as store, service_errors(run_a="RUN_A", run_b="RUN_B"):
        diff = diff_runs(store, run_a, run_b)
    if as_json:
        click.echo(json.dumps(diff.as_dict(), indent=2, ensure_ascii=False, default=str))
        return
    _print_diff(diff)


def _print_diff(diff: RunDiff) -> None:
    """A, B, then the outputs and steps that differ, one line each."""
    for side, r in (("A", diff.a), ("B", diff.b)):
        again = f"  rerun of {r['rerun_of']}" if r.get("rerun_of") else ""
        out.print(f"{side}: run {r['id']}  {r['flow']} {r['flow_version']}  {r['document']}  {r['status']}  "
                  f"attempt {r['attempt']}{again}", markup=False, highlight=False)
    if diff.same:
        out.print("no difference: the same outputs from every step", highlight=False)
        return
    if diff.a["status"] != diff.b["status"]:
        out.print(f"status: {diff.a['status']} -> {diff.b['status']}", markup=False, highlight=False)
    out.print(f"outputs: {len(diff.outputs)} differ" if diff.outputs else "outputs: the same", highlight=False)
    for c in diff.outputs:
        out.print(f"  {_change(c)}", markup=False, highlight=False)
    out.print(f"steps: {len(diff.steps)} differ" if diff.steps else "steps: the same", highlight=False)
    for s in diff.steps:
        status = s.status_a if s.status_a == s.status_b else f"{s.status_a or '(none)'} -> {s.status_b or '(none)'}"
        out.print(f"  {s.step}: {status}", markup=False, highlight=False)
        for c in s.changes:
            out.print(f"    {_change(c)}", markup=False, highlight=False)


def _change(c: Change) -> str:
    if c.a is MISSING:
        return f"{c.key}: only in B: {shorten(c.b)}"
    if c.b is MISSING:
        return f"{c.key}: only in A: {shorten(c.a)}"
    return f"{c.key}: {shorten(c.a)} -> {shorten(c.b)}"


@click.command()
@db_option(HISTORY_DB_HELP)
def metrics(db: str | None) -> None:
    """Print Prometheus metrics computed from the run records (text exposition format)."""
    from docpipe.metrics import exposition

    with open_store(db) as store:
        click.echo(exposition(store).decode(), nl=False)
