"""The record writer: run records buffered in memory, written in bulk by one thread.

The engine reports every flow run and task run here, on its hot path. Each
record method only appends a tuple to a :class:`collections.deque` (atomic under
the GIL: no lock, no SQL, no dict building, no encoding). One background thread
wakes every ``interval`` seconds, takes everything buffered and writes it in a
single transaction: inserts of started flow runs, updates of resumed ones,
inserts of task runs, then updates of finished flow runs (so a run that starts
and finishes between two wake-ups is inserted before it is updated). Each kind
goes through a :class:`~docpipe.store.bulk.BulkStatement`: a few hundred rows
per statement.

Outputs (of a task, of a flow run) are encoded to JSON on the writer thread.
With a :class:`~docpipe.blobs.BlobStore`, bytes and any top-level value whose
JSON is longer than ``blob_threshold`` are written there first and the row
holds a reference (:func:`docpipe.blobs.offload`); the common case (small
outputs, no bytes) costs one ``encode`` call.

A failed write is never swallowed: the first exception is kept and re-raised,
with a note saying how many records were lost, by the next :meth:`flush` or
:meth:`close`.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import sqlalchemy as sa

from docpipe.blobs import DEFAULT_THRESHOLD, BlobStore, offload
from docpipe.inputs import clean_text
from docpipe.status import Status
from docpipe.store.bulk import Builder, BulkStatement, Row, row_binds
from docpipe.store.schema import (
    FLOW_RUN_FINISH_FIELDS,
    FLOW_RUN_RESUME_FIELDS,
    FLOW_RUN_START_FIELDS,
    TASK_RUN_FIELDS,
    flow_runs,
    task_runs,
)

T = TypeVar("T")

#: Outputs to JSON text; one reusable encoder (``json.dumps(..., default=str)``
#: builds a new one per call, several times slower).
_encode_json = json.JSONEncoder(default=str).encode


class _HasBytes(Exception):
    """Raised by :func:`_no_bytes` to leave the fast encoding path."""


def _no_bytes(value: object) -> str:
    """``default`` of the fast-path encoder: ``str()``, but bytes go the blob path."""
    if isinstance(value, bytes | bytearray | memoryview):
        raise _HasBytes
    return str(value)


def _fast_encoder() -> Callable[[Any], str]:
    """JSON text of small outputs: the C encoder ``json.dumps`` uses, made ONCE.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which costs
    more than encoding a small dict; the writer encodes one per task run. No
    cycle check (a cycle raises ``RecursionError`` and the careful path names
    it); bytes raise :class:`_HasBytes`; the rest is ``str()``-ed.
    """
    from json import encoder

    make = getattr(encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (not CPython)
        return json.JSONEncoder(default=_no_bytes, check_circular=False).encode
    iterencode = make(None, _no_bytes, encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    join = "".join
    return lambda value: join(iterencode(value, 0))


_encode_fast = _fast_encoder()


def _clean_error(rec: Row, at: int) -> Row:
    """``rec`` with its error text (at ``at``) and, for a task, traceback (after it) storable:
    a lone surrogate (an undecodable file name quoted in a message) shown as ``\xff``."""
    out = list(rec)
    for i in (at, at + 1) if len(rec) > 7 else (at,):
        if isinstance(out[i], str):
            out[i] = clean_text(out[i])
    return tuple(out)
_NO_OUTPUTS = (None,)
_ENCODE_ERRORS = (TypeError, ValueError, RuntimeError, OSError)


def _drain(buffer: deque[T]) -> list[T]:
    """Pop what ``buffer`` holds now; appends racing with this stay for next time."""
    pop = buffer.popleft
    return [pop() for _ in range(len(buffer))]


def _insert_builder(table: sa.Table, fields: tuple[str, ...]) -> Builder:
    """Builds the multi-row INSERT of ``fields`` into ``table`` for ``k`` rows."""

    def build(k: int) -> sa.ClauseElement:
        return table.insert().values([row_binds(fields, i) for i in range(k)])

    return build


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
        self._insert_runs = BulkStatement(
            "flow_runs.insert",
            _insert_builder(flow_runs, FLOW_RUN_START_FIELDS),
            FLOW_RUN_START_FIELDS,
            dialect,
        )
        self._insert_tasks = BulkStatement(
            "task_runs.insert",
            _insert_builder(task_runs, TASK_RUN_FIELDS),
            TASK_RUN_FIELDS,
            dialect,
        )
        self._finish_runs = _update_statement("finished", FLOW_RUN_FINISH_FIELDS, {}, dialect)
        self._resume_runs = _update_statement("resumed", FLOW_RUN_RESUME_FIELDS, _RESUME_SET, dialect)

        self._started: deque[Row] = deque()
        self._tasks: deque[Row] = deque()
        # Finished AND resumed runs, in the order reported: a run may finish, be resumed
        # and finish again between two writes. A resume is a 2-tuple, a finish a 7-tuple.
        self._finished: deque[Row] = deque()
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

    # --- the hot path: append a tuple, nothing else -----------------------------------

    def flow_run_started(
        self,
        run_id: str,
        batch_id: str,
        flow_id: int,
        document: str,
        started_at: float,
        correlation_id: str | None = None,
    ) -> None:
        """Record that flow run ``run_id`` of ``document`` started (status ``running``, attempt 1)."""
        self._started.append((run_id, batch_id, flow_id, document, Status.RUNNING, started_at, correlation_id))

    def flow_run_resumed(self, run_id: str, started_at: float) -> None:
        """Record that flow run ``run_id`` (of an earlier process) runs again.

        Its status goes back to ``running``, ``attempt`` goes up by one,
        ``started_at`` becomes this time and its end (``finished_at``, error,
        outputs) is cleared. Its task runs stay: they are the history.
        """
        self._finished.append((run_id, started_at))

    def flow_run_finished(
        self,
        run_id: str,
        status: str,
        error_kind: str | None,
        error: str | None,
        finished_at: float,
        outputs: dict[str, Any],
        failed_step: str | None = None,
    ) -> None:
        """Record the end of flow run ``run_id`` (``failed_step``: where a failed run failed).

        ``outputs`` is stored as JSON text (``default=str``; large values and
        bytes as blob references), encoded later on the writer thread: do not
        mutate it after this call.
        """
        self._finished.append((run_id, status, error_kind, error, failed_step, finished_at, outputs))

    def task_run(self, rec: tuple[Any, ...]) -> None:
        """Record one task run.

        ``rec`` is ``(flow_run_id, step, block, attempt, status, started_at,
        finished_at, worker, error_kind, error, traceback, outputs)``; times are
        float epoch seconds, ``worker`` a label such as ``"thread-3"`` or
        ``None``, ``outputs`` the state keys the step wrote (a dict, encoded
        like a flow run's, later: do not mutate it) or ``None``. The 11 fields
        without ``outputs`` are accepted too (no outputs stored).
        """
        self._tasks.append(rec)

    # --- synchronisation ------------------------------------------------------------

    def pending(self) -> int:
        """How many records are buffered and not yet taken by the writer thread."""
        return len(self._started) + len(self._tasks) + len(self._finished)

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
        # Take finished records first and started ones last: a run whose finish
        # is taken now has its start taken now or earlier, never later.
        finished = _drain(self._finished)
        tasks = _drain(self._tasks)
        started = _drain(self._started)
        if not (finished or tasks or started):
            return
        try:
            task_rows = self._task_rows(tasks) if tasks else tasks
            updates = self._update_rows(finished) if finished else []
            with self._lock, self._engine.begin() as conn:
                if started:
                    self._insert_runs.execute(conn, started)
                if tasks:
                    self._insert_tasks.execute(conn, task_rows)
                for statement, rows in updates:
                    statement.execute(conn, rows)
        except Exception as exc:  # noqa: BLE001 -- kept and re-raised by flush()/close()
            self._keep_error(exc, len(finished) + len(tasks) + len(started))

    def _task_rows(self, tasks: list[Row]) -> list[Row]:
        """Task-run tuples with 12 fields, the outputs turned into JSON text (or ``None``)."""
        rows: list[Row] = []
        append, fast, limit = rows.append, _encode_fast, self._inline_limit
        for rec in tasks:  # a plain loop: this runs once per task, keep it lean
            if rec[9] is not None and not (rec[9].isascii() and (rec[10] or "").isascii()):
                rec = _clean_error(rec, 9)  # a message quoting a file name that is not UTF-8
            if len(rec) == 11:
                append(rec + _NO_OUTPUTS)
                continue
            outputs = rec[11]
            if outputs is None:
                append(rec)
                continue
            try:
                text: str | None = fast(outputs)
            except Exception:  # noqa: BLE001 -- bytes, or not encodable: the careful path sorts it out
                text = None
            if text is None or len(text) > limit:
                text = self._encode(rec, "task run")
            append(rec[:11] + (text,))
        return rows

    def _finish_row(self, rec: Row) -> Row:
        """A finished-run tuple with its outputs (the last item) as JSON text, or ``None``."""
        if rec[3] is not None and not rec[3].isascii():
            rec = _clean_error(rec, 3)
        outputs = rec[-1]
        try:
            text: str | None = _encode_fast(outputs)
        except Exception:  # noqa: BLE001 -- bytes, or not encodable: the careful path sorts it out
            text = None
        if text is None or len(text) > self._inline_limit:
            text = self._encode(rec, "flow run")
        return rec[:-1] + (text,)

    def _update_rows(self, finished: list[Row]) -> list[tuple[BulkStatement, list[Row]]]:
        """The updates of finished and resumed runs: (statement, rows) in the order reported.

        Finish tuples get their outputs (the last item) as JSON text. A run
        whose outputs cannot be encoded is still finished, with no outputs;
        the error is kept for :meth:`flush`.
        """
        finish = self._finish_row
        if all(len(rec) != 2 for rec in finished):  # the usual case: no resumes
            return [(self._finish_runs, [finish(rec) for rec in finished])]
        out: list[tuple[BulkStatement, list[Row]]] = []
        for rec in finished:
            statement = self._resume_runs if len(rec) == 2 else self._finish_runs
            row = rec if len(rec) == 2 else finish(rec)
            if out and out[-1][0] is statement:
                out[-1][1].append(row)
            else:
                out.append((statement, [row]))
        return out

    def _encode(self, rec: Row, what: str) -> str | None:
        """The careful path: JSON text of the outputs (last item) of ``rec``, large values and
        bytes offloaded; ``None`` and a kept error if impossible."""
        outputs = rec[-1]
        try:
            if self._blobs is None:
                return _encode_json(outputs)
            return _encode_json(offload(outputs, self._blobs, self._blob_threshold))
        except _ENCODE_ERRORS as exc:
            where = f"{rec[0]!r}" if what == "flow run" else f"{rec[0]!r} step {rec[1]!r}"
            problem = ValueError(f"outputs of {what} {where} cannot be stored: {exc}")
            problem.__cause__ = exc
            self._keep_error(problem, 0)
            return None

    def _keep_error(self, exc: BaseException, lost: int) -> None:
        """Remember the first error and count the records it cost."""
        with self._error_lock:
            if self._error is None:
                self._error = exc
            self._lost += lost
