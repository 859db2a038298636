"""What the commands share, defined once: the consoles, the ``--db``, ``--plugin`` and
``--param`` options, the options of the commands that run flows (``run``, ``resume``,
``runs retry``) gathered into one :class:`RunArgs` value, and how the service's errors
are worded on a command line."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from docpipe.errors import FlowError
from docpipe.plugins import Registry
from docpipe.service import RunOptions, ServiceError

if TYPE_CHECKING:
    from docpipe.store import Store

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


#: what the commands print (results, tables) and what they tell (progress, warnings, errors)
out = console()
err = console(stderr=True)

Decorator = Callable[[Any], Any]

DB_HELP = "Store URL (default sqlite:///.docpipe/docpipe.db)."
#: the shorter help of ``--db`` in the commands that read the history
HISTORY_DB_HELP = "Store URL."
PLUGIN_HELP = "Load a plugin module or .py file (repeatable)."
PARAM_HELP = "Override a flow param (value parsed as JSON when it can be)."


def db_option(text: str = DB_HELP) -> Decorator:
    """``--db`` (or ``$DOCPIPE_DB``): the store."""
    return click.option("--db", envvar="DOCPIPE_DB", help=text)


def plugin_option(text: str | None = PLUGIN_HELP) -> Decorator:
    """``--plugin PATH``, repeatable: plugins besides the installed ones."""
    return click.option("--plugin", "plugins", multiple=True, metavar="PATH", help=text)


def param_option(text: str | None = PARAM_HELP) -> Decorator:
    """``--param/-p KEY=VALUE``, repeatable: flow params (see :func:`parse_params`)."""
    return click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help=text)


def open_store(db: str | None) -> Store:
    """The store at ``db`` (else ``$DOCPIPE_DB``, else the default), opened when a command
    needs it: SQLAlchemy loads only then."""
    from docpipe.store import Store

    return Store(db)


def when(ts: float | None) -> str:
    """A recorded time as local ``YYYY-MM-DD HH:MM:SS`` (empty when there is none)."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``-p`` values as params: ``KEY=VALUE``, the value parsed as JSON when it can be."""
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


def load_registry(plugins: tuple[str, ...], *, warn: bool = True) -> Registry:
    """The installed plugins and ``--plugin`` paths; each broken one is a warning."""
    registry = Registry(extra=plugins)
    for b in registry.broken if warn else ():
        err.print(f"[yellow]warning:[/] plugin '{b.plugin}' is broken and was skipped: {b.error}",
                  highlight=False)
    return registry


@contextmanager
def flow_errors() -> Iterator[None]:
    """An invalid flow prints every issue and exits 2 (nothing was run)."""
    try:
        yield
    except FlowError as exc:
        err.print(f"[red]error:[/] {exc.args[0].splitlines()[0]}", highlight=False)
        for issue in exc.issues:
            err.print(f"  - {issue}", highlight=False, markup=False)
        sys.exit(2)


@contextmanager
def service_errors(**hints: str) -> Iterator[None]:
    """The service's refusals as click's usage errors (exit 2), each naming the option or
    argument that gave the value at fault: ``hints`` maps the service's ``field`` names
    (``batch_id``, ``since``...) to this command's (``BATCH_ID``, ``--since``...)."""
    try:
        yield
    except ServiceError as exc:
        hint = hints.get(exc.field or "")
        if hint is None:
            raise click.UsageError(str(exc)) from None
        raise click.BadParameter(str(exc), param_hint=hint) from None


@contextmanager
def closed_on_error(store: Store) -> Iterator[None]:
    """Close ``store`` when the command ends early (a usage error, an invalid flow); a
    command that goes on hands it to :func:`docpipe.cli.run.execute`, which closes it."""
    try:
        yield
    except BaseException:
        store.close()
        raise


def warn_skipped(path: str, why: str) -> None:
    """An input entry that is not a document (a FIFO in a folder, a broken link)."""
    err.print(f"[yellow]warning:[/] skipped {escape(path)}: {escape(why)}", highlight=False)


# --- the options of the commands that run flows ------------------------------------------


@dataclass(frozen=True)
class RunArgs:
    """What ``run``, ``resume`` and ``runs retry`` were given besides their arguments: how
    the batch runs (the service's :class:`~docpipe.service.RunOptions`), the store, the
    plugins, and what is printed."""

    options: RunOptions
    db: str | None = None
    plugins: tuple[str, ...] = ()
    #: print the traceback of each failure
    verbose: bool = False
    #: no progress bar
    quiet: bool = False
    #: a table with one line per document
    summary: bool = False


def _actors(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> int | dict[str, int] | None:
    """``--ray-actors``: ``N`` (every block) or ``BLOCK=N`` (repeatable), not both."""
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
    return every if every is not None else actors or None


def _gpus(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    """``--gpus 0,1``: GPU indexes (``none``: no GPU; not given: those the machine shows)."""
    from docpipe.budget import parse_gpus

    if value is None:
        return None
    try:
        return parse_gpus(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--gpus") from None


_RUN_OPTIONS = [
    click.option("--out", "-o", type=click.Path(dir_okay=False),
                 help="Write results (.csv or .jsonl), built from the run records."),
    click.option("--workers", "-w", type=click.IntRange(min=1),
                 help="Workers per process/thread pool (default: sized per block from --cores)."),
    click.option("--cores", type=click.IntRange(min=1), envvar="DOCPIPE_CORES",
                 help="Cores the busy workers of all pools may use at once (default: all)."),
    click.option("--gpus", callback=_gpus, envvar="DOCPIPE_GPUS", metavar="0,1",
                 help="GPUs blocks may use, by index: one worker each; none for none (default: the GPUs "
                      "this machine shows: CUDA_VISIBLE_DEVICES, else the NVIDIA driver's list)."),
    click.option("--max-in-flight", type=click.IntRange(min=1), default=256, show_default=True,
                 help="Documents in flight at once."),
    db_option(),
    plugin_option(),
    click.option("--verbose", "-v", is_flag=True, help="Print tracebacks of failures."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    click.option("--summary", is_flag=True, help="Print a table: one line per document."),
    click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
                 envvar="DOCPIPE_EXECUTOR", show_default=True,
                 help="Where thread/process blocks run: local pools, or Ray actors."),
    click.option("--ray-address", envvar="DOCPIPE_RAY_ADDRESS", metavar="auto|HOST:PORT",
                 help="Join this Ray cluster (default: start a local Ray on 127.0.0.1)."),
    click.option("--ray-actors", multiple=True, metavar="N|BLOCK=N", callback=_actors,
                 help="Ray actors per block (repeatable; default: --workers)."),
    click.option("--ray-cpus", type=click.FloatRange(min=0),
                 help="CPUs each Ray actor reserves (default: its block's threads, as the cluster allows)."),
]
_RAY = ("ray_address", "ray_actors", "ray_cpus")


def _run_args(given: dict[str, Any]) -> RunArgs:
    """The run options' values as one :class:`RunArgs`. Ray options given on the command
    line with the local executor are a usage error (from the environment, they are ignored)."""
    ctx = click.get_current_context()
    ray = given.pop("executor") == "ray"
    ray_values = {name: given.pop(name) for name in _RAY}
    if not ray:
        misplaced = [f"--{n.replace('_', '-')}" for n in _RAY
                     if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if misplaced:
            raise click.UsageError(f"{', '.join(misplaced)} needs --executor ray")
    options = RunOptions(out=given.pop("out"), workers=given.pop("workers"),
                         max_in_flight=given.pop("max_in_flight"), cores=given.pop("cores"),
                         gpus=given.pop("gpus"), executor="ray" if ray else "local",
                         **(ray_values if ray else {}))
    return RunArgs(options, db=given.pop("db"), plugins=given.pop("plugins"), verbose=given.pop("verbose"),
                   quiet=given.pop("quiet"), summary=given.pop("summary"))


def with_run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the run options to command ``f``, which gets them as one ``args`` (:class:`RunArgs`)."""

    @functools.wraps(f)
    def command(**kwargs: Any) -> Any:
        args = _run_args(kwargs)  # takes the run options out of kwargs
        return f(**kwargs, args=args)

    for option in reversed(_RUN_OPTIONS):
        command = option(command)
    return command
