"""Output sinks: where the records of finished runs go, each run delivered to each sink.

A sink is a :class:`Sink` subclass named by its ``kind``. docpipe ships ``csv`` and
``jsonl`` (:mod:`docpipe.sinks.files`), ``sql`` (:mod:`docpipe.sinks.sql`) and ``webhook``
(:mod:`docpipe.sinks.webhook`); a plugin adds kinds with the ``register_sinks`` hook. A
server configures its sinks as ``--sink NAME=KIND:SPEC`` texts or ``[[sinks]]`` tables of
its config file, turns them into sinks with :func:`make_sinks`, and hands them to a
:class:`~docpipe.sinks.dispatch.Dispatcher`, which drains the store's outbox
(``store.outbox``) into them. See docs/sinks.md.

    sinks = make_sinks(["results=jsonl:/srv/out/results.jsonl", "hook=webhook:https://h/x"], registry)
    dispatcher = Dispatcher(store, sinks, owner="server-1")
    dispatcher.start()
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from docpipe.sinks.base import RECORD_KEYS, Sink, SinkError, Undeliverable
from docpipe.sinks.files import CsvSink, FileSink, JsonlSink
from docpipe.sinks.sql import SqlSink
from docpipe.sinks.webhook import WebhookSink

if TYPE_CHECKING:
    from docpipe.plugins import Registry

__all__ = [
    "BUILTIN_SINKS",
    "RECORD_KEYS",
    "CsvSink",
    "FileSink",
    "JsonlSink",
    "Sink",
    "SinkError",
    "SqlSink",
    "Undeliverable",
    "WebhookSink",
    "make_sinks",
    "parse_sink",
    "sink_kinds",
]

#: The kinds docpipe ships, found whatever plugins load (``DOCPIPE_DISABLE_PLUGINS=*`` too);
#: a plugin may not register one of these kinds.
BUILTIN_SINKS: dict[str, type[Sink]] = {cls.kind: cls for cls in (CsvSink, JsonlSink, SqlSink, WebhookSink)}

_SINK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_KIND = re.compile(r"[a-z][a-z0-9_]*")
_EXAMPLE = "e.g. results=jsonl:/srv/out/results.jsonl or hook=webhook:https://host/path"


def parse_sink(text: str) -> tuple[str, str, str]:
    """``NAME=KIND:SPEC`` as ``(name, kind, spec)``.

    ``results=jsonl:/srv/out/results.jsonl``, ``crm=sql:postgresql+psycopg://u@h/db#results``,
    ``hook=webhook:https://host/path``. Shorthands: a bare ``http(s)://`` URL is a webhook
    (``hook=https://host/path``), a bare path ending ``.csv`` or ``.jsonl`` a file sink
    (``results=/srv/out/results.csv``). Anything else is a :class:`SinkError` saying the form.
    """
    name, eq, rest = text.partition("=")
    name, rest = name.strip(), rest.strip()
    if not eq or not _SINK_NAME.fullmatch(name) or not rest:
        raise SinkError(f"sink {text!r} is not NAME=KIND:SPEC ({_EXAMPLE}); NAME is letters, digits, _ . -")
    kind, colon, spec = rest.partition(":")
    if colon and kind in ("http", "https"):
        return name, "webhook", rest
    if not colon or not _KIND.fullmatch(kind):
        suffix = rest.rsplit(".", 1)[-1].lower()
        if suffix in ("csv", "jsonl"):
            return name, suffix, rest
        raise SinkError(f"sink {text!r}: no kind before the ':' ({_EXAMPLE})")
    return name, kind, spec


def sink_kinds(registry: Registry | None = None) -> tuple[dict[str, type[Sink]], list[str]]:
    """The sink kinds there are: the built-ins, then what plugins of ``registry`` (a
    :class:`docpipe.plugins.Registry`; ``None``: built-ins only) register, and one line per
    plugin whose ``register_sinks`` failed or tried to take a built-in kind."""
    kinds = dict(BUILTIN_SINKS)
    problems: list[str] = []
    if registry is None:
        return kinds, problems
    found, broken = registry.extensions("register_sinks", Sink)
    problems += [f"plugin '{b.plugin}': {b.error}" for b in broken]
    for kind, (cls, plugin) in sorted(found.items()):
        if kind in BUILTIN_SINKS:
            problems.append(f"plugin '{plugin}': register_sinks: kind '{kind}' is built into docpipe; "
                            f"{cls.__qualname__} was not registered")
        else:
            kinds[kind] = cls
    return kinds, problems


def make_sinks(specs: Iterable[str | Mapping[str, Any]], registry: Registry | None = None) -> dict[str, Sink]:
    """The sinks ``specs`` configure, by name, ready for a dispatcher.

    Each spec is a ``--sink`` text (:func:`parse_sink`) or a config file's table:
    ``{"name": ..., "kind": ..., "spec": ...}`` plus the kind's options (``url`` or ``path``
    may stand for ``spec``). A duplicate name, an unknown kind (the error lists the known
    ones and any plugin that failed to register its sinks) or a target the sink refuses is a
    :class:`SinkError`; the sinks made before it are closed.
    """
    kinds, problems = sink_kinds(registry)
    sinks: dict[str, Sink] = {}
    try:
        for item in specs:
            name, kind, spec, options = _unpack(item)
            if name in sinks:
                raise SinkError(f"sink '{name}' is configured twice; give each sink its own name")
            cls = kinds.get(kind)
            if cls is None:
                broken = "".join(f"; {p}" for p in problems)
                raise SinkError(f"sink '{name}': unknown sink kind '{kind}' (known kinds: "
                                f"{', '.join(sorted(kinds))}){broken}")
            try:
                sinks[name] = cls(name, spec, options)
            except SinkError:
                raise
            except Exception as exc:  # noqa: BLE001 - a plugin's sink refusing its configuration
                raise SinkError(f"sink '{name}' ({kind}): {type(exc).__name__}: {exc}") from exc
    except BaseException:
        for sink in sinks.values():
            sink.close()
        raise
    return sinks


def _unpack(item: str | Mapping[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """A spec as ``(name, kind, spec, options)``."""
    if isinstance(item, str):
        return (*parse_sink(item), {})
    options = dict(item)
    name, kind = options.pop("name", None), options.pop("kind", None)
    specs = [options.pop(k) for k in ("spec", "url", "path") if k in options]
    if not isinstance(name, str) or not _SINK_NAME.fullmatch(name):
        raise SinkError(f"a [[sinks]] table needs a name (letters, digits, _ . -): {item!r}")
    if not isinstance(kind, str) or not kind:
        raise SinkError(f"sink '{name}': its table needs a kind (csv, jsonl, sql, webhook or a plugin's)")
    if len(specs) != 1 or not isinstance(specs[0], str):
        raise SinkError(f"sink '{name}': its table needs one of spec, url or path, as text")
    return name, kind, specs[0], options
