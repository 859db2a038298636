"""``docpipe serve``: the web UI and REST API (:mod:`docpipe.server`) on uvicorn."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from docpipe.cli.options import db_option, err, plugin_option
from docpipe.errors import DocpipeError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but a loopback address exposes the server, and then "
                   "reading needs the token too.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@db_option()
@click.option("--data-dir", default=".docpipe", show_default=True, type=click.Path(file_okay=False),
              help="Where uploaded files are kept (in uploads/, under generated names).")
@click.option("--allow-dir", "allow_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A folder whose files runs may be started on by path (repeatable; none by default).")
@click.option("--max-upload", default=100, show_default=True, type=click.FloatRange(min=0),
              help="Largest upload in MiB (a larger request is refused with 413).")
@click.option("--workers", "-w", type=click.IntRange(min=1), help="Workers per pool for runs started here.")
@click.option("--watch", "watches", multiple=True, metavar="DIR:FLOW",
              help="Run every file that arrives in DIR through FLOW (a flow file or a name of flows/), then "
                   "move it to DIR/done or DIR/failed (repeatable).")
@click.option("--sink", "sinks", multiple=True, metavar="NAME=KIND:SPEC",
              help="Deliver every finished run to a sink: csv:FILE, jsonl:FILE, sql:URL#TABLE, webhook:URL "
                   "(repeatable; docs/service.md).")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False),
              help="A TOML file with [[sources]] and [[sinks]] tables (docs/service.md).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the resident engine runs thread and process blocks.")
@click.option("--ray-address", help="The Ray cluster to join (with --executor ray; default: a local Ray).")
@click.option("--lease", default=30.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds a job stays this server's without renewal: how long a dead server's jobs wait "
                   "before another takes them.")
@plugin_option()
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="What is logged to stderr: info is one line per request and per job start and end.")
def serve(host: str, port: int, db: str | None, data_dir: str, allow_dirs: tuple[str, ...], max_upload: float,
          workers: int | None, watches: tuple[str, ...], sinks: tuple[str, ...], config: str | None,
          executor: str, ray_address: str | None, lease: float, plugins: tuple[str, ...], log_level: str) -> None:
    """Serve the web UI and the REST API (/api/, OpenAPI at /openapi.json), and run the
    jobs queued in the store on one resident engine (docs/service.md).

    Starting, retrying and resuming runs needs a token: DOCPIPE_TOKEN, or one
    generated now and printed once.
    """
    try:
        import uvicorn

        from docpipe.server import create_app
        from docpipe.server.logs import configure
        from docpipe.server.security import is_loopback, new_token
    except ImportError as exc:
        err.print(f"error: docpipe serve needs the ui extra ({exc.name} is missing): "
                  "pip install 'docpipe-idp[ui]'", markup=False, highlight=False)
        sys.exit(2)
    token = os.environ.get("DOCPIPE_TOKEN") or ""
    if not token:
        token = new_token()
        click.echo(f"docpipe token (needed to start, retry and resume runs; shown once): {token}")
    configure(log_level)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    sources: list[Any] = list(watches)
    sink_specs: list[Any] = list(sinks)
    if config:
        try:
            with open(config, "rb") as fh:
                table = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            err.print(f"error: --config {config}: {exc}", markup=False, highlight=False)
            sys.exit(2)
        sources += list(table.get("sources") or [])
        sink_specs += list(table.get("sinks") or [])
    from docpipe.service import RunOptions, ServiceError, make_executor

    made_executor = make_executor(RunOptions(executor=executor, ray_address=ray_address))  # type: ignore[arg-type]
    try:
        app = create_app(db, data_dir, token, plugins=plugins, allow_dirs=allow_dirs, host=host,
                         max_upload=int(max_upload * 1024 * 1024), workers=workers, sources=sources,
                         sinks=sink_specs, executor=made_executor, lease_s=lease)
    except (ServiceError, DocpipeError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    where = f"[{host}]" if ":" in host else host
    if not is_loopback(host):
        err.print(f"warning: serving on {host}, not loopback: every page and API call needs the token",
                  highlight=False)
    err.print(f"docpipe serve: http://{where}:{port}/ (store {app.state.ctx.store!r})", highlight=False,
              soft_wrap=True)
    # uvicorn's access log is off: docpipe.server.access logs each request, masking secrets
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
