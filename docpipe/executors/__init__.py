"""Executors run batches of block calls away from the engine's loop.

``inline`` blocks never reach an executor: the engine calls them directly, so
cheap steps cost a function call, not a hop through a pool. ``thread`` blocks
run in a :class:`ThreadPool`, ``process`` blocks in a :class:`ProcessPool`
(spawned workers; ``setup()`` once per worker; a worker keeps what it loaded).

Every pool reports finished calls by putting a :class:`Done` on the engine's
event queue; pools never touch the store.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from typing import Any

from docpipe.errors import BlockTimeout, WorkerDied, error_kind
from docpipe.status import ErrorKind

#: failures the engine itself reports that are always worth another attempt
_RETRYABLE_KINDS = frozenset({WorkerDied.kind, BlockTimeout.kind})


@dataclass(frozen=True)
class ErrorInfo:
    """A picklable description of an exception raised or returned by a block."""

    kind: str
    type: str
    message: str
    traceback: str
    #: the exception said trying again could help (``DocumentError.retryable``)
    transient: bool = False

    @classmethod
    def of(cls, exc: BaseException) -> ErrorInfo:
        tb = "".join(traceback.format_exception(exc))
        message = str(exc)
        if isinstance(exc, MemoryError):
            limit = os.environ.get("DOCPIPE_WORKER_MEMORY_MB")
            message = "out of memory" + (f": {message}" if message else "") + (
                f" (a worker may use {limit} MiB; DOCPIPE_WORKER_MEMORY_MB sets it)" if limit else "")
        return cls(error_kind(exc), type(exc).__name__, message, tb,
                   bool(getattr(exc, "retryable", False)))

    @property
    def retryable(self) -> bool:
        """Whether another attempt could succeed: the exception said so, or the worker died or
        timed out (those infos are built by the pools, not from an exception)."""
        return self.transient or self.kind in _RETRYABLE_KINDS

    def __str__(self) -> str:
        """Typed document failures read as their message (the kind says the rest); an
        unexpected exception keeps its type name: ``ValueError: boom``."""
        if self.kind != ErrorKind.BLOCK_ERROR and self.message:
            return self.message
        return f"{self.type}: {self.message}" if self.message else self.type


@dataclass
class Done:
    """A finished call: one result per input (a dict of written keys or an :class:`ErrorInfo`),
    or ``error`` when the call as a whole failed."""

    pool: Any
    call_id: int
    results: list[Any] | None
    error: ErrorInfo | None
    worker: str
    started: float
    finished: float


#: put on the engine's event queue to wake its loop (e.g. a worker finished its set-up)
WAKE: Any = object()


def check_results(results: Any, n: int, writes: frozenset[str], block: str) -> list[Any]:
    """Normalise what ``run`` returned: exceptions become :class:`ErrorInfo`; a dict whose
    keys are not exactly the declared writes becomes an error for that input."""
    if not isinstance(results, list) or len(results) != n:
        got = f"{len(results)} results" if isinstance(results, list) else type(results).__name__
        raise TypeError(f"block '{block}' returned {got} for {n} inputs; run() must return a list "
                        "with one dict (or exception) per input")
    out: list[Any] = []
    for r in results:
        if isinstance(r, dict):
            if r.keys() != writes:
                missing, extra = writes - r.keys(), r.keys() - writes
                msg = f"block '{block}' broke its manifest: "
                msg += f"missing {sorted(missing)} " if missing else ""
                msg += f"undeclared {sorted(extra)}" if extra else ""
                r = ErrorInfo(ErrorKind.BLOCK_ERROR, "ContractError", msg.strip(), "")
        elif isinstance(r, BaseException):
            r = ErrorInfo.of(r)
        elif not isinstance(r, ErrorInfo):
            r = ErrorInfo(ErrorKind.BLOCK_ERROR, "ContractError",
                          f"block '{block}' returned {type(r).__name__}, not a dict", "")
        out.append(r)
    return out
