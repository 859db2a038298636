"""The record writer: run records buffered in memory, written in bulk by one thread.

The engine reports every flow run and task run here, on its hot path, as the
records of :mod:`docpipe.store.records`. Each record method IS the ``append``
of a :class:`collections.deque` (atomic under the GIL: no lock, no SQL, no
Python frame). There is one buffer per kind of write: started runs (inserts),
task runs (inserts), and ended runs, which holds finished AND resumed runs:
both update the same rows and must apply in the order reported (a run may
finish, be resumed and finish again between two writes), an order two buffers
drained one after the other could not keep; a :class:`RunResumed` is told
from a finish by its class. Review tasks (rare) have a buffer of their own,
taken after ended runs: the engine reports a run's review task before the run's
``waiting`` end, so a run is never seen waiting without its task.

One background thread wakes every ``interval`` seconds, takes everything
buffered and writes it in a single transaction: inserts of started flow runs,
inserts of task runs, then the updates of ended runs, in order. A run that
starts and finishes between two wake-ups is inserted finished, with no update.
Each statement is a :class:`~docpipe.store.bulk.BulkStatement`: a few hundred
rows per statement. A record's fields are its row's columns, in order, so a
record whose outputs are short JSON text (what the builders make) is written
as it is.

Outputs that are still a dict (bytes in them, or a record built by hand) are
encoded here, and with a :class:`~docpipe.blobs.BlobStore`, bytes and any
top-level value whose JSON is longer than ``blob_threshold`` are written there
first and the row holds a reference (:func:`docpipe.blobs.offload`).

A failed write is never swallowed: the first exception is kept and re-raised,
with a note saying how many records were lost, by the next :meth:`flush` or
:meth:`close`.

Observers (:meth:`RecordWriter.observe`: the server's :class:`docpipe.telemetry.Telemetry`)
see each round's records as a :class:`Written` once its transaction has committed, on
the writer thread: a counter kept from them counts exactly what is in the database,
and the engine's loop never pays for it. Without an observer a round costs one
attribute test more; an observer that raises is logged and the records stay written.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final, NamedTuple, TypeVar

import sqlalchemy as sa

from docpipe.blobs import DEFAULT_THRESHOLD, BlobStore, offload
from docpipe.inputs import clean_text
from docpipe.status import Status
from docpipe.store.bulk import Builder, BulkStatement, Row, insert_builder, row_binds
from docpipe.store.records import (
    FinishedRow,
    ReviewTask,
    RunFinished,
    RunResumed,
    RunStarted,
    StartedRow,
    TaskRecord,
    TaskRow,
    encode_outputs,
)
from docpipe.store.schema import flow_runs, review_tasks, task_runs

T = TypeVar("T")

log = logging.getLogger(__name__)


class Written(NamedTuple):
    """The records of one committed write round, each kind in the order reported (what an
    observer of :meth:`RecordWriter.observe` is called with). Records are as the engine
    built them (:mod:`docpipe.store.records`: read them by position); do not change them."""

    started: list[StartedRow]
    tasks: list[TaskRow]
    #: finished runs (plain tuples or :class:`RunFinished`) and :class:`RunResumed`, in order
    ended: list[FinishedRow | RunResumed]
    reviews: list[ReviewTask]


#: What :meth:`RecordWriter.observe` takes.
Observer = Callable[[Written], None]

#: Outputs to JSON text on the careful path; one reusable encoder
#: (``json.dumps(..., default=str)`` builds a new one per call, several times slower).
_encode_json = json.JSONEncoder(default=str).encode


def _clean(rec: Row, *at: int) -> Row:
    """``rec`` with its texts at ``at`` (an error, a traceback) storable: a lone surrogate
    (an undecodable file name quoted in a message) shown as ``\xff``."""
    out = list(rec)
    for i in at:
        if isinstance(out[i], str):
            out[i] = clean_text(out[i])
    return tuple(out)


_ENCODE_ERRORS = (TypeError, ValueError, RuntimeError, OSError)


def _drain(buffer: deque[T]) -> list[T]:
    """Pop what ``buffer`` holds now; appends racing with this stay for next time."""
    pop = buffer.popleft
    return [pop() for _ in range(len(buffer))]


# Where a record's fields are: the writer reads records by position (see docpipe.store.records;
# tests/store/test_records.py checks these against the named tuples' fields).
_TASK_RUN_ID: Final = 0
_TASK_STEP: Final = 1
_TASK_ERROR: Final = 9
_TASK_TRACEBACK: Final = 10
_TASK_OUTPUTS: Final = 13
_FINISH_RUN_ID: Final = 0
_FINISH_ERROR: Final = 4
_FINISH_OUTPUTS: Final = 6

#: The columns a flow run is inserted with: its start, then its end (see ``_run_rows``).
_RUN_FIELDS = RunStarted._fields + RunFinished._fields[1:]
#: The end of a run that has not ended.
_RUNNING = (str(Status.RUNNING), None, None, None, None, None)

#: What a resume sets besides ``started_at`` (SQL literals: bulk statements bind only row fields).
_RESUME_SET: dict[str, Any] = {
    "status": sa.literal_column(f"'{Status.RUNNING}'"),
    "attempt": flow_runs.c.attempt + sa.literal_column("1"),
    "finished_at": sa.null(),
    "error_kind": sa.null(),
    "error": sa.null(),
    "failed_step": sa.null(),
    "outputs": sa.null(),
}


def _update_builder(name: str, fields: tuple[str, ...], extra: dict[str, Any]) -> Builder:
    """``WITH v AS (VALUES ...) UPDATE flow_runs SET ... FROM v WHERE id = v.id``, ``k`` rows.

    ``fields`` start with ``id``; the others are set from the row, ``extra`` as given.
    """

    def build(k: int) -> sa.ClauseElement:
        columns = [sa.column(field, flow_runs.c[field].type) for field in fields]
        rows = [tuple(sa.bindparam(f"{c.name}_{i}", type_=c.type) for c in columns) for i in range(k)]
        v = sa.values(*columns, name=name).data(rows).cte(name)
        values = {field: v.c[field] for field in fields if field != "id"}
        return flow_runs.update().values({**values, **extra}).where(flow_runs.c.id == v.c.id)

    return build


def _update_one_builder(fields: tuple[str, ...], extra: dict[str, Any]) -> Builder:
    """The one-row form of :func:`_update_builder` (``k`` is always 1), for SQLite < 3.33."""

    def build(k: int) -> sa.ClauseElement:
        binds: dict[str, Any] = dict(row_binds(fields, 0))
        key = binds.pop("id")
        return flow_runs.update().where(flow_runs.c.id == key).values({**binds, **extra})

    return build


def _update_statement(
    name: str, fields: tuple[str, ...], extra: dict[str, Any], dialect: sa.Dialect
) -> BulkStatement:
    """A bulk UPDATE of flow runs by id: ``UPDATE ... FROM (VALUES ...)`` where the database has it."""
    if _supports_update_from(dialect):
        return BulkStatement(f"flow_runs.{name}", _update_builder(name, fields, extra), fields, dialect)
    return BulkStatement(f"flow_runs.{name}1", _update_one_builder(fields, extra), fields, dialect, max_rows=1)


def _supports_update_from(dialect: sa.Dialect) -> bool:
    """Whether the database runs ``UPDATE ... FROM`` (SQLite only since 3.33)."""
    if dialect.name != "sqlite":
        return True
    version: tuple[int, ...] = getattr(dialect.dbapi, "sqlite_version_info", (0,))
    return version >= (3, 33)


def _insert_reviews(dialect: sa.Dialect) -> sa.Insert:
    """INSERT of review tasks that skips one whose run and step already have a task."""
    if dialect.name in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        return insert(review_tasks).on_conflict_do_nothing(index_elements=["flow_run_id", "step"])
    return review_tasks.insert()


class RecordWriter:
    """Buffers records in memory and writes them in batches from ONE background thread.

    Record methods are safe to call from any thread and never block. Records
    written after :meth:`close` are ignored. Use the writer from the process
    that created it (the thread does not survive ``fork``).
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        interval: float = 0.02,
        backlog: int = 5000,
        lock: threading.Lock | None = None,
        blobs: BlobStore | None = None,
        blob_threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        """Start the writer thread for ``engine``.

        ``interval`` is the longest a record waits in memory when the writer is
        idle; when more than ``backlog`` records are waiting after a write, the
        next one starts at once. ``lock``, when given, is held around every
        transaction (the store passes one for a shared in-memory SQLite
        connection). ``blobs`` receives output values over ``blob_threshold``
        bytes of JSON, and bytes values; without it every value stays inline
        (bytes as their ``str()``).
        """
        self._engine = engine
        self._interval = interval
        self._backlog = backlog
        self._lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()
        self._blobs = blobs
        self._blob_threshold = blob_threshold
        # JSON text up to this long is stored as it is; longer goes the careful (offloading) way
        self._inline_limit = blob_threshold if blobs is not None else sys.maxsize
        dialect = engine.dialect
        tasks = TaskRecord._fields
        runs = _RUN_FIELDS
        self._insert_runs = BulkStatement("flow_runs.insert", insert_builder(flow_runs, runs), runs, dialect)
        self._insert_tasks = BulkStatement("task_runs.insert", insert_builder(task_runs, tasks), tasks, dialect)
        self._finish_runs = _update_statement("finished", RunFinished._fields, {}, dialect)
        self._resume_runs = _update_statement("resumed", RunResumed._fields, _RESUME_SET, dialect)

        self._started: deque[StartedRow] = deque()
        self._tasks: deque[TaskRow] = deque()
        self._ended: deque[FinishedRow | RunResumed] = deque()  # in the order reported
        self._reviews: deque[ReviewTask] = deque()
        #: Record that a flow run started: a :class:`RunStarted`, or what ``run_started`` builds.
        self.flow_run_started: Callable[[StartedRow], None] = self._started.append
        #: Record that a flow run of an earlier process runs again: a :class:`RunResumed`.
        self.flow_run_resumed: Callable[[RunResumed], None] = self._ended.append
        #: Record the end of a flow run: a :class:`RunFinished`, or what ``run_finished`` builds.
        self.flow_run_finished: Callable[[FinishedRow], None] = self._ended.append
        #: Record one task run: a :class:`TaskRecord`, or what ``task_succeeded`` builds.
        self.task_run: Callable[[TaskRow], None] = self._tasks.append
        #: Record that a run waits at a review step: a :class:`ReviewTask` (before the run's end).
        self.review_task: Callable[[ReviewTask], None] = self._reviews.append
        self._observers: tuple[Observer, ...] = ()
        self._flush_requests: deque[threading.Event] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._closed = False
        self._error_lock = threading.Lock()
        self._error: BaseException | None = None
        self._lost = 0
        self._thread = threading.Thread(target=self._run, name="docpipe-store-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # --- observers ------------------------------------------------------------------

    def observe(self, callback: Observer) -> None:
        """Call ``callback`` with the records of every round written from now on.

        It runs on the writer thread after the round's transaction committed (never for
        records whose write failed), before the next round: keep it short, and take a
        lock for what it shares with other threads. An exception it raises is logged.
        """
        self._observers = (*self._observers, callback)

    def unobserve(self, callback: Observer) -> None:
        """Stop calling ``callback`` (given to :meth:`observe`); nothing if it is not there."""
        self._observers = tuple(c for c in self._observers if c is not callback)

    # --- synchronisation ------------------------------------------------------------

    def pending(self) -> int:
        """How many records are buffered and not yet taken by the writer thread."""
        return len(self._started) + len(self._tasks) + len(self._ended) + len(self._reviews)

    def wait(self) -> None:
        """Block until every record queued so far is written (or its write failed).

        Unlike :meth:`flush`, a write error is left for :meth:`flush` or
        :meth:`close` to report.
        """
        if not self._thread.is_alive():
            return
        done = threading.Event()
        self._flush_requests.append(done)
        self._wake.set()
        while not done.wait(0.5):
            if not self._thread.is_alive():
                return

    def flush(self) -> None:
        """Block until everything queued so far is committed; raise a kept write error."""
        self.wait()
        self._raise_error()
        if self._closed and self.pending():
            raise RuntimeError(f"record writer is closed: {self.pending()} records were not written")

    def close(self) -> None:
        """Write what is buffered, stop the thread and raise a kept write error. Idempotent."""
        if not self._closed:
            self._closed = True
            atexit.unregister(self.close)
            self._closing = True
            self._wake.set()
            self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        """Re-raise (once) the first write error since the last report."""
        with self._error_lock:
            error, lost = self._error, self._lost
            self._error, self._lost = None, 0
        if error is not None:
            if lost:
                error.add_note(f"docpipe store: {lost} run records could not be written")
            raise error

    # --- the writer thread ----------------------------------------------------------

    def _run(self) -> None:
        """Thread body: wait, take the buffers, write them, wake flushers; until closed."""
        try:
            while True:
                if self.pending() < self._backlog:
                    self._wake.wait(self._interval)
                self._wake.clear()
                closing = self._closing
                waiters = _drain(self._flush_requests)
                self._write_pending()
                for done in waiters:
                    done.set()
                if closing:
                    return
        except BaseException as exc:  # noqa: BLE001 -- a bug in the loop: kept for flush()
            self._keep_error(exc, self.pending())
        finally:
            for done in _drain(self._flush_requests):
                done.set()

    def _write_pending(self) -> None:
        """Write everything buffered in one transaction; keep the error if it fails."""
        # Take ended runs first and started ones last: a run whose end is taken
        # now has its start taken now or earlier, never later.
        # a waiting run's review task is reported before its end: taken now or earlier
        ended = _drain(self._ended)
        reviews = _drain(self._reviews) if self._reviews else []
        tasks = _drain(self._tasks)
        started = _drain(self._started)
        if not (ended or tasks or started or reviews):
            return
        try:
            run_rows, to_update = self._run_rows(started, ended)
            task_rows = self._task_rows(tasks) if tasks else []
            updates = self._update_rows(to_update) if to_update else []
            review_rows = [self._review_row(rec) for rec in reviews]
            with self._lock, self._engine.begin() as conn:
                if run_rows:
                    self._insert_runs.execute(conn, run_rows)
                if tasks:
                    self._insert_tasks.execute(conn, task_rows)
                if review_rows:
                    conn.execute(_insert_reviews(conn.dialect), review_rows)
                for statement, rows in updates:
                    statement.execute(conn, rows)
        except Exception as exc:  # noqa: BLE001 -- kept and re-raised by flush()/close()
            self._keep_error(exc, len(ended) + len(tasks) + len(started) + len(reviews))
            return
        if self._observers:
            self._notify(Written(started, tasks, ended, reviews))

    def _notify(self, written: Written) -> None:
        """Hand a committed round to each observer; one that raises is logged, not fatal."""
        for callback in self._observers:
            try:
                callback(written)
            except Exception:  # noqa: BLE001 -- an observer's bug must not stop the writes
                log.exception("record writer observer %r failed", callback)

    def _run_rows(
        self, started: list[StartedRow], ended: list[FinishedRow | RunResumed]
    ) -> tuple[list[Row], list[FinishedRow | RunResumed]]:
        """The rows to insert for ``started`` runs, and the ended records left to update.

        A run that started and finished since the last write (most do) is
        inserted finished: one row written instead of a row and an update. Its
        later records, if any, are updates applied after, in order.
        """
        if not ended:
            return [rec + _RUNNING for rec in started], ended
        first: dict[str, tuple[int, FinishedRow | RunResumed]] = {}
        for i, end in enumerate(ended):
            first.setdefault(end[0], (i, end))
        rows: list[Row] = []
        merged: set[int] = set()
        for start in started:
            found = first.get(start[0])
            if found is None or isinstance(found[1], RunResumed):
                rows.append(start + _RUNNING)
            else:
                rows.append(start + self._finish_row(found[1])[1:])
                merged.add(found[0])
        return rows, [end for i, end in enumerate(ended) if i not in merged] if merged else ended

    def _task_rows(self, tasks: list[TaskRow]) -> list[Row]:
        """Task-run rows: the records, their outputs as JSON text (or ``None``)."""
        rows: list[Row] = []
        append, limit = rows.append, self._inline_limit
        for rec in tasks:  # a plain loop: this runs once per task, keep it lean
            row: Row = rec
            error, outputs = rec[_TASK_ERROR], rec[_TASK_OUTPUTS]
            if error is not None and not (error.isascii() and (rec[_TASK_TRACEBACK] or "").isascii()):
                row = _clean(rec, _TASK_ERROR, _TASK_TRACEBACK)  # quotes a file name that is not UTF-8
            if outputs is None or outputs.__class__ is str and len(outputs) <= limit:
                append(row)  # the usual case: the record is the row
                continue
            text = self._text(outputs, f"task run {rec[_TASK_RUN_ID]!r} step {rec[_TASK_STEP]!r}")
            append(row[:_TASK_OUTPUTS] + (text,))
        return rows

    def _finish_row(self, rec: FinishedRow) -> Row:
        """A finished run's row, its outputs as JSON text (or ``None``)."""
        row: Row = rec
        error, outputs = rec[_FINISH_ERROR], rec[_FINISH_OUTPUTS]
        if error is not None and not error.isascii():
            row = _clean(rec, _FINISH_ERROR)
        if outputs is None or outputs.__class__ is str and len(outputs) <= self._inline_limit:
            return row
        text = self._text(outputs, f"flow run {rec[_FINISH_RUN_ID]!r}")
        return row[:_FINISH_OUTPUTS] + (text,)

    def _update_rows(self, ended: list[FinishedRow | RunResumed]) -> list[tuple[BulkStatement, list[Row]]]:
        """The updates of ended runs, (statement, rows) in the order reported.

        A run whose outputs cannot be encoded is still finished, with no
        outputs; the error is kept for :meth:`flush`.
        """
        out: list[tuple[BulkStatement, list[Row]]] = []
        for rec in ended:
            row: Row
            if isinstance(rec, RunResumed):
                statement, row = self._resume_runs, rec
            else:
                statement, row = self._finish_runs, self._finish_row(rec)
            if out and out[-1][0] is statement:
                out[-1][1].append(row)
            else:
                out.append((statement, [row]))
        return out

    def _review_row(self, rec: ReviewTask) -> dict[str, Any]:
        """A review task's row (``waiting``), its proposal as JSON text (large values as blobs)."""
        row = {**rec._asdict(), "status": Status.WAITING.value}
        row["proposal"] = self._text(rec.proposal, f"review task {rec.id!r}") if rec.proposal else None
        return row

    def _text(self, outputs: str | dict[str, Any], what: str) -> str | None:
        """JSON text of outputs that are not yet short JSON text: a dict (not encoded when its
        record was built, or with bytes), or text too long to stay inline.

        Large values and bytes go to the blob store. ``None``, and an error
        naming ``what`` kept for :meth:`flush`, if they cannot be stored.
        """
        try:
            text = encode_outputs(outputs)  # a record built by hand: the fast way first
            if text.__class__ is str and len(text) <= self._inline_limit:
                return text
            value = json.loads(outputs) if isinstance(outputs, str) else outputs
            if self._blobs is None:
                return _encode_json(value)
            return _encode_json(offload(value, self._blobs, self._blob_threshold))
        except _ENCODE_ERRORS as exc:
            problem = ValueError(f"outputs of {what} cannot be stored: {exc}")
            problem.__cause__ = exc
            self._keep_error(problem, 0)
            return None

    def _keep_error(self, exc: BaseException, lost: int) -> None:
        """Remember the first error and count the records it cost."""
        with self._error_lock:
            if self._error is None:
                self._error = exc
            self._lost += lost
