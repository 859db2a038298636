"""``docpipe review …``: the runs waiting for a person (docs/review.md): list and show their
tasks, claim and release them, answer them, and continue the answered runs."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from docpipe import service
from docpipe.cli.options import (
    HISTORY_DB_HELP,
    RunArgs,
    db_option,
    err,
    load_registry,
    open_store,
    out,
    service_errors,
    when,
    with_run_options,
)
from docpipe.cli.run import exit_status, print_outcome
from docpipe.status import ReviewStatus

_REVIEWER = click.option("--reviewer", "-r", required=True, envvar="DOCPIPE_REVIEWER",
                         help="Who answers (recorded with the answer; or $DOCPIPE_REVIEWER).")


@click.group()
def review() -> None:
    """Documents waiting for a person: list, show, claim, answer, continue."""


@review.command("list")
@click.option("--status", type=click.Choice([*(s.value for s in ReviewStatus), "all"]),
              default=ReviewStatus.WAITING.value, show_default=True,
              help="Waiting includes claims whose lease expired.")
@click.option("--flow", help="Flow name.")
@click.option("--kind", type=click.Choice(["choose", "edit", "approve"]))
@click.option("--batch", help="Batch id.")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@db_option(HISTORY_DB_HELP)
def review_list(status: str, flow: str | None, kind: str | None, batch: str | None, limit: int,
                as_json: bool, db: str | None) -> None:
    """List review tasks, oldest first."""
    with open_store(db) as store, service_errors(batch_id="--batch"):
        batch_id = service.full_id(store, batch, "batch") if batch else None
        tasks = service.list_tasks(store, status=None if status == "all" else status, flow=flow, kind=kind,
                                   batch_id=batch_id, limit=limit)
    if as_json:
        click.echo(json.dumps(tasks, indent=2, default=str))
        return
    if not tasks:
        out.print(f"no {'' if status == 'all' else status + ' '}review tasks", highlight=False)
        return
    table = Table()
    for col in ("task", "created", "flow", "document", "step", "kind", "proposal", "status"):
        table.add_column(col, overflow="fold", no_wrap=col == "task")
    for t in tasks:
        table.add_row(t["id"], when(t["created_at"]), t["flow"], Text(t["document"]), t["step"], t["kind"],
                      Text(_proposal(t)), Text(_status(t)))
    out.print(table)


@review.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@db_option(HISTORY_DB_HELP)
def review_show(task_id: str, as_json: bool, db: str | None) -> None:
    """One review task: the question, the model's proposal, who holds or answered it."""
    with open_store(db) as store, service_errors(task_id="TASK_ID"):
        task = service.get_task(store, task_id)
    if as_json:
        click.echo(json.dumps(task, indent=2, default=str))
        return
    lines = [
        ("task", task["id"]), ("document", task["document"]), ("flow", task["flow"]),
        ("run", task["flow_run_id"]), ("batch", task["batch_id"]), ("step", task["step"]),
        ("kind", task["kind"]), ("keys", ", ".join(task["keys"])), ("prompt", task["prompt"] or ""),
        ("choices", ", ".join(task["choices"])), ("proposal", json.dumps(task["proposal"], default=str)),
        ("status", _status(task)), ("created", when(task["created_at"])),
    ]
    if task["answer"] is not None:
        lines.append(("answer", json.dumps(task["answer"], default=str)))
    for key, value in lines:
        if value:
            out.print(Text(f"{key:>9}: ") + Text(str(value)))


@review.command("claim")
@click.argument("task_id")
@_REVIEWER
@click.option("--lease", type=click.FloatRange(min=1), default=float(service.DEFAULT_LEASE_S), show_default=True,
              help="Seconds the claim holds the task (claiming again renews it).")
@db_option(HISTORY_DB_HELP)
def review_claim(task_id: str, reviewer: str, lease: float, db: str | None) -> None:
    """Hold a task for a while, so no other reviewer answers it meanwhile."""
    with open_store(db) as store, service_errors(task_id="TASK_ID", reviewer="--reviewer"):
        task = service.claim(store, task_id, reviewer, lease)
    out.print(f"claimed {task['id']} until {when(task['lease_expires_at'])}", highlight=False)


@review.command("release")
@click.argument("task_id")
@_REVIEWER
@db_option(HISTORY_DB_HELP)
def review_release(task_id: str, reviewer: str, db: str | None) -> None:
    """Give back a claim: the task waits for any reviewer again."""
    with open_store(db) as store, service_errors(task_id="TASK_ID", reviewer="--reviewer"):
        task = service.release(store, task_id, reviewer)
    out.print(f"released {task['id']}", highlight=False)


@review.command("answer")
@click.argument("task_id")
@click.argument("value")
@_REVIEWER
@db_option(HISTORY_DB_HELP)
def review_answer(task_id: str, value: str, reviewer: str, db: str | None) -> None:
    """Answer a task: VALUE is one of the choices (choose), the corrected text, or a JSON
    object of key: value (edit), approve or reject (approve). The run continues with
    `docpipe review continue` (a running `docpipe serve` continues it at once)."""
    with open_store(db) as store, service_errors(task_id="TASK_ID", reviewer="--reviewer", answer="VALUE"):
        task, new = service.answer(store, task_id, reviewer, _value(value))
    said = json.dumps(task["answer"], ensure_ascii=False, default=str)
    out.print(f"{'answered' if new else 'already answered'} {task['id']}: {said} by {task['answered_by']}",
              highlight=False)


@review.command("continue")
@click.argument("batch_id", required=False)
@with_run_options
def review_continue(batch_id: str | None, args: RunArgs) -> None:
    """Continue the answered runs: resume every batch that has some (or BATCH_ID), as
    `docpipe resume` does; runs still waiting for an answer keep waiting.

    \b
    Exit status: 0 every document of those batches succeeded; 1 some failed;
    4 none failed but some still wait for review.
    """
    registry = load_registry(args.plugins)
    with open_store(args.db) as store, service_errors(batch_id="BATCH_ID", out="--out"):
        done = service.continue_answered(store, registry, args.options, batch_id)
        titles = {o.result.batch_id: _title(store.batch(o.result.batch_id or "")) for o in done.outcomes}
    for bid, why in done.skipped.items():
        out.print(f"batch {bid} left alone: {why}", highlight=False)
    if not done.outcomes:
        out.print("no answered run waits to continue", highlight=False)
        return
    codes = []
    for outcome in done.outcomes:
        print_outcome(outcome.result, titles[outcome.result.batch_id], outcome.out, args.verbose)
        codes.append(exit_status(outcome.result))
    sys.exit(1 if 1 in codes else max(codes))


@review.command("export")
@click.option("--flow", required=True, help="Flow name (e.g. idp).")
@click.option("--kind", type=click.Choice(["choose", "edit", "approve"]), default="choose", show_default=True)
@click.option("--key", default="doc_class", show_default=True, help="The reviewed key.")
@click.option("--text-key", default="full_text", show_default=True,
              help="The recorded text the model read (hf.classify reads full_text).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default="-",
              help="JSONL file to write (default: standard output).")
@db_option(HISTORY_DB_HELP)
def review_export(flow: str, kind: str, key: str, text_key: str, output: str, db: str | None) -> None:
    """Write the answered reviews as training examples, one JSON line per task: the text
    the model read, its label and score, the human label, reviewer, answered_at, document,
    run and task ids. `models/build_doctype.py --with-reviews FILE` retrains on them
    (docs/review.md). Tasks whose text was not recorded are skipped (said on stderr)."""
    with open_store(db) as store, service_errors(kind="--kind"):
        done = service.export_reviews(store, flow=flow, kind=kind, key=key, text_key=text_key)
    lines = "".join(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in done.examples)
    if output == "-":
        sys.stdout.write(lines)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(lines)
    for s in done.skipped:
        err.print(f"skipped task {s['task']} ({s['document']}): {s['why']}", highlight=False, markup=False)
    err.print(f"exported {len(done.examples)} reviewed example(s) of flow {flow}, {kind} {key}"
              + (f"; skipped {len(done.skipped)} without text" if done.skipped else "")
              + ("" if output == "-" else f" to {output}"), highlight=False, markup=False)


def _title(batch: dict[str, Any] | None) -> str:
    return f"{batch['flow']} {batch['flow_version']}" if batch else "?"


def _value(text: str) -> Any:
    """VALUE as given, or the object it spells in JSON (an edit of several keys)."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


def _proposal(task: dict[str, Any]) -> str:
    proposal = task["proposal"] or {}
    return "  ".join(f"{k}={proposal[k]}" for k in (*task["keys"], *(f"{k}_score" for k in task["keys"]))
                     if k in proposal)


def _status(task: dict[str, Any]) -> str:
    if task["status"] == ReviewStatus.CLAIMED:
        return f"claimed by {task['lease_owner']} until {when(task['lease_expires_at'])}"
    if task["status"] == ReviewStatus.ANSWERED:
        return f"answered by {task['answered_by']} at {when(task['answered_at'])}"
    return str(task["status"])
