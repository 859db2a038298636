"""Intake sources: what feeds a resident server documents without a person posting them.

A source is a :class:`Source` subclass with a ``kind``; a server makes one per configured
source (``docpipe serve --watch DIR:FLOW``, a ``[[sources]]`` table of its config file) with
:func:`make_sources`, starts each (its own daemon thread) and stops them when it stops. A
source queues what it finds with :func:`docpipe.service.intake.submit_documents` under its
``name`` as the jobs' ``source``, with a key per document so that finding it again (after a
restart) never queues it twice. Built in: ``watch`` (:class:`~docpipe.sources.folder.FolderSource`).
Plugins add kinds with the ``register_sources`` hook (docs/hooks.md).

The contract, for a plugin's source::

    class Inbox(Source):
        kind = "inbox"
        def poll(self) -> None:        # called every `interval` seconds on the source's thread
            ...submit_documents(self.store, flow, docs, registry=self.registry,
                                source=self.name, keys=[...])

``__init__`` checks the spec and options (a :class:`~docpipe.service.ServiceError` with a
clear message for bad ones: the server refuses to start) and touches nothing else;
``poll`` may raise: the error is logged and counted, and the next round runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from docpipe.service.errors import ServiceError
from docpipe.service.intake import CORRELATION_FROM, BadSidecar, correlation_for, sidecar_of

if TYPE_CHECKING:
    from docpipe.plugins import Registry
    from docpipe.store import Store

__all__ = ["CORRELATION_FROM", "BadSidecar", "Source", "SourceConfig", "builtin_kinds", "correlation_for",
           "make_sources", "parse_source", "sidecar_of", "source_kinds"]

log = logging.getLogger("docpipe.sources")


class Source:
    """One intake source of a server. Subclasses set ``kind`` and implement :meth:`poll`
    (or override :meth:`start`/:meth:`stop` for a source that is pushed to)."""

    #: the name of this kind of source in a server's config (``watch``)
    kind: ClassVar[str] = ""
    #: seconds between two :meth:`poll` rounds (a subclass may set it from its options)
    interval: float = 1.0

    def __init__(self, name: str, spec: str, options: dict[str, Any], *, store: Store,
                 registry: Registry) -> None:
        self.name = name
        self.spec = spec
        self.options = dict(options)
        self.store = store
        self.registry = registry
        #: what :meth:`status` reports; subclasses count into it
        self.counts: dict[str, int] = {"seen": 0, "submitted": 0, "moved": 0, "errors": 0}
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def default_name(cls, spec: str) -> str:
        """The name of a source configured without one (also its jobs' ``source``)."""
        return f"{cls.kind}:{spec}"

    def poll(self) -> None:
        """One round: find new documents and submit them; follow up what was submitted."""
        raise NotImplementedError

    def start(self) -> None:
        """Poll every :attr:`interval` seconds on a daemon thread of its own, until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"source {self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30) -> None:
        """Stop polling and wait for the round in progress to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.round()
            self._stop.wait(self.interval)

    def round(self) -> bool:
        """:meth:`poll` once; an error is logged and counted, never raised. True when it ran clean."""
        try:
            self.poll()
        except Exception as exc:  # noqa: BLE001 - a source's thread must outlive one bad round
            self.counts["errors"] += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("source %s: %s", self.name, self.last_error, exc_info=not isinstance(exc, ServiceError))
            return False
        return True

    def status(self) -> dict[str, Any]:
        """For ``/metrics`` and the logs: ``name``, ``kind``, ``running`` and the counts
        (``seen``, ``submitted``, ``moved``, ``errors``), ``last_error``."""
        running = self._thread is not None and self._thread.is_alive()
        return {"name": self.name, "kind": self.kind, "running": running, **self.counts,
                "last_error": self.last_error}


@dataclass(frozen=True)
class SourceConfig:
    """One source a server is configured with: ``--watch DIR:FLOW`` or a ``[[sources]]`` table
    (``kind``, ``spec``, optional ``name``; every other key is an option)."""

    kind: str
    spec: str
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, table: Mapping[str, Any]) -> SourceConfig:
        """A ``[[sources]]`` table of a server's TOML config: ``kind`` (default ``watch``),
        ``spec`` (``DIR:FLOW`` for ``watch``), ``name``, options (``interval = 2`` ...)."""
        rest = dict(table)
        kind, spec, name = rest.pop("kind", "watch"), rest.pop("spec", None), rest.pop("name", None)
        if not isinstance(kind, str) or not isinstance(spec, str) or not spec:
            raise ServiceError(f"a [[sources]] table needs kind and spec strings (spec = \"DIR:FLOW\" for "
                               f"watch), not {dict(table)!r}", field="sources")
        if name is not None and not isinstance(name, str):
            raise ServiceError(f"a source's name is a string, not {name!r}", field="sources")
        return cls(kind, spec, name, rest)


def parse_source(text: str) -> SourceConfig:
    """``--watch DIR:FLOW`` as a :class:`SourceConfig` of kind ``watch`` (the folder and the
    flow are checked when the source is made)."""
    folder, sep, flow = text.rpartition(":")
    if not sep or not folder or not flow:
        raise ServiceError(f"{text!r} is not DIR:FLOW (e.g. /srv/in:idp)", field="watch")
    return SourceConfig("watch", text)


def builtin_kinds() -> dict[str, type[Source]]:
    """The source kinds docpipe itself has, found with every plugin disabled."""
    from docpipe.sources.folder import FolderSource

    return {FolderSource.kind: FolderSource}


def source_kinds(registry: Registry) -> dict[str, type[Source]]:
    """Every source kind: the built-in ones, then those plugins register (``register_sources``;
    a plugin that fails, or registers a kind already taken, is logged and skipped)."""
    kinds = builtin_kinds()
    found, broken = registry.extensions("register_sources", Source)
    for b in broken:
        log.warning("plugin '%s' is broken and its sources were skipped: %s", b.plugin, b.error)
    for kind, (cls, plugin) in found.items():
        if kind in kinds and kinds[kind] is not cls:
            log.warning("plugin '%s' registers source kind '%s', which docpipe has: skipped", plugin, kind)
            continue
        kinds[kind] = cls  # type: ignore[assignment]  # extensions() checked it subclasses Source
    return kinds


def make_sources(configs: Iterable[SourceConfig | Mapping[str, Any] | str], *, store: Store,
                 registry: Registry) -> list[Source]:
    """The sources ``configs`` describe (a :class:`SourceConfig`, a ``[[sources]]`` table, or a
    ``--watch`` value), made but not started. :class:`ServiceError` for an unknown kind (the
    message lists the known ones), two sources of one name, or a source that refuses its spec
    or options."""
    kinds = source_kinds(registry)
    made: list[Source] = []
    for config in configs:
        if isinstance(config, str):
            config = parse_source(config)
        elif not isinstance(config, SourceConfig):
            config = SourceConfig.of(config)
        cls = kinds.get(config.kind)
        if cls is None:
            raise ServiceError(f"no source kind {config.kind!r} (known: {', '.join(sorted(kinds))})",
                               field="sources")
        source = cls(config.name or cls.default_name(config.spec), config.spec, dict(config.options),
                     store=store, registry=registry)
        if any(s.name == source.name for s in made):
            raise ServiceError(f"two sources are named {source.name!r}", field="sources")
        made.append(source)
    return made
