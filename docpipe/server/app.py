"""The FastAPI application: :func:`create_app` wires the store, the jobs, the token and the
routers of the API (:mod:`docpipe.server.api`) and the pages (:mod:`docpipe.server.pages`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from docpipe import __version__
from docpipe.plugins import Registry
from docpipe.server.actions import Settings
from docpipe.server.data import STATUSES
from docpipe.server.jobs import Jobs
from docpipe.server.logs import AccessLog
from docpipe.server.security import Guard, is_loopback
from docpipe.status import Status
from docpipe.store import Store
from docpipe.telemetry import Telemetry

if TYPE_CHECKING:
    from docpipe.executors.base import Executor
    from docpipe.service.worker import Runner

HERE = Path(__file__).parent
#: Room for the multipart framing around the files of an upload.
FORM_OVERHEAD = 1024 * 1024


@dataclass
class Context:
    """What every route needs; ``app.state.ctx``."""

    settings: Settings
    store: Store
    jobs: Jobs
    token: str
    reads_public: bool
    templates: Jinja2Templates
    #: the server's metrics and probes (``/metrics``, ``/readyz``: :mod:`docpipe.server.health`)
    telemetry: Telemetry = field(default_factory=Telemetry)
    _registry: Registry | None = field(default=None, repr=False)
    #: runs the store's jobs on the resident engine (:mod:`docpipe.service.worker`)
    runner: Runner | None = None
    #: the intake sources this server runs (``--watch``, config)
    sources: list[Any] = field(default_factory=list)
    #: delivers finished runs to the sinks (``--sink``, config), if any
    dispatcher: Any = None

    @property
    def registry(self) -> Registry:
        """The plugin registry (built once, on first use: entry points, then ``--plugin``)."""
        if self._registry is None:
            self._registry = Registry(extra=self.settings.plugins)
        return self._registry


class App(FastAPI):
    """FastAPI with the :class:`~docpipe.server.security.Guard` around everything, and the
    :class:`~docpipe.server.logs.AccessLog` around that."""

    guard: Guard
    access_log: AccessLog

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        inner = super().__call__

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            await self.guard(inner, scope, receive, send)

        await self.access_log(guarded, scope, receive, send)


def ctx_of(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _secs(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["when"] = _when
    env.filters["secs"] = _secs
    env.globals["version"] = __version__
    env.globals["Status"] = Status
    env.globals["STATUSES"] = STATUSES
    return Jinja2Templates(env=env)


def create_app(store_url: str | None, data_dir: str | Path, token: str, *, plugins: tuple[str, ...] = (),
               allow_dirs: tuple[str | Path, ...] = (), host: str = "127.0.0.1",
               max_upload: int = 100 * 1024 * 1024, workers: int | None = None,
               reads_public: bool | None = None, sources: Sequence[Any] = (), sinks: Sequence[Any] = (),
               executor: Executor | None = None, lease_s: float = 30.0) -> App:
    """The docpipe web UI and REST API over the store at ``store_url``, and the service behind
    them (docs/service.md): a :class:`~docpipe.service.worker.Runner` that runs the jobs the
    store holds on one resident engine (``executor``: local pools by default, or Ray),
    ``sources`` that queue documents (``--watch`` values or config tables: see
    :func:`docpipe.sources.make_sources`) and ``sinks`` that get every finished run (see
    :func:`docpipe.sinks.make_sinks`). They start with the app's lifespan and stop with it.

    ``token`` guards every change (and every read unless ``reads_public``, which
    defaults to whether ``host``, the address the server binds, is a loopback
    one). Uploads go under ``data_dir``; runs on server-side files may read only
    under ``allow_dirs``. ``plugins`` are ``--plugin`` paths, as for ``docpipe run``.
    """
    if not token:
        raise ValueError("the server needs a token")
    from docpipe.server import api, health, intake, pages, rerun_api, review_pages
    from docpipe.service.worker import Runner
    from docpipe.sinks import make_sinks
    from docpipe.sinks.dispatch import Dispatcher
    from docpipe.sources import make_sources

    loopback = is_loopback(host)
    store = Store(store_url)
    settings = Settings(store_url=store.url, data_dir=Path(data_dir).resolve(), plugins=tuple(plugins),
                        allow_dirs=tuple(Path(d).resolve() for d in allow_dirs), max_upload=max_upload,
                        workers=workers)
    registry = Registry(extra=settings.plugins)
    try:
        made_sinks = make_sinks(sinks, registry) if sinks else {}
        made_sources = make_sources(sources, store=store, registry=registry) if sources else []
    except BaseException:
        store.close()
        raise
    runner_store = Store(store.url)  # the engine's records go through a writer of its own
    runner = Runner(runner_store, registry, workers=workers, executor=executor, sinks=list(made_sinks),
                    lease_s=lease_s)
    dispatcher = Dispatcher(store, made_sinks, owner=runner.owner) if made_sinks else None
    jobs = Jobs(store, runner)
    ctx = Context(settings, store, jobs, token, loopback if reads_public is None else reads_public,
                  _templates(), _registry=registry)
    ctx.runner = runner
    ctx.sources = made_sources
    ctx.dispatcher = dispatcher
    telemetry = ctx.telemetry
    telemetry.attach(store)
    telemetry.attach(runner_store)
    telemetry.pools(runner.engine.pool_stats)
    telemetry.readiness(lambda: runner.ready)
    telemetry.sources(lambda: [{"name": s.name, "kind": s.kind, **s.status()} for s in made_sources])
    runner.on_lease_expired = telemetry.lease_expired
    if dispatcher is not None:
        runner.on_delivery = dispatcher.wake

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runner.start()
        if dispatcher is not None:
            dispatcher.start()
        for source in made_sources:
            source.start()
        try:
            yield
        finally:
            for source in made_sources:
                source.stop()
            runner.stop()
            if dispatcher is not None:
                dispatcher.stop()
            runner_store.close()
            store.close()

    app = App(title="docpipe", version=__version__, lifespan=lifespan,
              description="Flow runs, flows and blocks of a docpipe store. Requests that change "
                          "something need `Authorization: Bearer <token>`.")
    app.guard = Guard(max_body=max_upload + FORM_OVERHEAD, loopback=loopback)
    app.access_log = AccessLog(token)
    app.state.ctx = ctx
    app.include_router(api.router)
    app.include_router(rerun_api.router)
    app.include_router(health.router)
    app.include_router(intake.router)
    app.include_router(pages.router)
    app.include_router(review_pages.router)
    app.include_router(pages.public)

    @app.exception_handler(pages.LoginNeeded)
    async def login_needed(request: Request, exc: pages.LoginNeeded) -> Response:
        return RedirectResponse("/login?" + urlencode({"next": str(exc)}), status_code=303)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if request.url.path in ("/docs", "/redoc"):  # FastAPI's API explorers load their scripts from a CDN
            return response
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app
