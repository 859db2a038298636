"""The run-record store: flows, batches, flow runs and task runs, on SQLAlchemy Core.

SQLite by default (``sqlite:///.docpipe/docpipe.db`` under the current
directory, or whatever ``DOCPIPE_DB`` names); PostgreSQL when the URL points at
one. Only portable SQL is used; the SQLite PRAGMAs (WAL, ``synchronous=NORMAL``,
a 30 s busy timeout, foreign keys on) are applied only on SQLite connections.

Flows and batches are written synchronously (a handful per run). Flow runs and
task runs go through :attr:`Store.writer`, a :class:`RecordWriter` that buffers
them in memory and writes them in bulk from one background thread. Every query
first waits for the writer, so it sees all records reported before it.

    store = Store()
    flow_id = store.put_flow("invoices", "1.0", digest, definition)
    batch_id = store.start_batch(flow_id, params={}, n_inputs=len(docs))
    store.writer.flow_run_started(run_id, batch_id, flow_id, "a.pdf", time.time())
    store.writer.task_run((run_id, "ocr", "ocr.tesseract", 1, "ok", t0, t1, "pid:42", None, None,
                           None))
    store.writer.flow_run_finished(run_id, "ok", None, None, time.time(), {"text": "..."})
    store.finish_batch(batch_id, "ok", {"ok": 1})
    store.close()
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from docpipe.store.schema import batches, flow_runs, flows, metadata, task_runs
from docpipe.store.writer import RecordWriter

__all__ = ["DEFAULT_URL", "RecordWriter", "Store", "metadata", "new_id"]

#: Where the store lives when neither the caller nor ``DOCPIPE_DB`` says otherwise.
DEFAULT_URL = "sqlite:///.docpipe/docpipe.db"

_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout = 30000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA cache_size = -65536",  # up to 64 MiB of pages: index inserts stay in memory
)

# The columns every flow-run listing shows, labelled as the dicts name them.
_RUN_COLUMNS = (
    flow_runs.c.id,
    flow_runs.c.batch_id,
    flows.c.name.label("flow"),
    flows.c.version.label("flow_version"),
    flow_runs.c.document,
    flow_runs.c.status,
    flow_runs.c.error_kind,
    flow_runs.c.error,
    flow_runs.c.started_at,
    flow_runs.c.finished_at,
)
_RUNS_WITH_FLOW = flow_runs.join(flows, flow_runs.c.flow_id == flows.c.id)


def new_id() -> str:
    """A new run id: 32 hex digits of a UUIDv7, so ids sort by creation time.

    Use it for flow-run ids. Random ids (uuid4) scatter every insert across the
    whole ``flow_runs.id`` and ``task_runs.flow_run_id`` indexes; time-ordered
    ones append at their end, which keeps bulk writes fast as the store grows.
    """
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 random bits, 74 used
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80  # 48-bit Unix time in milliseconds
        | 0x7 << 76  # version 7
        | (rand >> 68) << 64  # 12 random bits
        | 0b10 << 62  # RFC 9562 variant
        | rand & (1 << 62) - 1  # 62 random bits
    )
    return f"{value:032x}"


class Store:
    """Run records in a relational database; see the module docstring."""

    url: str
    engine: sa.Engine
    writer: RecordWriter

    def __init__(self, url: str | None = None) -> None:
        """Open (and create if needed) the store at ``url``.

        ``None`` means ``$DOCPIPE_DB``, else :data:`DEFAULT_URL` (relative to the
        current directory; its folder is created).
        """
        self.url = url or os.environ.get("DOCPIPE_DB") or DEFAULT_URL
        self.engine, shared = _create_engine(self.url)
        # A single shared in-memory connection must not interleave transactions.
        self._lock: threading.Lock | None = threading.Lock() if shared else None
        _create_schema(self.engine)
        self.writer = RecordWriter(self.engine, lock=self._lock)

    def __repr__(self) -> str:
        """``Store('sqlite:///...')`` with any password hidden."""
        return f"Store({sa.make_url(self.url).render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Store:
        """Use the store as a context manager; it is closed on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store."""
        self.close()

    def close(self) -> None:
        """Flush and stop the writer (raising a kept write error), then dispose the engine."""
        try:
            self.writer.close()
        finally:
            self.engine.dispose()

    # --- synchronous writes ------------------------------------------------------------

    def put_flow(self, name: str, version: str, content_hash: str, definition: Mapping[str, Any]) -> int:
        """Store a flow definition once per (name, version, content hash); return its id."""
        find = sa.select(flows.c.id).where(
            flows.c.name == name, flows.c.version == version, flows.c.content_hash == content_hash
        )
        with self._connect() as conn:
            found = conn.execute(find).scalar()
        if found is not None:
            return int(found)
        row = {
            "name": name,
            "version": version,
            "content_hash": content_hash,
            "definition": json.dumps(definition, default=str),
            "created_at": time.time(),
        }
        try:
            with self._begin() as conn:
                conn.execute(flows.insert().values(row))
        except sa.exc.IntegrityError:  # another process stored it in between: fine
            pass
        with self._connect() as conn:
            return int(conn.execute(find).scalar_one())

    def start_batch(
        self,
        flow_id: int,
        params: Mapping[str, Any],
        n_inputs: int,
        argv: list[str] | None = None,
    ) -> str:
        """Record the start of one ``docpipe run`` invocation; return its id (uuid4 hex)."""
        batch_id = uuid.uuid4().hex
        row = {
            "id": batch_id,
            "flow_id": flow_id,
            "status": "running",
            "params": json.dumps(params, default=str),
            "argv": None if argv is None else json.dumps(list(argv)),
            "n_inputs": n_inputs,
            "started_at": time.time(),
        }
        with self._begin() as conn:
            conn.execute(batches.insert().values(row))
        return batch_id

    def finish_batch(self, batch_id: str, status: str, counts: Mapping[str, int]) -> None:
        """Record the end of batch ``batch_id``, once the writer has written its runs."""
        self.writer.wait()
        values = {"status": status, "counts": json.dumps(dict(counts)), "finished_at": time.time()}
        with self._begin() as conn:
            result = conn.execute(batches.update().where(batches.c.id == batch_id).values(values))
        if result.rowcount == 0:
            raise KeyError(f"no batch {batch_id!r} in {self!r}")

    # --- queries ----------------------------------------------------------------------

    def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        batch_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Flow runs, newest first, optionally filtered by status, flow name and batch.

        Each dict has ``id, batch_id, flow, flow_version, document, status,
        error_kind, error, started_at, finished_at, duration``.
        """
        query = sa.select(*_RUN_COLUMNS).select_from(_RUNS_WITH_FLOW)
        if status is not None:
            query = query.where(flow_runs.c.status == status)
        if flow is not None:
            query = query.where(flows.c.name == flow)
        if batch_id is not None:
            query = query.where(flow_runs.c.batch_id == batch_id)
        query = query.order_by(flow_runs.c.started_at.desc(), flow_runs.c.seq.desc()).limit(limit).offset(offset)
        return [_with_duration(row) for row in self._query(query)]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One flow run with its ``flow_id``, decoded ``outputs`` and ``tasks``, or ``None``.

        ``tasks`` are ordered by ``started_at`` (then insertion) and have ``step,
        block, attempt, status, started_at, finished_at, duration, worker,
        error_kind, error, traceback``.
        """
        run_query = (
            sa.select(*_RUN_COLUMNS, flow_runs.c.flow_id, flow_runs.c.outputs)
            .select_from(_RUNS_WITH_FLOW)
            .where(flow_runs.c.id == run_id)
        )
        task_query = (
            sa.select(
                task_runs.c.step,
                task_runs.c.block,
                task_runs.c.attempt,
                task_runs.c.status,
                task_runs.c.started_at,
                task_runs.c.finished_at,
                task_runs.c.worker,
                task_runs.c.error_kind,
                task_runs.c.error,
                task_runs.c.traceback,
            )
            .where(task_runs.c.flow_run_id == run_id)
            .order_by(task_runs.c.started_at, task_runs.c.id)
        )
        self.writer.wait()
        with self._connect() as conn:
            found = conn.execute(run_query).mappings().first()
            if found is None:
                return None
            tasks = [_with_duration(row) for row in conn.execute(task_query).mappings()]
        run = _with_duration(found)
        run["outputs"] = _loads(run["outputs"])
        run["tasks"] = tasks
        return run

    def list_batches(self, limit: int = 50) -> list[dict[str, Any]]:
        """Batches, newest first, with their flow and decoded ``params``, ``argv``, ``counts``."""
        query = (
            sa.select(
                batches.c.id,
                batches.c.flow_id,
                flows.c.name.label("flow"),
                flows.c.version.label("flow_version"),
                batches.c.status,
                batches.c.params,
                batches.c.argv,
                batches.c.n_inputs,
                batches.c.counts,
                batches.c.started_at,
                batches.c.finished_at,
            )
            .select_from(batches.join(flows, batches.c.flow_id == flows.c.id))
            .order_by(batches.c.started_at.desc())
            .limit(limit)
        )
        out = []
        for row in self._query(query):
            batch = _with_duration(row)
            for key in ("params", "argv", "counts"):
                batch[key] = _loads(batch[key])
            out.append(batch)
        return out

    def batch_outputs(self, batch_id: str) -> list[dict[str, Any]]:
        """Every flow run of batch ``batch_id`` in insertion order, with decoded ``outputs``.

        Each dict has ``id, document, status, error_kind, error, outputs,
        started_at, finished_at, duration``.
        """
        query = (
            sa.select(
                flow_runs.c.id,
                flow_runs.c.document,
                flow_runs.c.status,
                flow_runs.c.error_kind,
                flow_runs.c.error,
                flow_runs.c.outputs,
                flow_runs.c.started_at,
                flow_runs.c.finished_at,
            )
            .where(flow_runs.c.batch_id == batch_id)
            .order_by(flow_runs.c.seq)
        )
        out = []
        for row in self._query(query):
            run = _with_duration(row)
            run["outputs"] = _loads(run["outputs"])
            out.append(run)
        return out

    # --- connections ------------------------------------------------------------------

    def _query(self, query: sa.Select[Any]) -> list[sa.RowMapping]:
        """Wait for the writer, then run ``query`` and return its rows as mappings."""
        self.writer.wait()
        with self._connect() as conn:
            return list(conn.execute(query).mappings())

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        """A connection (holding the shared-connection lock, if any)."""
        with self._lock or nullcontext(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """A connection in a transaction committed on exit (holding the lock, if any)."""
        with self._lock or nullcontext(), self.engine.begin() as conn:
            yield conn


def _create_engine(url: str) -> tuple[sa.Engine, bool]:
    """An engine for ``url``, and whether all threads share one in-memory connection."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True), False
    database = parsed.database or ""
    memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if memory:
        engine = sa.create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        if not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed)
    sa.event.listen(engine, "connect", _on_sqlite_connect)
    sa.event.listen(engine, "begin", _on_sqlite_begin)
    return engine, memory


def _on_sqlite_connect(dbapi_connection: Any, _record: object) -> None:
    """Apply the SQLite PRAGMAs, and leave transactions to SQLAlchemy.

    Python's ``sqlite3`` only opens a transaction implicitly before statements
    that start with INSERT/UPDATE/DELETE/REPLACE (not before ``WITH ... UPDATE``);
    turning that off and emitting BEGIN on SQLAlchemy's ``begin`` makes every
    ``engine.begin()`` block one real transaction (the pattern SQLAlchemy
    documents for pysqlite).
    """
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_sqlite_begin(conn: sa.Connection) -> None:
    """Open the transaction SQLAlchemy is beginning (see :func:`_on_sqlite_connect`)."""
    conn.exec_driver_sql("BEGIN")


def _create_schema(engine: sa.Engine, attempts: int = 5) -> None:
    """Create missing tables; retry if another process creates them at the same moment."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _with_duration(row: Mapping[Any, Any]) -> dict[str, Any]:
    """``row`` as a dict plus ``duration`` (finished_at - started_at, or ``None``)."""
    out = dict(row)
    started, finished = out.get("started_at"), out.get("finished_at")
    out["duration"] = None if started is None or finished is None else finished - started
    return out


def _loads(text: str | None) -> Any:
    """Decode stored JSON text; ``None`` stays ``None``."""
    return None if text is None else json.loads(text)
