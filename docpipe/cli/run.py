"""``docpipe run`` and ``docpipe resume``: a batch with a progress bar, its results file and
its summary; :func:`execute` is shared with ``runs retry``.

Exit status: 0 all documents succeeded; 1 some document failed; 2 the flow or the command
line is invalid (nothing was run); 3 the inputs hold no file (an empty folder: nothing was
run); 4 no document failed but some wait for a person's review (docs/review.md).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from docpipe import service
from docpipe.cli.options import (
    RunArgs,
    closed_on_error,
    err,
    flow_errors,
    load_registry,
    out,
    param_option,
    parse_params,
    service_errors,
    warn_skipped,
    with_run_options,
)
from docpipe.inputs import InputError
from docpipe.service.plans import ParamsDiffer, check_resume_params, pin_subflows, pinned_changes
from docpipe.status import Status

if TYPE_CHECKING:
    from docpipe.engine import BatchResult, DocResult
    from docpipe.planner import Plan
    from docpipe.store import Store

#: exit status of `docpipe run` when the inputs hold no file
NO_INPUTS = 3
#: exit status of a batch none of whose documents failed but some of whose wait for a review
WAITING = 4


def exit_status(result: BatchResult) -> int:
    """0 every document succeeded; 1 some failed; else 4 when some wait for a review."""
    return 1 if result.failed else WAITING if result.waiting else 0


def print_outcome(result: BatchResult, title: str, results_file: str | None, verbose: bool) -> None:
    """The batch's one-line summary (``title``: the flow's name and version; the documents
    waiting for a review counted), then one line per failed document."""
    counts = result.counts
    waiting = counts.get(Status.WAITING, 0)
    err.print(f"{title}: {counts[Status.SUCCEEDED]} succeeded, {counts[Status.FAILED]} "
              f"failed" + (f", {waiting} waiting for review" if waiting else "")
              + f" in {result.seconds:.2f}s (batch {result.batch_id})"
              + (f"; results in {results_file}" if results_file else ""), highlight=False)
    for r in result.failed:
        err.print(f"[red]failed[/] {escape(r.document)}: \\[{r.error_kind}] step '{escape(r.step or '')}': "
                  f"{escape(r.error or '')}",
                  highlight=False)
        if verbose and r.traceback:
            err.print(r.traceback, markup=False, highlight=False)
    if waiting:
        err.print(f"{waiting} document{'s wait' if waiting > 1 else ' waits'} for review: `docpipe review list`; "
                  "answered ones continue with `docpipe review continue`", highlight=False)


def plan_or_exit(flow: str, plugins: tuple[str, ...], params: tuple[str, ...] = (), *,
                 warn: bool = True) -> Plan:
    """The plan of the flow file ``flow`` with the installed blocks (+ ``plugins``); an invalid
    flow prints every issue and exits 2."""
    registry = load_registry(plugins, warn=warn)
    with flow_errors():
        return service.plan_flow(flow, registry, parse_params(params))


def batch_or_exit(store: Store, batch_id: str, args: RunArgs, params: tuple[str, ...], *,
                  retry_failed: bool = False, only: set[str] | None = None) -> service.Batch:
    """Recorded batch ``batch_id`` to resume or retry, with the plan it started with; secrets
    that were masked in the record must be given again with ``-p``."""
    given = parse_params(params)
    registry = load_registry(args.plugins)
    with flow_errors(), service_errors(batch_id="BATCH_ID"):
        try:
            return service.continue_batch(store, batch_id, registry, given, retry_failed=retry_failed, only=only)
        except service.SecretsNeeded as exc:
            raise click.UsageError("these params were secret and not recorded; give them again: "
                                   + " ".join(f"-p {k}=..." for k in exc.names)) from None


def execute(store: Store, batch: service.Batch, args: RunArgs,
            then: Callable[[Store], None] | None = None) -> NoReturn:
    """Run (or resume) ``batch`` with a progress bar, write the results file, print the
    summary and exit with the batch's status. Closes ``store``; ``then`` reads it first (a
    rerun prints what changed)."""
    try:
        if args.options.out:
            with service_errors(out="--out"):
                service.check_out(args.options.out)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("[red]{task.fields[failed]} failed"),
                            TextColumn("{task.fields[rate]} docs/s"), TimeElapsedColumn(),
                            console=err, disable=args.quiet, transient=False)
        task = progress.add_task(batch.plan.name, total=batch.size(store), failed=0, rate="-")
        failed = 0

        def on_document(result: DocResult) -> None:
            nonlocal failed
            failed += result.status == Status.FAILED
            elapsed = progress.tasks[0].elapsed or 0.0
            done = progress.tasks[0].completed + 1
            rate = f"{done / elapsed:.1f}" if elapsed > 0 else "-"
            progress.update(task, advance=1, failed=failed, rate=rate)

        with progress, service_errors(out="--out"):
            outcome = service.run_batch(store, batch, args.options, on_document)
        result = outcome.result
        if outcome.out_error is not None:
            err.print(f"[red]error:[/] cannot write {escape(args.options.out or '')}: {escape(outcome.out_error)}; "
                      f"the results are recorded: `docpipe resume {result.batch_id} --out FILE` "
                      "writes them", highlight=False)
        if args.summary:
            _print_summary(outcome.rows, batch.plan.outputs)
        if then is not None:
            then(store)
    finally:
        store.close()
    print_outcome(result, f"{batch.plan.name} {batch.plan.version}", outcome.out, args.verbose)
    sys.exit(exit_status(result))


def _print_summary(rows: list[dict[str, Any]], outputs: list[str]) -> None:
    """One line per document: its status and its scalar outputs as ``key=value``."""
    table = Table(title="documents", expand=out.is_terminal)
    table.add_column("document", overflow="fold", ratio=1)
    table.add_column("status", overflow="fold", ratio=1)
    table.add_column("outputs", overflow="fold", ratio=3)
    for row in rows:
        values = row.get("outputs") or {}
        shown = []
        for key in outputs:
            value = values.get(key)
            if isinstance(value, dict | list):
                value = len(value) if value else None
            if value not in (None, ""):
                shown.append(f"{key}={value}")
        status = row["status"]
        if row["error"]:
            step = f" step '{row['failed_step']}':" if row.get("failed_step") else ""
            status += f" [{row['error_kind']}]{step} {row['error']}"
        table.add_row(Text(Path(row["document"]).name), Text(status), Text("  ".join(shown)))
    out.print(table)


@click.command()
@click.argument("flow", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@param_option()
@click.option("--correlation-id", help="Tag the batch and its runs (searchable in `runs list`).")
@click.option("--correlation-id-from", type=click.Choice(["name", "sidecar"]),
              help="Tag each run with its file's stem, or the correlation_id of its FILE.meta.json.")
@click.option("--resume", "resume_", is_flag=True,
              help="Continue the last batch of this flow over these inputs, if there is one.")
@click.option("--reuse", is_flag=True,
              help="Reuse the recorded outputs of earlier tasks with the same block, model, params "
                   "and inputs instead of running them (as a flow's \"cache\": true; a step's "
                   "\"cache\": false still runs). See docs/provenance.md.")
@with_run_options
def run(flow: str, inputs: tuple[str, ...], params: tuple[str, ...], correlation_id: str | None,
        correlation_id_from: str | None, resume_: bool, reuse: bool, args: RunArgs) -> None:
    """Run FLOW over INPUT files, folders or globs.

    \b
    Exit status: 0 every document succeeded; 1 some document failed;
    2 the flow or the command line is invalid; 3 no input file (an empty
    folder); 4 none failed but some wait for review. Nothing is run on 2 or 3.
    """
    from docpipe.store import Store

    if correlation_id and correlation_id_from:
        raise click.UsageError("give --correlation-id or --correlation-id-from, not both")
    plan = plan_or_exit(flow, args.plugins, params)
    if reuse:
        plan.cache = True
    try:
        docs = service.find_documents(inputs, warn_skipped)
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="INPUT") from None
    tagged = _correlations(docs, correlation_id_from) if correlation_id_from else None
    if tagged is not None:
        docs = [d for d, _ in tagged]
    if not docs:
        err.print(f"[yellow]warning:[/] no input file in {escape(' '.join(inputs))} (hidden files "
                  f"are skipped): nothing to run", highlight=False)
        sys.exit(NO_INPUTS)
    store = Store(args.db)
    previous = service.previous_batch(store, plan, docs) if resume_ else None
    if resume_:
        err.print(f"resuming batch {previous}" if previous else "nothing to resume: starting a new batch",
                  highlight=False)
    if previous:
        with closed_on_error(store):
            batch = pinned_or_exit(store, previous, args, params, plan)
    else:
        pin_subflows(store, plan)
        batch = service.Batch(plan, tagged or docs, correlation_id=correlation_id, argv=sys.argv)
    execute(store, batch, args)


def _correlations(docs: list[str], how: str) -> list[tuple[str, str | None]]:
    """Each document with its correlation id (``--correlation-id-from``); with ``sidecar`` the
    sidecar files themselves are not documents. A bad sidecar is named and nothing is run."""
    from docpipe.service.intake import SIDECAR, BadSidecar, correlation_for

    tagged: list[tuple[str, str | None]] = []
    bad: list[str] = []
    for doc in docs:
        if how == "sidecar" and doc.endswith(SIDECAR):
            continue
        try:
            tagged.append((doc, correlation_for(doc, how)))
        except BadSidecar as exc:
            bad.append(str(exc))
    for problem in bad:
        err.print(f"[red]error:[/] {escape(problem)}", highlight=False)
    if bad:
        sys.exit(2)
    return tagged


@click.command()
@click.argument("batch_id")
@param_option()
@with_run_options
def resume(batch_id: str, params: tuple[str, ...], args: RunArgs) -> None:
    """Finish an interrupted batch: finished documents are kept, steps that succeeded are not
    run again, runs that were in flight continue, documents never started are started; runs
    waiting for a review continue once it is answered (unanswered ones keep waiting)."""
    from docpipe.store import Store

    store = Store(args.db)
    with closed_on_error(store):
        with service_errors(batch_id="BATCH_ID"):
            batch_id = service.full_id(store, batch_id, "batch")  # a unique prefix will do
        batch = pinned_or_exit(store, batch_id, args, params)
    execute(store, batch, args)


def pinned_or_exit(store: Store, batch_id: str, args: RunArgs, params: tuple[str, ...],
                   plan: Plan | None = None) -> service.Batch:
    """Recorded batch ``batch_id`` to resume on the definition, subflows and params it started
    with (versions pinned): ``-p`` params that differ from the recorded ones exit 2 with each
    difference shown (secret ones are exempt); a flow or subflow changed since (``plan``: the
    flow file as it is now) is said on stderr, never followed."""
    try:
        check_resume_params(store, batch_id, parse_params(params))
    except ParamsDiffer as exc:
        err.print(f"[red]error:[/] batch {batch_id} started with other params, and a resume runs on the params "
                  "it started with (`docpipe runs rerun RUN_ID --from STEP -p ...` tries others):",
                  highlight=False)
        for line in exc.differences:
            err.print(f"  {escape(line)}", highlight=False)
        sys.exit(2)
    batch = batch_or_exit(store, batch_id, args, params)
    for note in pinned_changes(store, batch_id, plan):
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    return batch
