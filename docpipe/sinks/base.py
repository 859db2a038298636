"""The output-sink contract: :class:`Sink`, the record it is given, and its errors."""

from __future__ import annotations

from typing import Any, ClassVar

from docpipe.errors import DocpipeError

#: The keys of the record a sink gets for one finished run (:func:`docpipe.sinks.records.run_records`).
RECORD_KEYS = ("run_id", "batch_id", "flow", "document", "correlation_id", "status", "error_kind", "error",
               "failed_step", "outputs", "started_at", "finished_at")


class SinkError(DocpipeError):
    """A sink cannot be configured: a malformed ``--sink`` text, an unknown kind, a bad target."""

    exit_code = 2


class Undeliverable(str):
    """An error text a sink returns for a record that no retry will deliver (a webhook's
    ``404``, ``422``): the delivery is marked dead at once instead of being retried."""

    __slots__ = ()


class Sink:
    """Where the records of finished runs go: a file, a table, a webhook, a plugin's system.

    A subclass sets ``kind`` (the name in ``--sink NAME=KIND:SPEC``) and implements
    :meth:`deliver`. ``__init__`` is cheap and checks the configuration (a bad one raises
    :class:`SinkError` naming the sink); connections are opened on first delivery, so a
    target that is down at start is retried, not fatal.

    The dispatcher (:class:`docpipe.sinks.dispatch.Dispatcher`) calls :meth:`deliver` from
    one thread per sink, so a sink need not be thread-safe; several servers may deliver to
    the same target at once, each for different runs. A delivery is *at least once*: a
    record delivered just before a crash is given again after it, so a sink makes a repeat
    harmless (the file sinks skip run ids already written, the SQL sink upserts by run id,
    the webhook sends the run id as ``Idempotency-Key``).
    """

    kind: ClassVar[str] = ""

    def __init__(self, name: str, spec: str, options: dict[str, Any]) -> None:
        """A sink called ``name`` (the deliveries' ``sink`` column) writing to ``spec`` (the
        text after ``KIND:``), with ``options`` (a config file's extra keys; ``{}`` from the
        command line)."""
        self.name, self.spec, self.options = name, spec, dict(options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def deliver(self, records: list[dict[str, Any]]) -> list[str | None]:
        """Deliver ``records`` (one per finished run, keys :data:`RECORD_KEYS`).

        Return one entry per record, in order: ``None`` (delivered) or an error text (tried
        again later with backoff; an :class:`Undeliverable` text is not retried). Raising
        fails every record of the call, to be tried again.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and files; called once when the server stops."""

    def _option(self, key: str, default: Any, kind: type | tuple[type, ...]) -> Any:
        """Option ``key`` checked against ``kind``, else ``default``; a wrong type is a
        :class:`SinkError` naming the sink and the option."""
        value = self.options.get(key, default)
        if value is not default and not isinstance(value, kind):
            names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            raise SinkError(f"sink '{self.name}': option '{key}' must be {names}, not {value!r}")
        return value
