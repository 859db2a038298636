"""``docpipe models list``: the models docpipe can find, their task, size and origin."""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape

from docpipe.cli.options import err, out, plugin_option
from docpipe.models import human_size, scan
from docpipe.plugins import registry


@click.group()
def models() -> None:
    """Models the installed blocks use, and model folders you point at."""


@models.command("list")
@click.option("--path", "paths", multiple=True, type=click.Path(file_okay=False),
              help="Also describe the model folders in (or at) this folder. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@plugin_option()
def list_models(paths: tuple[str, ...], as_json: bool, plugins: tuple[str, ...]) -> None:
    """List the models the installed plugins use (default models, models shipped in pip
    packages, folders under DOCPIPE_MODELS) and those under --path. Nothing is loaded or
    downloaded; a default model that is missing is listed with how to get it."""
    reg = registry(plugins)
    found, broken = reg.models()
    seen = {m.path for m in found if m.path is not None}
    for p in paths:
        extra = [m for m in scan(p, source=f"--path {p}") if m.path not in seen]
        if not extra:
            err.print(f"warning: no model folder (config.json or meta.json) in {p}", highlight=False,
                      markup=False)
        found += extra
        seen.update(m.path for m in extra if m.path is not None)
    if as_json:
        json.dump({"models": [m.as_dict() for m in found],
                   "broken": [{"plugin": b.plugin, "error": b.error} for b in broken]},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for m in found:
        used = ", ".join(m.used_by) or "no block by default"
        out.print(f"[bold]{escape(m.name)}[/]  {escape(m.task)}  {human_size(m.size)}  "
                  f"[dim]used by[/] {escape(used)}",
                  highlight=False, soft_wrap=True)
        out.print(f"  {m.source}", highlight=False, soft_wrap=True, markup=False)
        if m.available:
            out.print(f"  {m.path}", highlight=False, soft_wrap=True, markup=False)
            reviews = m.details.get("reviews")
            if reviews:
                out.print(f"  trained with reviews: {reviews['path']} ({reviews['used']} of "
                          f"{reviews['count']} examples, sha256 {str(reviews['sha256'])[:12]})",
                          highlight=False, soft_wrap=True, markup=False)
        else:
            out.print(f"  [yellow]missing[/]: {escape(m.note)}", highlight=False, soft_wrap=True)
    for b in broken:
        out.print(f"[red]broken[/] plugin '{escape(b.plugin)}': {escape(b.error)}", highlight=False,
                  soft_wrap=True)
