"""The record writer: run records buffered in memory, written in bulk by one thread.

The engine reports every flow run and task run here, on its hot path. Each
record method only appends a tuple to a :class:`collections.deque` (atomic under
the GIL: no lock, no SQL, no dict building). One background thread wakes every
``interval`` seconds, takes everything buffered and writes it in a single
transaction: inserts of started flow runs, inserts of task runs, then updates
of finished flow runs (so a run that starts and finishes between two wake-ups is
inserted before it is updated). Each kind goes through a
:class:`~docpipe.store.bulk.BulkStatement`: a few hundred rows per statement.

A failed write is never swallowed: the first exception is kept and re-raised,
with a note saying how many records were lost, by the next :meth:`flush` or
:meth:`close`.
"""

from __future__ import annotations

import atexit
import json
import threading
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import sqlalchemy as sa

from docpipe.store.bulk import Builder, BulkStatement, Row, row_binds
from docpipe.store.schema import (
    FLOW_RUN_FINISH_FIELDS,
    FLOW_RUN_START_FIELDS,
    TASK_RUN_FIELDS,
    flow_runs,
    task_runs,
)

T = TypeVar("T")

#: Outputs to JSON text; one reusable encoder (``json.dumps(..., default=str)``
#: builds a new one per call, several times slower).
_encode_json = json.JSONEncoder(default=str).encode


def _drain(buffer: deque[T]) -> list[T]:
    """Pop what ``buffer`` holds now; appends racing with this stay for next time."""
    pop = buffer.popleft
    return [pop() for _ in range(len(buffer))]


def _insert_builder(table: sa.Table, fields: tuple[str, ...]) -> Builder:
    """Builds the multi-row INSERT of ``fields`` into ``table`` for ``k`` rows."""

    def build(k: int) -> sa.ClauseElement:
        return table.insert().values([row_binds(fields, i) for i in range(k)])

    return build


def _finish_builder(k: int) -> sa.ClauseElement:
    """``WITH v AS (VALUES ...) UPDATE flow_runs SET ... FROM v WHERE id = v.id``, ``k`` rows."""
    columns = [sa.column(name, flow_runs.c[name].type) for name in FLOW_RUN_FINISH_FIELDS]
    rows = [tuple(sa.bindparam(f"{c.name}_{i}", type_=c.type) for c in columns) for i in range(k)]
    v = sa.values(*columns, name="finished").data(rows).cte("finished")
    values = {name: v.c[name] for name in FLOW_RUN_FINISH_FIELDS if name != "id"}
    return flow_runs.update().values(values).where(flow_runs.c.id == v.c.id)


def _finish_one_builder(k: int) -> sa.ClauseElement:
    """The one-row UPDATE of a finished run (``k`` is always 1), for SQLite < 3.33."""
    binds = row_binds(FLOW_RUN_FINISH_FIELDS, 0)
    key = binds.pop("id")
    return flow_runs.update().where(flow_runs.c.id == key).values(binds)


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
    ) -> None:
        """Start the writer thread for ``engine``.

        ``interval`` is the longest a record waits in memory when the writer is
        idle; when more than ``backlog`` records are waiting after a write, the
        next one starts at once. ``lock``, when given, is held around every
        transaction (the store passes one for a shared in-memory SQLite
        connection).
        """
        self._engine = engine
        self._interval = interval
        self._backlog = backlog
        self._lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()
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
        if _supports_update_from(dialect):
            self._finish_runs = BulkStatement("flow_runs.finish", _finish_builder, FLOW_RUN_FINISH_FIELDS, dialect)
        else:
            self._finish_runs = BulkStatement(
                "flow_runs.finish1",
                _finish_one_builder,
                FLOW_RUN_FINISH_FIELDS,
                dialect,
                max_rows=1,
            )

        self._started: deque[Row] = deque()
        self._tasks: deque[Row] = deque()
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

    def flow_run_started(self, run_id: str, batch_id: str, flow_id: int, document: str, started_at: float) -> None:
        """Record that flow run ``run_id`` of ``document`` started (status ``running``)."""
        self._started.append((run_id, batch_id, flow_id, document, "running", started_at))

    def flow_run_finished(
        self,
        run_id: str,
        status: str,
        error_kind: str | None,
        error: str | None,
        finished_at: float,
        outputs: dict[str, Any],
    ) -> None:
        """Record the end of flow run ``run_id``.

        ``outputs`` is stored as JSON text (``default=str``), encoded later on
        the writer thread: do not mutate it after this call.
        """
        self._finished.append((run_id, status, error_kind, error, finished_at, outputs))

    def task_run(self, rec: tuple[Any, ...]) -> None:
        """Record one task run.

        ``rec`` is ``(flow_run_id, step, block, attempt, status, started_at,
        finished_at, worker, error_kind, error, traceback)``; times are float
        epoch seconds, ``worker`` a label such as ``"thread-3"`` or ``None``.
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
            with self._lock, self._engine.begin() as conn:
                if started:
                    self._insert_runs.execute(conn, started)
                if tasks:
                    self._insert_tasks.execute(conn, tasks)
                if finished:
                    self._finish_runs.execute(conn, self._encode_outputs(finished))
        except Exception as exc:  # noqa: BLE001 -- kept and re-raised by flush()/close()
            self._keep_error(exc, len(finished) + len(tasks) + len(started))

    def _encode_outputs(self, finished: list[Row]) -> list[Row]:
        """Finished-run tuples with the outputs (the last item) turned into JSON text.

        A run whose outputs cannot be encoded is still finished, with no
        outputs; the error is kept for :meth:`flush`.
        """
        encode = _encode_json
        rows = []
        for run_id, status, error_kind, error, finished_at, outputs in finished:
            try:
                text: str | None = encode(outputs)
            except (TypeError, ValueError, RuntimeError) as exc:
                problem = ValueError(f"outputs of flow run {run_id!r} cannot be stored: {exc}")
                problem.__cause__ = exc
                self._keep_error(problem, 0)
                text = None
            rows.append((run_id, status, error_kind, error, finished_at, text))
        return rows

    def _keep_error(self, exc: BaseException, lost: int) -> None:
        """Remember the first error and count the records it cost."""
        with self._error_lock:
            if self._error is None:
                self._error = exc
            self._lost += lost
