"""Options shared by the commands that run flows (``run``, ``resume``, ``runs retry``) and
the executor they select. A module of its own so that every command module can import it
without importing :mod:`docpipe.cli` (which imports them)."""

from __future__ import annotations

import os
from typing import Any

import click
from rich.console import Console

#: the width of output that is not on a terminal: lines and table rows are never wrapped
UNWRAPPED = 1_000_000


def console(*, stderr: bool = False) -> Console:
    """A console for the CLI. On a terminal it wraps at the terminal's width; elsewhere (a
    pipe, a file, CI logs) rich would wrap at 80 columns ("distributio n"), so lines and
    table rows are kept whole there, unless ``COLUMNS`` gives a width."""
    plain = Console(stderr=stderr)
    if plain.is_terminal or os.environ.get("COLUMNS"):
        return plain
    return Console(stderr=stderr, width=UNWRAPPED)


plugin_option: Any = click.option("--plugin", "plugins", multiple=True, metavar="PATH",
                             help="Load a plugin module or .py file (repeatable).")
param_option = click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
                            help="Override a flow param (value parsed as JSON when it can be).")


run_options = [
    click.option("--out", "-o", type=click.Path(dir_okay=False),
                 help="Write results (.csv or .jsonl), built from the run records."),
    click.option("--workers", "-w", type=click.IntRange(min=1),
                 help="Workers per process/thread pool (default: cores)."),
    click.option("--max-in-flight", type=click.IntRange(min=1), default=256, show_default=True,
                 help="Documents in flight at once."),
    click.option("--db", envvar="DOCPIPE_DB", help="Store URL (default sqlite:///.docpipe/docpipe.db)."),
    plugin_option,
    click.option("--verbose", "-v", is_flag=True, help="Print tracebacks of failures."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    click.option("--summary", is_flag=True, help="Print a table: one line per document."),
]


def _keep(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Executor options are kept in ``ctx.meta`` for :func:`execute` (commands need not
    take them as arguments)."""
    ctx.meta[f"docpipe.{param.name}"] = value
    ctx.meta[f"docpipe.{param.name}.given"] = (
        ctx.get_parameter_source(param.name or "") == click.core.ParameterSource.COMMANDLINE)
    return value


def _actors(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
    actors: dict[str, int] = {}
    every: int | None = None
    for spec in value:
        block, sep, n = spec.rpartition("=")
        if not n.isdigit() or int(n) < 1 or (sep and not block):
            raise click.BadParameter(f"{spec!r} is not N or BLOCK=N (N >= 1)", param_hint="--ray-actors")
        if sep:
            actors[block] = int(n)
        else:
            every = int(n)
    if every is not None and actors:
        raise click.BadParameter("give either N (every block) or BLOCK=N, not both",
                                 param_hint="--ray-actors")
    return _keep(ctx, param, every if every is not None else actors or None)


run_options += [
    click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
                 envvar="DOCPIPE_EXECUTOR", show_default=True, expose_value=False, callback=_keep,
                 help="Where thread/process blocks run: local pools, or Ray actors."),
    click.option("--ray-address", envvar="DOCPIPE_RAY_ADDRESS", metavar="auto|HOST:PORT",
                 expose_value=False, callback=_keep,
                 help="Join this Ray cluster (default: start a local Ray on 127.0.0.1)."),
    click.option("--ray-actors", multiple=True, metavar="N|BLOCK=N", expose_value=False,
                 callback=_actors, help="Ray actors per block (repeatable; default: --workers)."),
    click.option("--ray-cpus", type=click.FloatRange(min=0), expose_value=False, callback=_keep,
                 help="CPUs each Ray CPU actor reserves (default: none held)."),
]


def with_run_options(f: Any) -> Any:
    for option in reversed(run_options):
        f = option(f)
    return f


def executor_from_options() -> Any:
    """The executor the run options ask for: ``None`` for the local pools."""
    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    if meta.get("docpipe.executor", "local") != "ray":
        given = [f"--{n.replace('_', '-')}" for n in ("ray_address", "ray_actors", "ray_cpus")
                 if meta.get(f"docpipe.{n}.given")]
        if given:
            raise click.UsageError(f"{', '.join(given)} needs --executor ray")
        return None
    from docpipe.executors.ray import RayExecutor

    return RayExecutor(meta.get("docpipe.ray_address"), actors=meta.get("docpipe.ray_actors"),
                       num_cpus=meta.get("docpipe.ray_cpus"))
