"""The ``docpipe`` command line. Business logic lives in the engine, planner and store.

Exit status: 0 all documents succeeded; 1 some document failed; 2 the flow or
the command line is invalid (nothing was run).
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from docpipe import __version__
from docpipe.blocks import type_name
from docpipe.errors import DocpipeError, FlowError
from docpipe.flow import FLOW_SCHEMA
from docpipe.plugins import Registry

err = Console(stderr=True)
out = Console()


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
    """Files, folders (every file inside, recursively, hidden ones skipped) and globs."""
    found: list[str] = []
    for spec in inputs:
        p = Path(spec)
        if p.is_dir():
            found += sorted(str(f) for f in p.rglob("*")
                            if f.is_file() and not any(part.startswith(".") for part in
                                                       f.relative_to(p).parts))
        elif p.exists():
            found.append(str(p))
        elif glob.has_magic(spec):
            matches = sorted(m for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not matches:
                raise click.BadParameter(f"no file matches {spec!r}", param_hint="INPUT")
            found += matches
        else:
            raise click.BadParameter(f"{spec} does not exist", param_hint="INPUT")
    seen: set[str] = set()
    return [f for f in found if not (f in seen or seen.add(f))]  # type: ignore[func-returns-value]


def _warn_broken(reg: Registry) -> None:
    for b in reg.broken:
        err.print(f"[yellow]warning:[/] plugin '{b.plugin}' is broken and was skipped: {b.error}",
                  highlight=False)


def _print_flow_error(exc: FlowError) -> None:
    err.print(f"[red]error:[/] {exc.args[0].splitlines()[0]}", highlight=False)
    for issue in exc.issues:
        err.print(f"  - {issue}", highlight=False, markup=False)


plugin_option = click.option("--plugin", "plugins", multiple=True, metavar="PATH",
                             help="Load a plugin module or .py file (repeatable).")
param_option = click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
                            help="Override a flow param (value parsed as JSON when it can be).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="docpipe")
def main() -> None:
    """docpipe: run document-processing flows made of plugin blocks."""


@main.command()
@click.argument("flow", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Write results (.csv or .jsonl).")
@param_option
@click.option("--workers", "-w", type=click.IntRange(min=1), help="Workers per pool (default: cores).")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=256, show_default=True,
              help="Documents in flight at once.")
@click.option("--db", envvar="DOCPIPE_DB", help="Store URL (default sqlite:///.docpipe/docpipe.db).")
@plugin_option
@click.option("--verbose", "-v", is_flag=True, help="Print tracebacks of failures.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def run(flow: str, inputs: tuple[str, ...], out: str | None, params: tuple[str, ...],
        workers: int | None, max_in_flight: int, db: str | None, plugins: tuple[str, ...],
        verbose: bool, quiet: bool) -> None:
    """Run FLOW over INPUT files, folders or globs."""
    from docpipe.engine import Engine
    from docpipe.outputs import write_results
    from docpipe.planner import plan_file
    from docpipe.store import Store

    reg = _registry(plugins)
    _warn_broken(reg)
    try:
        plan = plan_file(flow, reg, _params(params))
    except FlowError as exc:
        _print_flow_error(exc)
        sys.exit(2)
    docs = expand_inputs(inputs)
    if out and Path(out).suffix.lower() not in (".csv", ".jsonl"):
        raise click.BadParameter("use a .csv or .jsonl file name", param_hint="--out")
    store = Store(db)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("[red]{task.fields[failed]} failed"),
                        TextColumn("{task.fields[rate]} docs/s"), TimeElapsedColumn(),
                        console=err, disable=quiet, transient=False)
    task = progress.add_task(plan.name, total=len(docs), failed=0, rate="-")
    failed = 0

    def on_document(result: Any) -> None:
        nonlocal failed
        failed += result.status == "failed"
        elapsed = progress.tasks[0].elapsed or 0.0
        done = progress.tasks[0].completed + 1
        rate = f"{done / elapsed:.1f}" if elapsed > 0 else "-"
        progress.update(task, advance=1, failed=failed, rate=rate)

    try:
        with progress, Engine(store, workers=workers, max_in_flight=max_in_flight,
                              on_document=on_document) as engine:
            result = engine.run(plan, docs, argv=sys.argv)
        if out and result.batch_id is not None:
            rows = store.batch_outputs(result.batch_id)  # from the store: what was recorded
            write_results(out, rows, plan.outputs)
    finally:
        store.close()
    counts = result.counts
    err.print(f"{plan.name} {plan.version}: {counts['succeeded']} succeeded, {counts['failed']} "
              f"failed in {result.seconds:.2f}s (batch {result.batch_id})"
              + (f"; results in {out}" if out else ""), highlight=False)
    for r in result.failed:
        err.print(f"[red]failed[/] {r.document}: \\[{r.error_kind}] step '{r.step}': {r.error}",
                  highlight=False)
        if verbose and r.traceback:
            err.print(r.traceback, markup=False, highlight=False)
    sys.exit(1 if result.failed else 0)


@main.command()
@click.argument("flow", type=click.Path(dir_okay=False))
@param_option
@plugin_option
def validate(flow: str, params: tuple[str, ...], plugins: tuple[str, ...]) -> None:
    """Check FLOW against the schema and the installed blocks without running it."""
    from docpipe.planner import plan_file

    reg = _registry(plugins)
    _warn_broken(reg)
    try:
        plan = plan_file(flow, reg, _params(params))
    except FlowError as exc:
        _print_flow_error(exc)
        sys.exit(2)
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
            "blocks": [{
                "name": i.name, "version": i.cls.manifest.version, "plugin": i.plugin,
                "distribution": i.dist, "distribution_version": i.dist_version,
                "reads": {k: type_name(v) for k, v in i.cls.manifest.reads.items()},
                "writes": {k: type_name(v) for k, v in i.cls.manifest.writes.items()},
                "runtime": i.cls.manifest.runtime, "device": i.cls.manifest.device,
                "batch": i.cls.manifest.batch, "params": i.cls.params_schema(),
                "description": i.cls.manifest.description or (i.cls.__doc__ or "").strip(),
            } for i in infos],
            "broken": [{"plugin": b.plugin, "distribution": b.dist, "error": b.error}
                       for b in reg.broken],
        }, indent=2))
        return
    table = Table(title="docpipe blocks", show_lines=False)
    for col in ("block", "version", "distribution", "reads", "writes", "runtime"):
        table.add_column(col, overflow="fold")
    for i in infos:
        m = i.cls.manifest
        table.add_row(i.name, m.version, i.origin,
                      ", ".join(f"{k}: {type_name(v)}" for k, v in m.reads.items()),
                      ", ".join(f"{k}: {type_name(v)}" for k, v in m.writes.items()),
                      f"{m.runtime}/{m.device}" + (f" x{m.batch}" if m.batch > 1 else ""))
    out.print(table)
    for b in reg.broken:
        out.print(f"[red]broken[/] plugin '{b.plugin}'"
                  + (f" ({b.dist})" if b.dist else "") + f": {b.error}", highlight=False)


@main.group()
def runs() -> None:
    """Inspect recorded flow runs."""


@runs.command("list")
@click.option("--status", type=click.Choice(["running", "succeeded", "failed"]))
@click.option("--flow")
@click.option("--batch")
@click.option("--limit", default=50, show_default=True)
@click.option("--db", envvar="DOCPIPE_DB")
def runs_list(status: str | None, flow: str | None, batch: str | None, limit: int,
              db: str | None) -> None:
    """List flow runs, newest first."""
    from docpipe.store import Store

    store = Store(db)
    try:
        rows = store.list_runs(status=status, flow=flow, batch_id=batch, limit=limit)
    finally:
        store.close()
    table = Table()
    for col in ("run", "flow", "document", "status", "error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["id"], f"{r['flow']} {r['flow_version']}", r["document"], r["status"],
                      f"[{r['error_kind']}] {r['error']}" if r["error"] else "")
    out.print(table)


@runs.command("show")
@click.argument("run_id")
@click.option("--db", envvar="DOCPIPE_DB")
def runs_show(run_id: str, db: str | None) -> None:
    """Show one flow run with every task."""
    from docpipe.store import Store

    store = Store(db)
    try:
        run_ = store.get_run(run_id)
    finally:
        store.close()
    if run_ is None:
        err.print(f"no run {run_id}")
        sys.exit(2)
    out.print(f"run {run_['id']}  {run_['document']}  {run_['status']}", highlight=False)
    table = Table()
    for col in ("step", "block", "status", "attempt", "worker", "ms", "error"):
        table.add_column(col, overflow="fold")
    for t in run_["tasks"]:
        ms = f"{(t['finished_at'] - t['started_at']) * 1000:.1f}" if t["finished_at"] else ""
        table.add_row(t["step"], t["block"], t["status"], str(t["attempt"]), t["worker"] or "",
                      ms, t["error"] or "")
    out.print(table)
    for t in run_["tasks"]:
        if t["traceback"]:
            out.print(f"traceback of step {t['step']}:", highlight=False)
            out.print(t["traceback"], markup=False, highlight=False)


def entrypoint() -> None:
    try:
        main()
    except DocpipeError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    entrypoint()
