"""The run-record store: flows, batches, flow runs and task runs, on SQLAlchemy Core.

SQLite by default (``sqlite:///.docpipe/docpipe.db`` under the current
directory, or whatever ``DOCPIPE_DB`` names); PostgreSQL (psycopg 3:
``postgresql+psycopg://user@host/db``) when the URL points at one. Only portable
SQL is used; the SQLite PRAGMAs (WAL, ``synchronous=NORMAL``, a 30 s busy
timeout, foreign keys on) are applied only on SQLite connections. Opening a
store brings its schema to this docpipe's with the Alembic migrations
(:mod:`docpipe.store.migrate`), so a newer docpipe opens an older database.

Flows and batches are written synchronously (a handful per run). Flow runs and
task runs are reported to :attr:`Store.writer`, a :class:`RecordWriter` that
buffers them in memory and writes them in bulk from one background thread, as
the named records of :mod:`docpipe.store.records`. Every query first waits for
the writer, so it sees all records reported before it.

Large output values (JSON over ``blob_threshold`` bytes, 64 KiB by default) and
bytes go to :attr:`Store.blobs`, a content-addressed :class:`~docpipe.blobs.BlobStore`
(``$DOCPIPE_BLOBS``, else ``blobs/`` next to a SQLite file, else ``.docpipe/blobs``);
rows hold references that every query resolves unless told not to.

    store = Store()
    flow_id = store.put_flow("invoices", "1.0", digest, definition)
    batch_id = store.start_batch(flow_id, params={}, n_inputs=len(docs), inputs=docs)
    store.writer.flow_run_started(RunStarted(run_id, batch_id, flow_id, "a.pdf", started_at=time.time()))
    store.writer.task_run(task_succeeded(run_id, "ocr", "ocr.tesseract", 1, t0, t1, "pid:42", {"text": "..."}))
    store.writer.flow_run_finished(RunFinished(run_id, Status.SUCCEEDED, time.time(), outputs={"text": "..."}))
    store.finish_batch(batch_id, Status.SUCCEEDED, {Status.SUCCEEDED: 1})
    store.close()

Review tasks (runs waiting for a person) are :attr:`Store.reviews`, a
:class:`~docpipe.store.review.ReviewTasks`: the queue, claims with a lease, answers.

After a crash, :meth:`Store.resume_state` says what each document's run had
finished, step by step, with the outputs to carry on from.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from docpipe.blobs import DEFAULT_THRESHOLD, BlobStore, resolve
from docpipe.inputs import display_path, from_raw_name, raw_name
from docpipe.status import Status
from docpipe.store.bulk import BulkStatement, insert_builder
from docpipe.store.connect import create_engine, default_blob_dir
from docpipe.store.jobs import JobQueue
from docpipe.store.migrate import StoreSchemaError, upgrade
from docpipe.store.outbox import Outbox
from docpipe.store.records import RunFinished, RunResumed, RunStarted, TaskRecord, task_succeeded
from docpipe.store.review import ReviewTasks
from docpipe.store.schema import batch_inputs, batches, flow_runs, flows, metadata, task_runs
from docpipe.store.writer import RecordWriter

__all__ = [
    "DEFAULT_URL",
    "RecordWriter",
    "ReviewTasks",
    "RunFinished",
    "RunResumed",
    "RunStarted",
    "Store",
    "StoreSchemaError",
    "TaskRecord",
    "metadata",
    "new_id",
    "task_succeeded",
]

_INPUT_FIELDS = ("batch_id", "seq", "document", "document_raw", "correlation_id")
#: inputs written (and read back) per statement: a batch of a million costs no more memory than one of 10,000
INPUT_CHUNK = 10_000

#: Where the store lives when neither the caller nor ``DOCPIPE_DB`` says otherwise.
DEFAULT_URL = "sqlite:///.docpipe/docpipe.db"

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
    flow_runs.c.failed_step,
    flow_runs.c.started_at,
    flow_runs.c.finished_at,
    flow_runs.c.correlation_id,
    flow_runs.c.attempt,
)
_RUNS_WITH_FLOW = flow_runs.join(flows, flow_runs.c.flow_id == flows.c.id)
_BATCH_COLUMNS = (
    batches.c.id,
    batches.c.flow_id,
    flows.c.name.label("flow"),
    flows.c.version.label("flow_version"),
    batches.c.status,
    batches.c.params,
    batches.c.argv,
    batches.c.n_inputs,
    batches.c.counts,
    batches.c.correlation_id,
    batches.c.subflows,
    batches.c.started_at,
    batches.c.finished_at,
)
_BATCHES_WITH_FLOW = batches.join(flows, batches.c.flow_id == flows.c.id)
_TASK_COLUMNS = (
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
    task_runs.c.outputs,
    task_runs.c.provenance,
)
_BLOB_MARK = '"$blob"'  # only text holding this can hold a blob reference


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
    blobs: BlobStore
    reviews: ReviewTasks
    jobs: JobQueue
    outbox: Outbox

    def __init__(
        self,
        url: str | None = None,
        *,
        blob_threshold: int = DEFAULT_THRESHOLD,
        blob_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Open the store at ``url``, creating or migrating its schema as needed.

        ``None`` means ``$DOCPIPE_DB``, else :data:`DEFAULT_URL` (relative to the
        current directory; its folder is created). Output values whose JSON is
        longer than ``blob_threshold`` bytes go to the blob store in
        ``blob_dir`` (default: ``$DOCPIPE_BLOBS``, else ``blobs`` next to a
        SQLite file, else ``.docpipe/blobs``; created on first use).
        """
        self.url = url or os.environ.get("DOCPIPE_DB") or DEFAULT_URL
        self.engine, shared = create_engine(self.url)
        # A single shared in-memory connection must not interleave transactions.
        self._lock: threading.Lock | None = threading.Lock() if shared else None
        try:
            upgrade(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self.blob_threshold = blob_threshold
        self.blobs = BlobStore(Path(blob_dir) if blob_dir is not None else default_blob_dir(self.url))
        self.writer = RecordWriter(self.engine, lock=self._lock, blobs=self.blobs, blob_threshold=blob_threshold)
        self.reviews = ReviewTasks(self)
        self.jobs = JobQueue(self)
        self.outbox = Outbox(self)
        self._insert_inputs = BulkStatement("batch_inputs.insert", insert_builder(batch_inputs, _INPUT_FIELDS),
                                            _INPUT_FIELDS, self.engine.dialect)

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
        n_inputs: int | None = None,
        argv: list[str] | None = None,
        *,
        inputs: Iterable[str | tuple[str, str | None]] | None = None,
        correlation_id: str | None = None,
        batch_id: str | None = None,
        subflows: Mapping[str, Any] | None = None,
    ) -> str:
        """Record the start of one ``docpipe run`` invocation; return its id (uuid4 hex, or
        ``batch_id`` when given: a service job names its batch when it is submitted).

        ``inputs``, the documents in order (paths, or (path, correlation id) pairs), are
        written with the batch, in the same transaction, so a resume knows them all; they are
        read from the iterable in chunks of :data:`INPUT_CHUNK` (a folder of a million files
        walked lazily is never a list in memory). ``n_inputs`` is then their count (a value
        given must agree). ``subflows`` are the definitions of the subflows the flow names,
        by path, so the batch resumes on the subflows it started with.
        """
        batch_id = batch_id or uuid.uuid4().hex
        row = {
            "id": batch_id,
            "flow_id": flow_id,
            "status": Status.RUNNING,
            "params": json.dumps(params, default=str),
            "argv": None if argv is None else json.dumps(list(argv)),
            "n_inputs": n_inputs or 0,
            "started_at": time.time(),
            "correlation_id": correlation_id,
            "subflows": None if not subflows else json.dumps(dict(subflows), default=str),
        }
        with self._begin() as conn:
            conn.execute(batches.insert().values(row))
            if inputs is not None:
                count, docs = 0, iter(inputs)
                while chunk := list(itertools.islice(docs, INPUT_CHUNK)):
                    rows = []
                    for doc in chunk:
                        path, corr = (doc, None) if isinstance(doc, str) else doc
                        rows.append((batch_id, count, display_path(path), raw_name(path), corr))
                        count += 1
                    self._insert_inputs.execute(conn, rows)
                if n_inputs is not None and count != n_inputs:
                    raise ValueError(f"start_batch: n_inputs is {n_inputs} but {count} inputs were given")
                if count != row["n_inputs"]:
                    conn.execute(batches.update().where(batches.c.id == batch_id).values(n_inputs=count))
        return batch_id

    def resume_batch(self, batch_id: str) -> None:
        """Mark batch ``batch_id`` running again (no end time), as a resume starts."""
        with self._begin() as conn:
            result = conn.execute(
                batches.update().where(batches.c.id == batch_id).values(status=Status.RUNNING, finished_at=None)
            )
        if result.rowcount == 0:
            raise KeyError(f"no batch {batch_id!r} in {self!r}")

    def finish_batch(self, batch_id: str, status: str, counts: Mapping[str, int]) -> None:
        """Record the end of batch ``batch_id``, once the writer has written its runs."""
        self.writer.wait()
        values = {"status": status, "counts": json.dumps(dict(counts)), "finished_at": time.time()}
        with self._begin() as conn:
            result = conn.execute(batches.update().where(batches.c.id == batch_id).values(values))
        if result.rowcount == 0:
            raise KeyError(f"no batch {batch_id!r} in {self!r}")

    # --- flows ------------------------------------------------------------------------

    def list_flows(self) -> list[dict[str, Any]]:
        """Every stored flow definition, by name then age: ``id, name, version, content_hash,
        created_at, n_runs`` (its flow runs)."""
        n_runs = (
            sa.select(flow_runs.c.flow_id, sa.func.count().label("n_runs"))
            .group_by(flow_runs.c.flow_id)
            .subquery("n")
        )
        query = (
            sa.select(
                flows.c.id,
                flows.c.name,
                flows.c.version,
                flows.c.content_hash,
                flows.c.created_at,
                sa.func.coalesce(n_runs.c.n_runs, 0).label("n_runs"),
            )
            .select_from(flows.outerjoin(n_runs, n_runs.c.flow_id == flows.c.id))
            .order_by(flows.c.name, flows.c.created_at, flows.c.id)
        )
        return [dict(row) for row in self._query(query)]

    def get_flow(self, name: str, version: str | None = None, content_hash: str | None = None) -> dict[str, Any] | None:
        """The newest stored definition of flow ``name`` (of that version / content hash, if given).

        The dict has ``id, name, version, content_hash, created_at`` and the
        decoded ``definition``; ``None`` if there is none.
        """
        query = sa.select(flows).where(flows.c.name == name)
        if version is not None:
            query = query.where(flows.c.version == version)
        if content_hash is not None:
            query = query.where(flows.c.content_hash == content_hash)
        query = query.order_by(flows.c.created_at.desc(), flows.c.id.desc()).limit(1)
        with self._connect() as conn:
            found = conn.execute(query).mappings().first()
        if found is None:
            return None
        flow = dict(found)
        flow["definition"] = json.loads(flow["definition"])
        return flow

    # --- runs -------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        batch_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        correlation_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        """Flow runs, newest first, filtered by status, flow name, batch, correlation id and
        start time (``since <= started_at < until``, epoch seconds).

        Each dict has ``id, batch_id, flow, flow_version, document, status,
        error_kind, error, failed_step, started_at, finished_at, correlation_id,
        attempt, duration``.
        """
        query: sa.Select[Any] = sa.select(*_RUN_COLUMNS).select_from(_RUNS_WITH_FLOW)
        query = _filter_runs(query, status, flow, batch_id, correlation_id, since, until)
        query = query.order_by(flow_runs.c.started_at.desc(), flow_runs.c.seq.desc()).limit(limit).offset(offset)
        return [_with_duration(row) for row in self._query(query)]

    def count_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        batch_id: str | None = None,
        correlation_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[str, int]:
        """How many flow runs :meth:`list_runs` would find with these filters, by status."""
        query: sa.Select[Any] = sa.select(flow_runs.c.status, sa.func.count().label("n"))
        query = query.select_from(_RUNS_WITH_FLOW) if flow is not None else query.select_from(flow_runs)
        query = _filter_runs(query, status, flow, batch_id, correlation_id, since, until)
        return {row["status"]: int(row["n"]) for row in self._query(query.group_by(flow_runs.c.status))}

    def get_run(self, run_id: str, *, resolve_blobs: bool = True) -> dict[str, Any] | None:
        """One flow run with its ``flow_id``, decoded ``outputs`` and ``tasks``, or ``None``.

        ``tasks`` are ordered by ``started_at`` (then insertion) and have ``step,
        block, attempt, status, started_at, finished_at, duration, worker,
        error_kind, error, traceback, outputs, provenance``. With ``resolve_blobs=False``
        offloaded values stay references (``{"$blob": sha256, "size", "type"}``;
        the file is ``store.blobs.path(sha256)``).
        """
        run_query = (
            sa.select(*_RUN_COLUMNS, flow_runs.c.flow_id, flow_runs.c.outputs)
            .select_from(_RUNS_WITH_FLOW)
            .where(flow_runs.c.id == run_id)
        )
        task_query = (
            sa.select(*_TASK_COLUMNS)
            .where(task_runs.c.flow_run_id == run_id)
            .order_by(task_runs.c.started_at, task_runs.c.id)
        )
        self.writer.wait()
        with self._connect() as conn:
            found = conn.execute(run_query).mappings().first()
            if found is None:
                return None
            tasks = [_with_duration(row) for row in conn.execute(task_query).mappings()]
        for task in tasks:
            task["outputs"] = self._decode(task["outputs"], resolve_blobs)
            task["provenance"] = _loads(task["provenance"])  # what produced it (docs/provenance.md)
        run = _with_duration(found)
        run["outputs"] = self._decode(run["outputs"], resolve_blobs)
        run["tasks"] = tasks
        return run

    # --- batches ----------------------------------------------------------------------

    def list_batches(self, limit: int = 50) -> list[dict[str, Any]]:
        """Batches, newest first, with their flow and decoded ``params``, ``argv``, ``counts``."""
        query = sa.select(*_BATCH_COLUMNS).select_from(_BATCHES_WITH_FLOW)
        return [_decode_batch(row) for row in self._query(query.order_by(batches.c.started_at.desc()).limit(limit))]

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """Batch ``batch_id`` as :meth:`list_batches` gives it, plus its flow's ``content_hash``
        and decoded ``definition`` (what a resume runs); ``None`` if there is none."""
        query = (
            sa.select(*_BATCH_COLUMNS, flows.c.content_hash, flows.c.definition)
            .select_from(_BATCHES_WITH_FLOW)
            .where(batches.c.id == batch_id)
        )
        rows = self._query(query)
        if not rows:
            return None
        batch = _decode_batch(rows[0])
        batch["definition"] = json.loads(batch["definition"])
        return batch

    def batch_inputs(self, batch_id: str) -> list[str]:
        """The documents batch ``batch_id`` was started with, in order (``[]`` if none were given),
        each exactly as it was given (a name that is not UTF-8 included)."""
        query = (
            sa.select(batch_inputs.c.document, batch_inputs.c.document_raw)
            .where(batch_inputs.c.batch_id == batch_id)
            .order_by(batch_inputs.c.seq)
        )
        with self._connect() as conn:
            return [doc if raw is None else from_raw_name(raw) for doc, raw in conn.execute(query)]

    def iter_inputs(self, batch_id: str, *, chunk: int = INPUT_CHUNK) -> Iterator[tuple[str, str | None]]:
        """The documents of batch ``batch_id`` in order, with their own correlation ids, read
        :data:`INPUT_CHUNK` at a time (what the engine admits from: memory flat in batch size)."""
        last = -1
        while True:
            query = (
                sa.select(batch_inputs.c.seq, batch_inputs.c.document, batch_inputs.c.document_raw,
                          batch_inputs.c.correlation_id)
                .where(batch_inputs.c.batch_id == batch_id, batch_inputs.c.seq > last)
                .order_by(batch_inputs.c.seq).limit(chunk)
            )
            with self._connect() as conn:
                rows = conn.execute(query).all()
            for seq, doc, raw, corr in rows:
                yield (doc if raw is None else from_raw_name(raw)), corr
                last = seq
            if len(rows) < chunk:
                return

    def run_state(self, run_id: str) -> dict[str, Any] | None:
        """What run ``run_id`` had done, as :meth:`resume_state` gives it for one document (plus
        ``batch_id``): what a server that takes over a dead one's job resumes it from; ``None``
        if the run was never recorded."""
        query = (sa.select(flow_runs.c.id, flow_runs.c.batch_id, flow_runs.c.status, flow_runs.c.attempt,
                           flow_runs.c.error_kind, flow_runs.c.error, flow_runs.c.failed_step, flow_runs.c.outputs)
                 .where(flow_runs.c.id == run_id))
        rows = self._query(query)
        if not rows:
            return None
        row = rows[0]
        steps = self._run_steps(row["batch_id"], [run_id]).get(run_id, {})
        return {"run_id": run_id, "batch_id": row["batch_id"], "status": row["status"], "attempt": row["attempt"],
                "error_kind": row["error_kind"], "error": row["error"], "failed_step": row["failed_step"],
                "outputs": self._decode(row["outputs"], True),
                "steps": {step: self._decode(text, True) for step, text in steps.items()}}

    def batch_outputs(self, batch_id: str, *, resolve_blobs: bool = True) -> list[dict[str, Any]]:
        """Every flow run of batch ``batch_id`` in insertion order, with decoded ``outputs``.

        Each dict has ``id, document, status, error_kind, error, failed_step,
        outputs, correlation_id, attempt, started_at, finished_at, duration``.
        """
        query = (
            sa.select(
                flow_runs.c.id,
                flow_runs.c.document,
                flow_runs.c.status,
                flow_runs.c.error_kind,
                flow_runs.c.error,
                flow_runs.c.failed_step,
                flow_runs.c.outputs,
                flow_runs.c.correlation_id,
                flow_runs.c.attempt,
                flow_runs.c.started_at,
                flow_runs.c.finished_at,
            )
            .where(flow_runs.c.batch_id == batch_id)
            .order_by(flow_runs.c.seq)
        )
        out = []
        for row in self._query(query):
            run = _with_duration(row)
            run["outputs"] = self._decode(run["outputs"], resolve_blobs)
            out.append(run)
        return out

    def failed_documents(self, batch_id: str) -> list[str]:
        """The documents of batch ``batch_id`` whose run failed, in input order, each once."""
        query = (
            sa.select(flow_runs.c.document)
            .where(flow_runs.c.batch_id == batch_id, flow_runs.c.status == Status.FAILED)
            .order_by(flow_runs.c.seq)
        )
        self.writer.wait()
        with self._connect() as conn:
            return list(dict.fromkeys(conn.execute(query).scalars()))

    def resume_state(self, batch_id: str, *, steps_for: Callable[[str, dict[str, Any]], bool] | None = None,
                     ) -> dict[str, dict[str, Any]]:
        """What the runs of batch ``batch_id`` had done: ``{document: {"run_id", "status",
        "attempt", "steps", "error_kind", "error", "failed_step"}}``.

        ``steps`` maps each step that succeeded to the outputs (state keys it
        wrote) of its latest recorded success, blob references resolved. A
        step recorded without outputs (``TaskRecord.outputs`` is ``None``) is left out:
        its result cannot be restored, so it must run again. An answered review
        step is a succeeded step whose outputs are the answer (which runs still
        wait for one: ``reviews.open_runs``). If a document has several runs in
        the batch, the latest started one counts.

        ``steps_for`` (given a document and its entry without ``steps``) picks the runs whose steps are
        read at all; the others get ``steps`` ``{}``. A resume reads only the runs it
        continues: continuing one answered run of a batch of 1,000 waiting ones must not
        read and decode the outputs of the other 999.
        """
        runs_query = (
            sa.select(flow_runs.c.id, flow_runs.c.document, flow_runs.c.status, flow_runs.c.attempt,
                      flow_runs.c.error_kind, flow_runs.c.error, flow_runs.c.failed_step)
            .where(flow_runs.c.batch_id == batch_id)
            .order_by(flow_runs.c.seq)
        )
        self.writer.wait()
        with self._connect() as conn:
            runs = conn.execute(runs_query).all()
        state: dict[str, dict[str, Any]] = {}
        for run_id, document, status, attempt, error_kind, error, failed_step in runs:
            state[document] = {"run_id": run_id, "status": status, "attempt": attempt, "steps": {},
                               "error_kind": error_kind, "error": error, "failed_step": failed_step}
        wanted = [e for d, e in state.items() if steps_for is None or steps_for(d, e)]
        steps = self._run_steps(batch_id, None if steps_for is None else [e["run_id"] for e in wanted])
        for entry in wanted:
            entry["steps"] = {step: self._decode(text, True) for step, text in steps.get(entry["run_id"], {}).items()}
        return state

    def _run_steps(self, batch_id: str, run_ids: list[str] | None) -> dict[str, dict[str, str]]:
        """The latest succeeded outputs (JSON text) of each step of the batch's runs, by run:
        of every run, or of ``run_ids`` only (read in chunks, under any database's limit on
        bound parameters)."""
        base = (sa.select(task_runs.c.flow_run_id, task_runs.c.step, task_runs.c.outputs)
                .where(task_runs.c.status == Status.SUCCEEDED, task_runs.c.outputs.is_not(None))
                .order_by(task_runs.c.id))
        if run_ids is None:
            queries = [base.select_from(task_runs.join(flow_runs, task_runs.c.flow_run_id == flow_runs.c.id))
                       .where(flow_runs.c.batch_id == batch_id)]
        else:
            queries = [base.where(task_runs.c.flow_run_id.in_(run_ids[i:i + 500]))
                       for i in range(0, len(run_ids), 500)]
        steps: dict[str, dict[str, str]] = {}
        with self._connect() as conn:
            for query in queries:
                for run_id, step, outputs in conn.execute(query):  # oldest first: the latest wins
                    steps.setdefault(run_id, {})[step] = outputs
        return steps

    def record_subflows(self, batch_id: str, subflows: Mapping[str, Any]) -> None:
        """Record the subflow definitions (by path) batch ``batch_id`` started with, so that it
        resumes on them (what ``start_batch(subflows=...)`` records, for a batch already started)."""
        value = json.dumps(dict(subflows), default=str) if subflows else None
        with self._begin() as conn:
            conn.execute(batches.update().where(batches.c.id == batch_id).values(subflows=value))

    # --- connections ------------------------------------------------------------------

    def _decode(self, text: str | None, resolve_blobs: bool) -> Any:
        """Stored JSON text decoded, its blob references resolved if asked; ``None`` stays ``None``."""
        if text is None:
            return None
        value = json.loads(text)
        if resolve_blobs and _BLOB_MARK in text:
            value = resolve(value, self.blobs)
        return value

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


def _filter_runs(
    query: sa.Select[Any],
    status: str | None,
    flow: str | None,
    batch_id: str | None,
    correlation_id: str | None,
    since: float | None,
    until: float | None,
) -> sa.Select[Any]:
    """``query`` over flow runs (joined with flows when ``flow`` is given) with the filters given."""
    if status is not None:
        query = query.where(flow_runs.c.status == status)
    if flow is not None:
        query = query.where(flows.c.name == flow)
    if batch_id is not None:
        query = query.where(flow_runs.c.batch_id == batch_id)
    if correlation_id is not None:
        query = query.where(flow_runs.c.correlation_id == correlation_id)
    if since is not None:
        query = query.where(flow_runs.c.started_at >= since)
    if until is not None:
        query = query.where(flow_runs.c.started_at < until)
    return query


def _with_duration(row: Mapping[Any, Any]) -> dict[str, Any]:
    """``row`` as a dict plus ``duration`` (finished_at - started_at, or ``None``)."""
    out = dict(row)
    started, finished = out.get("started_at"), out.get("finished_at")
    out["duration"] = None if started is None or finished is None else finished - started
    return out


def _decode_batch(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A batch row as a dict with ``duration`` and its JSON columns decoded."""
    batch = _with_duration(row)
    for key in ("params", "argv", "counts", "subflows"):
        batch[key] = _loads(batch[key])
    return batch


def _loads(text: str | None) -> Any:
    """Decode stored JSON text; ``None`` stays ``None``."""
    return None if text is None else json.loads(text)
