"""``docpipe validate``, ``docpipe schema`` and ``docpipe flows …``: flow files checked
before a run, and flow definitions as recorded."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from docpipe import service
from docpipe.cli.options import (
    HISTORY_DB_HELP,
    db_option,
    err,
    open_store,
    out,
    param_option,
    plugin_option,
    when,
)
from docpipe.cli.run import plan_or_exit
from docpipe.flow import FLOW_SCHEMA


@click.command()
@click.argument("flow", type=click.Path(dir_okay=False))
@param_option()
@plugin_option()
def validate(flow: str, params: tuple[str, ...], plugins: tuple[str, ...]) -> None:
    """Check FLOW against the schema and the installed blocks without running it."""

    plan = plan_or_exit(flow, plugins, params)
    out.print(f"{plan.name} {plan.version} is valid: {len(plan.nodes)} steps, "
              f"outputs {', '.join(plan.outputs) or '(none)'}", highlight=False)


@click.command()
def schema() -> None:
    """Print the JSON Schema of flow definitions."""
    click.echo(json.dumps(FLOW_SCHEMA, indent=2))


@click.group()
def flows() -> None:
    """Flow definitions as recorded: every version by name, version and content hash."""


@flows.command("list")
@db_option(HISTORY_DB_HELP)
def flows_list(db: str | None) -> None:
    """Every recorded flow version."""
    with open_store(db) as store:
        rows = store.list_flows()
    table = Table()
    for col in ("flow", "version", "content hash", "recorded", "runs"):
        table.add_column(col)
    for f in rows:
        table.add_row(f["name"], f["version"], f["content_hash"][:12], when(f["created_at"]),
                      str(f.get("n_runs", "")))
    out.print(table)


@flows.command("show")
@click.argument("name")
@click.option("--version")
@click.option("--hash", "content_hash")
@db_option(HISTORY_DB_HELP)
def flows_show(name: str, version: str | None, content_hash: str | None, db: str | None) -> None:
    """The exact JSON of a recorded flow version (the latest when no version is given)."""
    with open_store(db) as store:
        flow = store.get_flow(name, version=version, content_hash=content_hash)
    if flow is None:
        err.print(f"no recorded flow {name}" + (f" version {version}" if version else ""))
        sys.exit(2)
    click.echo(json.dumps(flow["definition"], indent=2, ensure_ascii=False))


@flows.command("push")
@click.argument("flow_file", type=click.Path(exists=True, dir_okay=False))
@plugin_option(None)
@db_option(HISTORY_DB_HELP)
def flows_push(flow_file: str, plugins: tuple[str, ...], db: str | None) -> None:
    """Validate FLOW_FILE and record it as a version without running it."""
    plan = plan_or_exit(flow_file, plugins, warn=False)
    with open_store(db) as store:
        service.record_flow(store, plan)
    out.print(f"recorded {plan.name} {plan.version} ({plan.content_hash[:12]})", highlight=False)
