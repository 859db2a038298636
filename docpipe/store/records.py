"""Run records: what the engine reports to the store's writer, one kind per named tuple.

* :class:`RunStarted` — a flow run began (inserted as ``running``, attempt 1).
* :class:`RunResumed` — a flow run of an earlier process runs again.
* :class:`RunFinished` — a flow run ended, with its outputs.
* :class:`TaskRecord` — one attempt of one step on one document (or map item).
* :class:`ReviewTask` — a run reached a review step and waits for a person (rare: no builder).

Each field is the ``flow_runs`` / ``task_runs`` column of the same name, and the
writer binds a record's fields in their order: a record is its row.

The engine reports a task record for every step of every document, a started
and a finished record for every document; those three kinds have builders
(:func:`task_succeeded`, :func:`run_started`, :func:`run_finished`) that return
the record as a plain tuple of its fields, with its outputs already JSON text.
Both matter on the hot path, measured with ``benchmarks/engine_overhead.py``:

* a named tuple is built by a Python ``__new__`` (~0.3 µs, several times a
  tuple display);
* the garbage collector untracks a tuple whose items are all atomic (strings,
  numbers, ``None``), but never an instance of a tuple subclass and never a
  tuple holding a dict. Records wait in the writer's buffers for a few
  milliseconds, long enough to be promoted to the oldest generation, and
  thousands of tracked records there made the collector run full collections
  several times per batch (over 1 µs per task).

The writer reads records by position, so a named tuple (tests, the rare kinds
and sites: failures, skips, resumes) and a builder's tuple are the same to it.

Outputs are JSON text (``default=str``) when the C encoder takes them; bytes
and values it refuses stay a dict, for the writer's careful path (blobs,
errors named). Text longer than the store's blob threshold is decoded and
offloaded there too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

from docpipe.status import Status

__all__ = [
    "FinishedRow",
    "Outputs",
    "RunFinished",
    "RunResumed",
    "ReviewTask",
    "RunStarted",
    "StartedRow",
    "TaskRecord",
    "TaskRow",
    "encode_outputs",
    "run_finished",
    "run_started",
    "task_succeeded",
]

#: A record's outputs: JSON text, a dict the writer encodes, or none.
Outputs = str | dict[str, Any] | None


class RunStarted(NamedTuple):
    """Flow run ``id`` of ``document`` started (its status ``running``, its attempt 1).

    ``batch_id`` and ``flow_id`` are ``None`` only where nothing is recorded (an
    engine without a store); a store requires them.
    """

    id: str
    batch_id: str | None
    flow_id: int | None
    document: str
    started_at: float
    correlation_id: str | None = None


class RunResumed(NamedTuple):
    """Flow run ``id`` (of an earlier process) runs again from ``started_at``.

    Its status goes back to ``running``, its attempt up by one, and its end
    (``finished_at``, error, outputs) is cleared. Its task runs stay: they are
    the history.
    """

    id: str
    started_at: float


class RunFinished(NamedTuple):
    """Flow run ``id`` ended with ``status``; ``failed_step`` is where a failed run failed.

    A dict of ``outputs`` is encoded later, on the writer thread: do not mutate
    it once reported.
    """

    id: str
    status: str
    finished_at: float
    error_kind: str | None = None
    error: str | None = None
    failed_step: str | None = None
    outputs: Outputs = None


class TaskRecord(NamedTuple):
    """One attempt of step ``step`` (block ``block``) of flow run ``flow_run_id``.

    Times are float epoch seconds; ``worker`` a label such as ``"thread-3"`` or
    ``None``; ``outputs`` the state keys the step wrote (a dict is encoded
    later, on the writer thread: do not mutate it) or ``None`` (nothing to
    restore on resume: the step runs again).
    """

    flow_run_id: str
    step: str
    block: str | None
    attempt: int
    status: str
    started_at: float
    finished_at: float
    worker: str | None
    error_kind: str | None = None
    error: str | None = None
    traceback: str | None = None
    #: JSON text: what produced the outputs (:mod:`docpipe.provenance`), or ``None``
    provenance: str | None = None
    #: the key under which an equal task may reuse the outputs (cache policy on), or ``None``
    cache_key: str | None = None
    outputs: Outputs = None


class ReviewTask(NamedTuple):
    """Review task ``id``: flow run ``flow_run_id`` waits at review step ``step`` for a person.

    ``keys`` (the keys the answer writes) and ``choices`` are JSON text; ``proposal`` (the
    model's values of the keys, its score and top-k where a step wrote them) is outputs like
    a task's. Inserted ``waiting``; a second record for the same run and step (the run
    reached it again after a crash) is ignored: the first task stands.
    """

    id: str
    flow_run_id: str
    batch_id: str | None
    step: str
    kind: str
    keys: str
    prompt: str | None
    choices: str
    proposal: Outputs
    created_at: float


#: The fields of a :class:`RunStarted`, as a plain tuple (what :func:`run_started` builds).
StartedRow = tuple[str, str | None, int | None, str, float, str | None]
#: The fields of a :class:`RunFinished`, as a plain tuple (what :func:`run_finished` builds).
FinishedRow = tuple[str, str, float, str | None, str | None, str | None, Outputs]
#: The fields of a :class:`TaskRecord`, as a plain tuple (what :func:`task_succeeded` builds).
TaskRow = tuple[str, str, str | None, int, str, float, float, str | None, str | None, str | None, str | None,
                str | None, str | None, Outputs]


class _HasBytes(Exception):
    """Raised by :func:`_no_bytes` to leave the fast encoding path."""


def _no_bytes(value: object) -> str:
    """``default`` of the fast encoder: ``str()``, but bytes go the careful path."""
    if isinstance(value, bytes | bytearray | memoryview):
        raise _HasBytes
    return str(value)


def _fast_encoder() -> Callable[[Any], str]:
    """JSON text of outputs: the C encoder ``json.dumps`` uses, made ONCE.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which costs
    more than encoding a small dict. No cycle check (a cycle raises
    ``RecursionError`` and the careful path names it); bytes raise
    :class:`_HasBytes`; the rest is ``str()``-ed.
    """
    from json import encoder

    make = getattr(encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (not CPython)
        return json.JSONEncoder(default=_no_bytes, check_circular=False).encode
    iterencode = make(None, _no_bytes, encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    join = "".join
    return lambda value: join(iterencode(value, 0))


_encode_fast = _fast_encoder()


def encode_outputs(outputs: Outputs) -> Outputs:
    """``outputs`` as JSON text; as they are if ``None``, text, or not for the fast encoder."""
    if outputs is None or outputs.__class__ is str:
        return outputs
    try:
        return _encode_fast(outputs)
    except Exception:  # noqa: BLE001 -- bytes, or not encodable: the writer's careful path sorts it out
        return outputs


_SUCCEEDED = str(Status.SUCCEEDED)  # SQLite's driver binds a str subclass ~1 µs slower


def task_succeeded(flow_run_id: str, step: str, block: str | None, attempt: int, started_at: float,
                   finished_at: float, worker: str | None, outputs: dict[str, Any] | None,
                   provenance: str | None = None, cache_key: str | None = None) -> TaskRow:
    """The :class:`TaskRecord` of a step's attempt that succeeded and wrote ``outputs``;
    ``provenance`` is JSON text (:mod:`docpipe.provenance`)."""
    return (flow_run_id, step, block, attempt, _SUCCEEDED, started_at, finished_at, worker, None, None, None,
            provenance, cache_key, encode_outputs(outputs))


def run_started(run_id: str, batch_id: str | None, flow_id: int | None, document: str, started_at: float,
                correlation_id: str | None) -> StartedRow:
    """The :class:`RunStarted` of flow run ``run_id``."""
    return (run_id, batch_id, flow_id, document, started_at, correlation_id)


def run_finished(run_id: str, status: str, finished_at: float, error_kind: str | None, error: str | None,
                 failed_step: str | None, outputs: dict[str, Any]) -> FinishedRow:
    """The :class:`RunFinished` of flow run ``run_id``."""
    return (run_id, str(status), finished_at, error_kind, error, failed_step, encode_outputs(outputs))
