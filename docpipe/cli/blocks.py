"""``docpipe blocks``: every block the installed plugins (and ``--plugin`` paths) provide,
and the plugins that failed to load."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from docpipe.blocks import type_name
from docpipe.cli.options import out, plugin_option
from docpipe.plugins import Registry


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output with params schemas.")
@plugin_option()
def blocks(as_json: bool, plugins: tuple[str, ...]) -> None:
    """List every discovered block, and plugins that failed to load."""
    reg = Registry(extra=plugins)
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
