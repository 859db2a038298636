"""Executors run batches of block calls away from the engine's loop.

``inline`` blocks never reach an executor: the engine calls them directly, so
cheap steps cost a function call, not a hop through a pool. ``thread`` and
``process`` blocks run in pools that an executor makes (:mod:`.base` has the
interface; :mod:`.local` the thread and process pools, the default; :mod:`.ray`
Ray actors). Whatever the pool, one :class:`~.base.BlockHost` sets the block up
and runs its batches.

Every pool reports finished calls by putting a :class:`Done` on the engine's
event queue; pools never touch the store. This module holds what travels between
workers and the engine, and imports nothing heavy (worker processes import it
first).
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docpipe.errors import DocumentError, error_kind
from docpipe.status import ErrorKind

if TYPE_CHECKING:
    from docpipe.executors.base import Pool


@dataclass(frozen=True)
class ErrorInfo:
    """A picklable description of an exception raised or returned by a block."""

    kind: str
    type: str
    message: str
    traceback: str
    #: trying again could succeed: the exception said so (``DocumentError.retryable``), or the
    #: call's worker died or it timed out
    retryable: bool = False

    @classmethod
    def of(cls, exc: BaseException) -> ErrorInfo:
        """What ``exc``, raised or returned by a block, tells about its failure."""
        tb = "".join(traceback.format_exception(exc))
        message = str(exc)
        if isinstance(exc, MemoryError):
            limit = os.environ.get("DOCPIPE_WORKER_MEMORY_MB")
            message = "out of memory" + (f": {message}" if message else "") + (
                f" (a worker may use {limit} MiB; DOCPIPE_WORKER_MEMORY_MB sets it)" if limit else "")
        return cls(error_kind(exc), type(exc).__name__, message, tb,
                   bool(getattr(exc, "retryable", False)))

    @classmethod
    def failure(cls, exc: DocumentError) -> ErrorInfo:
        """A failure that happened *to* a call rather than in it (its worker died, it ran past
        its timeout), typed by its class in :mod:`docpipe.errors`: no traceback to show."""
        return cls(exc.kind, type(exc).__name__, str(exc), "", exc.retryable)

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

    pool: Pool
    call_id: int
    results: list[Any] | None
    error: ErrorInfo | None
    worker: str
    started: float
    finished: float


#: put on the engine's event queue to wake its loop (e.g. a worker finished its set-up)
WAKE: Any = object()
