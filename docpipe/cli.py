"""The ``docpipe`` command line. Business logic lives in the engine, planner and store.

Exit status: 0 all documents succeeded; 1 some document failed; 2 the flow or
the command line is invalid (nothing was run); 3 the inputs hold no file (an empty
folder: nothing was run).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from docpipe import __version__
from docpipe.blocks import type_name
from docpipe.cli_options import (
    console,
    executor_from_options,
    param_option,
    plugin_option,
    with_run_options,
)
from docpipe.errors import DocpipeError, FlowError
from docpipe.flow import FLOW_SCHEMA
from docpipe.inputs import absolute
from docpipe.plugins import Registry
from docpipe.status import Status

err = console(stderr=True)
out = console()
#: exit status of `docpipe run` when the inputs hold no file
NO_INPUTS = 3


def _registry(plugins: tuple[str, ...]) -> Registry:
    return Registry(extra=plugins)


def _params(pairs: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--param")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def expand_inputs(inputs: tuple[str, ...]) -> list[str]:
    """:func:`docpipe.inputs.expand_inputs`, its skipped entries as warnings and a spec that
    names nothing as a usage error."""
    from docpipe.inputs import InputError
    from docpipe.inputs import expand_inputs as expand

    def warn(path: str, why: str) -> None:
        err.print(f"[yellow]warning:[/] skipped {escape(path)}: {escape(why)}", highlight=False)

    try:
        return expand(inputs, warn)
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="INPUT") from None


def _warn_broken(reg: Registry) -> None:
    for b in reg.broken:
        err.print(f"[yellow]warning:[/] plugin '{b.plugin}' is broken and was skipped: {b.error}",
                  highlight=False)


def plan_or_exit(flow: str, plugins: tuple[str, ...], params: tuple[str, ...] = (), *,
                 warn: bool = True) -> Any:
    """The plan of the flow file ``flow`` with the installed blocks (+ ``plugins``); an invalid
    flow prints every issue and exits 2."""
    from docpipe.planner import plan_file

    reg = _registry(plugins)
    if warn:
        _warn_broken(reg)
    try:
        return plan_file(flow, reg, _params(params))
    except FlowError as exc:
        _print_flow_error(exc)
        sys.exit(2)


def _print_flow_error(exc: FlowError) -> None:
    err.print(f"[red]error:[/] {exc.args[0].splitlines()[0]}", highlight=False)
    for issue in exc.issues:
        err.print(f"  - {issue}", highlight=False, markup=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="docpipe")
def main() -> None:
    """docpipe: run document-processing flows made of plugin blocks."""


def execute(plan: Any, store: Any, *, docs: list[str] | None = None, resume: str | None = None,
            retry_failed: bool = False, retry_only: Collection[str] | None = None,
            out: str | None, workers: int | None, max_in_flight: int,
            verbose: bool, quiet: bool, summary: bool = False, correlation_id: str | None = None,
            ) -> None:
    """Run (or resume) a batch with a progress bar, write ``out``, print the summary, exit."""
    from docpipe.engine import Engine
    from docpipe.outputs import write_results

    if out and Path(out).suffix.lower() not in (".csv", ".jsonl"):
        raise click.BadParameter("use a .csv or .jsonl file name", param_hint="--out")
    if out:
        _check_writable(out)
    total = len(docs) if docs is not None else len(store.batch_inputs(resume))
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("[red]{task.fields[failed]} failed"),
                        TextColumn("{task.fields[rate]} docs/s"), TimeElapsedColumn(),
                        console=err, disable=quiet, transient=False)
    task = progress.add_task(plan.name, total=total, failed=0, rate="-")
    failed = 0

    def on_document(result: Any) -> None:
        nonlocal failed
        failed += result.status == Status.FAILED
        elapsed = progress.tasks[0].elapsed or 0.0
        done = progress.tasks[0].completed + 1
        rate = f"{done / elapsed:.1f}" if elapsed > 0 else "-"
        progress.update(task, advance=1, failed=failed, rate=rate)

    # DOCPIPE_FAST_START=0: each pool starts when its first input arrives, with --workers
    # workers whatever the batch (as before 0.2; for measuring, or flows that skip most steps)
    fast_start = os.environ.get("DOCPIPE_FAST_START", "1") != "0"
    try:
        executor = executor_from_options()
        with executor or nullcontext(), progress, Engine(
                store, workers=workers, max_in_flight=max_in_flight, on_document=on_document,
                executor=executor, one_batch=fast_start, prestart=fast_start) as engine:
            if resume is not None:
                result = engine.resume(plan, resume, retry_failed=retry_failed, documents=retry_only)
            else:
                result = engine.run(plan, docs or [], argv=sys.argv, correlation_id=correlation_id)
        rows = store.batch_outputs(result.batch_id) if result.batch_id else []  # what was recorded
        if out and result.batch_id is not None:
            try:
                write_results(out, rows, plan.outputs)
            except OSError as exc:  # the folder changed during the run: the records are safe
                err.print(f"[red]error:[/] cannot write {escape(out)}: {escape(exc.strerror or str(exc))}; "
                          f"the results are recorded: `docpipe resume {result.batch_id} --out FILE` "
                          "writes them", highlight=False)
                out = None
        if summary:
            _print_summary(rows, plan.outputs)
    finally:
        store.close()
    counts = result.counts
    err.print(f"{plan.name} {plan.version}: {counts[Status.SUCCEEDED]} succeeded, {counts[Status.FAILED]} "
              f"failed in {result.seconds:.2f}s (batch {result.batch_id})"
              + (f"; results in {out}" if out else ""), highlight=False)
    for r in result.failed:
        err.print(f"[red]failed[/] {escape(r.document)}: \\[{r.error_kind}] step '{escape(r.step or '')}': "
                  f"{escape(r.error or '')}",
                  highlight=False)
        if verbose and r.traceback:
            err.print(r.traceback, markup=False, highlight=False)
    sys.exit(1 if result.failed else 0)


def _check_writable(out: str) -> None:
    """Fail before the first document, not after the last, when ``out`` cannot be written."""
    import tempfile

    folder = Path(out).resolve().parent
    if any(p.exists() and not p.is_dir() for p in (folder, *folder.parents)):
        raise click.BadParameter(f"cannot write {out}: a part of its folder is a file",
                                 param_hint="--out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".docpipe-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
        if Path(out).is_dir():
            raise IsADirectoryError(21, "it is a folder")
    except OSError as exc:
        raise click.BadParameter(f"cannot write {out}: {exc.strerror or exc}",
                                 param_hint="--out") from None


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


def _previous_batch(store: Any, plan: Any, docs: list[str]) -> str | None:
    """The newest batch of this exact flow over these exact inputs (finished or not: a
    finished one has nothing left to run, and its results are written again as they are)."""
    for b in store.list_batches(limit=200):
        if b["flow"] != plan.name:
            continue
        full = store.batch(b["id"])
        if full and full["content_hash"] == plan.content_hash and store.batch_inputs(b["id"]) == docs:
            return str(b["id"])
    return None


@main.command()
@click.argument("flow", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@param_option
@click.option("--correlation-id", help="Tag the batch and its runs (searchable in `runs list`).")
@click.option("--resume", "resume_", is_flag=True,
              help="Continue the last batch of this flow over these inputs, if there is one.")
@with_run_options
def run(flow: str, inputs: tuple[str, ...], params: tuple[str, ...], correlation_id: str | None,
        resume_: bool, out: str | None, workers: int | None, max_in_flight: int, db: str | None,
        plugins: tuple[str, ...], verbose: bool, quiet: bool, summary: bool) -> None:
    """Run FLOW over INPUT files, folders or globs.

    \b
    Exit status: 0 every document succeeded; 1 some document failed;
    2 the flow or the command line is invalid; 3 no input file (an empty
    folder). Nothing is run on 2 or 3.
    """
    from docpipe.store import Store

    plan = plan_or_exit(flow, plugins, params)
    docs = [absolute(d) for d in expand_inputs(inputs)]  # absolute: docpipe.inputs
    if not docs:
        err.print(f"[yellow]warning:[/] no input file in {escape(' '.join(inputs))} (hidden files "
                  f"are skipped): nothing to run", highlight=False)
        sys.exit(NO_INPUTS)
    store = Store(db)
    batch = _previous_batch(store, plan, docs) if resume_ else None
    if resume_:
        err.print(f"resuming batch {batch}" if batch else "nothing to resume: starting a new batch",
                  highlight=False)
    execute(plan, store, docs=None if batch else docs, resume=batch, out=out, workers=workers,
            max_in_flight=max_in_flight, verbose=verbose, quiet=quiet, summary=summary,
            correlation_id=correlation_id)


def plan_for_batch(store: Any, batch_id: str, params: tuple[str, ...],
                   plugins: tuple[str, ...]) -> Any:
    """The plan a batch started with (its recorded definition), with its params; secrets that
    were masked in the record must be given again with ``-p``."""
    from docpipe.planner import build_plan

    batch = store.batch(batch_id)
    if batch is None:
        store.close()
        raise click.BadParameter(f"no batch {batch_id} in {store.url}", param_hint="BATCH_ID")
    given = _params(params)
    recorded = {k: v for k, v in (batch["params"] or {}).items() if k not in given}
    masked = [k for k, v in recorded.items() if v == "***"]
    if masked:
        store.close()
        raise click.UsageError("these params were secret and not recorded; give them again: "
                               + " ".join(f"-p {k}=..." for k in masked))
    reg = _registry(plugins)
    _warn_broken(reg)
    try:
        return build_plan(batch["definition"], reg, params={**recorded, **given})
    except FlowError as exc:
        store.close()
        _print_flow_error(exc)
        sys.exit(2)


@main.command()
@click.argument("batch_id")
@param_option
@with_run_options
def resume(batch_id: str, params: tuple[str, ...], out: str | None, workers: int | None,
           max_in_flight: int, db: str | None, plugins: tuple[str, ...], verbose: bool,
           quiet: bool, summary: bool) -> None:
    """Finish an interrupted batch: finished documents are kept, steps that succeeded are not
    run again, runs that were in flight continue, documents never started are started."""
    from docpipe.cli_history import full_id
    from docpipe.store import Store

    store = Store(db)
    batch_id = full_id(store, batch_id, "batch", "BATCH_ID")  # a unique prefix will do
    plan = plan_for_batch(store, batch_id, params, plugins)
    execute(plan, store, resume=batch_id, out=out, workers=workers, max_in_flight=max_in_flight,
            verbose=verbose, quiet=quiet, summary=summary)


@main.command()
@click.argument("flow", type=click.Path(dir_okay=False))
@param_option
@plugin_option
def validate(flow: str, params: tuple[str, ...], plugins: tuple[str, ...]) -> None:
    """Check FLOW against the schema and the installed blocks without running it."""

    plan = plan_or_exit(flow, plugins, params)
    out.print(f"{plan.name} {plan.version} is valid: {len(plan.nodes)} steps, "
              f"outputs {', '.join(plan.outputs) or '(none)'}", highlight=False)


@main.command()
def schema() -> None:
    """Print the JSON Schema of flow definitions."""
    click.echo(json.dumps(FLOW_SCHEMA, indent=2))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output with params schemas.")
@plugin_option
def blocks(as_json: bool, plugins: tuple[str, ...]) -> None:
    """List every discovered block, and plugins that failed to load."""
    reg = _registry(plugins)
    infos = sorted(reg.blocks.values(), key=lambda i: i.name)
    if as_json:
        click.echo(json.dumps({
            "blocks": [i.describe() for i in infos],
            "broken": [{"plugin": b.plugin, "distribution": b.dist, "error": b.error}
                       for b in reg.broken],
        }, indent=2))
        return
    table = Table(title="docpipe blocks", show_lines=False)
    for col in ("block", "version", "distribution", "reads", "writes", "runtime"):
        table.add_column(col, overflow="fold", no_wrap=col == "block")
    for i in infos:
        m = i.cls.manifest
        table.add_row(i.name, m.version, i.origin,  # Text: 'list[str]' is not rich markup
                      Text(", ".join(f"{k}: {type_name(v)}" for k, v in m.reads.items())),
                      Text(", ".join(f"{k}: {type_name(v)}" for k, v in m.writes.items())),
                      f"{m.runtime}/{m.device}" + (f" x{m.batch}" if m.batch > 1 else ""))
    out.print(table)
    for b in reg.broken:
        out.print(f"[red]broken[/] plugin '{escape(b.plugin)}'"
                  + (f" ({escape(b.dist)})" if b.dist else "") + f": {escape(b.error)}", highlight=False)


from docpipe.cli_history import flows, metrics, runs  # noqa: E402 - registered below
from docpipe.cli_serve import serve  # noqa: E402

main.add_command(runs)
main.add_command(flows)
main.add_command(metrics)
main.add_command(serve)

from docpipe.cli_models import models  # noqa: E402

main.add_command(models)


def entrypoint() -> None:
    try:
        main()
    except DocpipeError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    entrypoint()
