"""Server jobs in the store: leased units of work that survive a restart (``store.jobs``).

A job is a row of ``jobs``: a document to run through a flow, or a batch to run, retry,
resume or continue. A source submits it (``api``, ``ui``, ``watch:<folder>``, a plugin
source's name), a server claims it under a lease, renews the lease while it works, and
finishes it, recording what became of it and, in the same transaction, the outbox rows
that deliver its runs to the configured sinks (:mod:`docpipe.store.outbox`).

Several servers on one database share the queue, and none ever holds a job another holds:

* :meth:`JobQueue.claim` picks claimable jobs and marks them running in one transaction:
  on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` (two servers skip each other's
  rows instead of waiting), on SQLite one write transaction (``BEGIN IMMEDIATE``: SQLite
  writes one at a time). A job is claimable when queued, or running under a lease that
  expired (its server died); such a claim counts ``claims`` up again, so ``claims > 1``
  tells the new holder to resume the job's run rather than start it.
* :meth:`JobQueue.submit` is idempotent on ``(source, key)``: the unique constraint
  decides (``INSERT ... ON CONFLICT DO NOTHING``, then the row is read back), so a client
  that retries, or two servers that see the same file, make one job.
* :meth:`JobQueue.finish` is one conditional ``UPDATE``: it changes nothing and answers
  ``False`` when another server took the job over, and the caller drops its result.

:meth:`JobQueue.depth` reads only unfinished rows through ``ix_jobs_status``, so a
``/metrics`` scrape stays fast with millions of finished jobs in the table. Times are epoch
seconds; ``now`` may be given (tests). Jobs come back as plain dicts of their columns with
``payload`` decoded.

    job, created = store.jobs.submit("document", "invoices", source="api", document="a.pdf",
                                     run_id=new_id(), key=request_key)
    for job in store.jobs.claim("server-1", limit=16, lease_s=60):
        ...  # run it, calling store.jobs.renew("server-1", ids, 60) meanwhile
        store.jobs.finish(job["id"], "server-1", outcome="succeeded", sinks=["warehouse"])
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from docpipe.status import DeliveryStatus, JobStatus
from docpipe.store.schema import deliveries, jobs

if TYPE_CHECKING:
    from docpipe.store import Store

__all__ = ["JOB_KINDS", "JobQueue", "depth_query"]

#: What a job asks for: one document through a flow, or a batch run, retried, resumed
#: or continued (after a review answer).
JOB_KINDS = ("document", "run", "retry", "resume", "continue")

_UNFINISHED = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
_SUBMIT_FIELDS = frozenset({"kind", "flow", "source", "document", "batch_id", "run_id", "payload", "key",
                            "correlation_id"})
# Columns by name alone, for queries over the FROM clause through_index() gives.
_ID, _STATUS, _SOURCE, _KIND = (sa.column(name, sa.String) for name in ("id", "status", "source", "kind"))
_CREATED, _LEASE = sa.column("created_at", sa.Double), sa.column("lease_expires_at", sa.Double)
_CHUNK = 500  # ids per IN list: well under every database's limit on bound parameters


def through_index(table: sa.Table, index: str, dialect: str) -> Any:
    """``table`` as a FROM clause read through ``index``: ``INDEXED BY`` on SQLite, whose
    planner, after an ``ANALYZE`` that saw only finished rows, would rather scan the whole
    table; the table itself on PostgreSQL, whose statistics see how few rows are unfinished.
    Name the columns with ``sa.column`` in a query over it."""
    return sa.text(f"{table.name} INDEXED BY {index}") if dialect == "sqlite" else table


def depth_query(dialect: str) -> sa.Select[str, str, int]:
    """Unfinished jobs counted by source and status, through ``ix_jobs_status`` only: what
    :meth:`JobQueue.depth` runs (the tests EXPLAIN it)."""
    return (sa.select(_SOURCE, _STATUS, sa.func.count().label("n"))
            .select_from(through_index(jobs, "ix_jobs_status", dialect))
            .where(_STATUS.in_(_UNFINISHED)).group_by(_SOURCE, _STATUS))


def pick_query(dialect: str, claimable: sa.ColumnElement[bool], limit: int) -> sa.Select[str, float]:
    """The ids and creation times of the ``limit`` oldest jobs matching ``claimable`` (over
    ``sa.column`` names), through ``ix_jobs_status`` (status, kind, created_at): given a status
    and a kind, no sort, however long the queue; locked, skipping locked rows, on PostgreSQL."""
    pick = (sa.select(_ID, _CREATED).select_from(through_index(jobs, "ix_jobs_status", dialect))
            .where(claimable).order_by(_CREATED).limit(limit))
    return pick.with_for_update(skip_locked=True) if dialect == "postgresql" else pick


@contextmanager
def write_transaction(store: Store) -> Iterator[sa.Connection]:
    """A connection in a transaction that holds the write lock from its start on SQLite
    (``BEGIN IMMEDIATE``, so a read-then-write never fails on a lock upgrade) and is
    plain on PostgreSQL; committed on exit."""
    with store._lock or nullcontext(), store.engine.connect() as conn:
        conn.execution_options(docpipe_sqlite_begin="BEGIN IMMEDIATE")
        with conn.begin():
            yield conn


def insert_ignoring(conn: sa.Connection, table: sa.Table) -> Any:
    """``INSERT`` into ``table`` that skips rows breaking a unique constraint, on either
    database (``ON CONFLICT DO NOTHING``)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def enqueue_deliveries(conn: sa.Connection, sinks: Iterable[str], run_ids: Iterable[str], now: float,
                       *, again: bool = False) -> int:
    """Insert a pending delivery per sink and run id in ``conn``'s transaction, skipping
    those that exist; how many were new. With ``again`` (the runs ended anew: a retry of a
    failed run, a run continued after its review) a delivery that was made or given up on is
    pending again, attempts from zero, so the sink gets the run's new end."""
    rows = [{"sink": sink, "run_id": run_id, "status": DeliveryStatus.PENDING.value, "attempts": 0,
             "next_attempt_at": now, "created_at": now}
            for sink in dict.fromkeys(sinks) for run_id in dict.fromkeys(run_ids)]
    if not rows:
        return 0
    if not again:
        returned = conn.execute(insert_ignoring(conn, deliveries).returning(deliveries.c.id), rows)
        return len(returned.all())
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(deliveries)
    upsert = insert.on_conflict_do_update(
        index_elements=[deliveries.c.sink, deliveries.c.run_id],
        set_={"status": DeliveryStatus.PENDING.value, "attempts": 0, "next_attempt_at": now, "last_error": None,
              "lease_owner": None, "lease_expires_at": None, "delivered_at": None},
        where=deliveries.c.status != DeliveryStatus.PENDING.value)
    return int(conn.execute(upsert, rows).rowcount or 0)


class JobQueue:
    """The jobs of one :class:`~docpipe.store.Store` (``store.jobs``); see the module docstring."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- submitting ------------------------------------------------------------------

    def submit(self, kind: str, flow: str, *, source: str, document: str | None = None,
               batch_id: str | None = None, run_id: str | None = None, payload: Any = None,
               key: str | None = None, correlation_id: str | None = None,
               now: float | None = None) -> tuple[dict[str, Any], bool]:
        """Queue a job; return it (as :meth:`get` gives it) and whether this call made it.

        With a ``key`` that ``source`` used before, nothing is queued: the job made then
        comes back with ``False`` (race-safe: of many servers submitting it at once, one
        makes it). A ``None`` key never matches another. ``payload`` is stored as JSON.
        """
        job = {"kind": kind, "flow": flow, "source": source, "document": document, "batch_id": batch_id,
               "run_id": run_id, "payload": payload, "key": key, "correlation_id": correlation_id}
        return self.submit_many([job], now=now)[0]

    def submit_many(self, submissions: Sequence[Mapping[str, Any]], *,
                    now: float | None = None) -> list[tuple[dict[str, Any], bool]]:
        """Queue several jobs in one transaction, each a mapping of :meth:`submit`'s argument
        names (``kind``, ``flow``, ``source`` required); return ``(job, created)`` for each,
        in order. Jobs of one call are queued a microsecond apart in the order given, so they
        are claimed in that order; a key given twice makes one job (the first)."""
        from docpipe.store import new_id  # the package imports this module

        now = time.time() if now is None else now
        rows = [_job_row(given, new_id(), now + i * 1e-6) for i, given in enumerate(submissions)]
        if not rows:
            return []
        # Lock keys in one order, so two calls sharing keys cannot deadlock on PostgreSQL.
        # (Stable: a key given twice is inserted first where it was first given.)
        ordered = sorted(rows, key=lambda r: (r["source"], r["idempotency_key"] or ""))
        with write_transaction(self.store) as conn:
            conn.execute(insert_ignoring(conn, jobs), ordered)
            keyed = [r for r in rows if r["idempotency_key"] is not None]
            found = {(r["source"], r["idempotency_key"]): r for r in self._by_keys(conn, keyed)}
            plain = [r["id"] for r in rows if r["idempotency_key"] is None]
            by_id = {r["id"]: r for ids in chunks(plain) for r in _select(conn, jobs.c.id.in_(ids))}
        out = []
        for row in rows:
            if row["idempotency_key"] is None:
                job = by_id[row["id"]]
            else:
                job = found[(row["source"], row["idempotency_key"])]
            out.append((_decode(job), job["id"] == row["id"]))
        return out

    @staticmethod
    def _by_keys(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[sa.RowMapping]:
        """The stored jobs with the (source, key) pairs of ``rows``."""
        keys_by_source: dict[str, list[str]] = {}
        for row in rows:
            keys_by_source.setdefault(row["source"], []).append(row["idempotency_key"])
        found: list[sa.RowMapping] = []
        for source, keys in keys_by_source.items():
            for part in chunks(list(dict.fromkeys(keys))):
                found += _select(conn, sa.and_(jobs.c.source == source, jobs.c.idempotency_key.in_(part)))
        return found

    # --- leases ----------------------------------------------------------------------

    def claim(self, owner: str, *, limit: int, lease_s: float, kinds: Iterable[str] | None = None,
              now: float | None = None) -> list[dict[str, Any]]:
        """Take up to ``limit`` claimable jobs (of ``kinds``, if given) for ``owner`` under a
        lease of ``lease_s`` seconds: first running jobs whose lease expired (their server
        died), then queued ones, oldest first. Each is marked running with ``started_at``
        now and ``claims`` one more. Two owners never get the same job.

        The picks go through ``ix_jobs_status`` (status, kind, created_at): one per kind reads
        just the oldest queued jobs of that kind however long the queue (other kinds ahead of
        them cost nothing), and one reads the running jobs (what the servers hold in flight)
        for expired leases."""
        if limit < 1 or lease_s <= 0:
            raise ValueError(f"claim: limit must be >= 1 and lease_s > 0, not {limit} and {lease_s}")
        wanted = JOB_KINDS if kinds is None else (kinds,) if isinstance(kinds, str) else tuple(dict.fromkeys(kinds))
        unknown = [kind for kind in wanted if kind not in JOB_KINDS]
        if unknown:
            raise ValueError(f"claim: job kinds are {', '.join(JOB_KINDS)}, not {', '.join(map(repr, unknown))}")
        now = time.time() if now is None else now
        expired = sa.and_(_STATUS == JobStatus.RUNNING.value, _LEASE < now, _KIND.in_(wanted))
        with write_transaction(self.store) as conn:
            dialect = conn.dialect.name
            ids = list(conn.execute(pick_query(dialect, expired, limit)).scalars())
            if len(ids) < limit:
                room = limit - len(ids)
                queued = [row for kind in wanted for row in conn.execute(pick_query(
                    dialect, sa.and_(_STATUS == JobStatus.QUEUED.value, _KIND == kind), room))]
                ids += [row.id for row in sorted(queued, key=lambda row: row.created_at)[:room]]
            if not ids:
                return []
            claimed = conn.execute(jobs.update().where(jobs.c.id.in_(ids))
                                   .values(status=JobStatus.RUNNING, lease_owner=owner, lease_expires_at=now + lease_s,
                                           claims=jobs.c.claims + 1, started_at=now)
                                   .returning(*jobs.c)).mappings().all()
        return sorted((_decode(row) for row in claimed), key=lambda job: job["created_at"])

    def renew(self, owner: str, ids: Iterable[str], lease_s: float, now: float | None = None) -> set[str]:
        """Extend ``owner``'s leases on jobs ``ids`` to ``lease_s`` seconds from now; return the
        ids it still holds (a job missing was taken over after its lease expired, or finished:
        its holder must stop working on it). A lease that expired but that nobody took is
        renewed."""
        now = time.time() if now is None else now
        held: set[str] = set()
        with write_transaction(self.store) as conn:
            for part in chunks(list(ids)):
                update = (jobs.update()
                          .where(jobs.c.id.in_(part), jobs.c.status == JobStatus.RUNNING, jobs.c.lease_owner == owner)
                          .values(lease_expires_at=now + lease_s).returning(jobs.c.id))
                held.update(conn.execute(update).scalars())
        return held

    def finish(self, job_id: str, owner: str, *, status: str = JobStatus.FINISHED, outcome: str | None = None,
               error: str | None = None, batch_id: str | None = None, sinks: Iterable[str] = (),
               run_ids: Iterable[str] | None = None, now: float | None = None, again: bool = False) -> bool:
        """Record that job ``job_id`` ended (``status`` finished or error, a document job's run
        ``outcome``, an ``error`` message, its ``batch_id`` when given) and clear its lease;
        in the same transaction queue a pending delivery to each of ``sinks`` for the job's
        run (or for ``run_ids``), skipping those that exist (with ``again``: making those
        that were delivered pending again, see :func:`enqueue_deliveries`).

        Only while the job runs under ``owner``'s lease, or under one that expired and that
        nobody took over: otherwise nothing changes and the answer is ``False`` (another
        server holds the job now, or it is finished; the caller drops its result).
        """
        if status not in (JobStatus.FINISHED, JobStatus.ERROR):
            raise ValueError(f"finish: status must be {JobStatus.FINISHED!r} or {JobStatus.ERROR!r}, not {status!r}")
        now = time.time() if now is None else now
        values: dict[str, Any] = {"status": JobStatus(status).value, "outcome": outcome, "error": error,
                                  "finished_at": now, "lease_owner": None, "lease_expires_at": None}
        if batch_id is not None:
            values["batch_id"] = batch_id
        update = (jobs.update()
                  .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING,
                         sa.or_(jobs.c.lease_owner == owner, jobs.c.lease_expires_at < now))
                  .values(values).returning(jobs.c.run_id))
        sinks = list(sinks)
        with write_transaction(self.store) as conn:
            done = conn.execute(update).first()
            if done is None:
                return False
            runs = list(run_ids) if run_ids is not None else [done.run_id] if done.run_id is not None else []
            enqueue_deliveries(conn, sinks, runs, now, again=again)
        return True

    def release(self, owner: str, ids: Iterable[str] | None = None) -> int:
        """Put ``owner``'s running jobs (those of ``ids``, if given) back in the queue, as a
        clean shutdown does; how many. ``claims`` stays as it is, so the next holder knows
        the job was started before."""
        held = sa.and_(jobs.c.status == JobStatus.RUNNING, jobs.c.lease_owner == owner)
        back = {"status": JobStatus.QUEUED.value, "lease_owner": None, "lease_expires_at": None}
        with write_transaction(self.store) as conn:
            if ids is None:
                return int(conn.execute(jobs.update().where(held).values(back)).rowcount)
            return sum(int(conn.execute(jobs.update().where(held, jobs.c.id.in_(part)).values(back)).rowcount)
                       for part in chunks(list(ids)))

    # --- reading ---------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any] | None:
        """Job ``job_id``: its columns, ``payload`` decoded; ``None`` if there is none."""
        with self.store._connect() as conn:
            rows = _select(conn, jobs.c.id == job_id)
        return _decode(rows[0]) if rows else None

    def by_key(self, source: str, key: str) -> dict[str, Any] | None:
        """The job ``source`` submitted with idempotency key ``key``, or ``None``."""
        with self.store._connect() as conn:
            rows = _select(conn, sa.and_(jobs.c.source == source, jobs.c.idempotency_key == key))
        return _decode(rows[0]) if rows else None

    def by_run(self, run_id: str) -> dict[str, Any] | None:
        """The document job that was given run id ``run_id``, or ``None``."""
        with self.store._connect() as conn:
            rows = _select(conn, jobs.c.run_id == run_id)
        return _decode(rows[0]) if rows else None

    def outcomes(self, batch_id: str) -> dict[tuple[str, str | None], int]:
        """How many jobs of batch ``batch_id`` there are by (status, outcome): one grouped
        query through ``ix_jobs_batch_id``."""
        query = (sa.select(jobs.c.status, jobs.c.outcome, sa.func.count()).where(jobs.c.batch_id == batch_id)
                 .group_by(jobs.c.status, jobs.c.outcome))
        with self.store._connect() as conn:
            return {(status, outcome): n for status, outcome, n in conn.execute(query)}

    def list(self, *, status: str | None = None, source: str | None = None, batch_id: str | None = None,
             kind: str | None = None, limit: int = 100, finished_after: float | None = None) -> list[dict[str, Any]]:
        """Jobs newest first, filtered by status, source, batch, kind, and finish time
        (``finished_at > finished_after``)."""
        query = sa.select(jobs)
        for column, value in ((jobs.c.status, status), (jobs.c.source, source), (jobs.c.batch_id, batch_id),
                              (jobs.c.kind, kind)):
            if value is not None:
                query = query.where(column == value)
        if finished_after is not None:
            query = query.where(jobs.c.finished_at > finished_after)
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
        with self.store._connect() as conn:
            return [_decode(row) for row in conn.execute(query).mappings()]

    def depth(self) -> dict[str, dict[str, int]]:
        """Unfinished jobs by source: ``{source: {"queued": n, "running": m}}``. One grouped
        query over the unfinished rows only (through ``ix_jobs_status``), however many
        finished jobs the table holds."""
        out: dict[str, dict[str, int]] = {}
        with self.store._connect() as conn:
            for row in conn.execute(depth_query(conn.dialect.name)).mappings():
                out.setdefault(row["source"], dict.fromkeys(_UNFINISHED, 0))[row["status"]] = int(row["n"])
        return out


def _job_row(given: Mapping[str, Any], job_id: str, now: float) -> dict[str, Any]:
    """The ``jobs`` row for one submission, checked."""
    unknown = set(given) - _SUBMIT_FIELDS
    if unknown:
        raise TypeError(f"submit: unknown field(s) {sorted(unknown)}; expected some of {sorted(_SUBMIT_FIELDS)}")
    kind, flow, source = given.get("kind"), given.get("flow"), given.get("source")
    if kind not in JOB_KINDS:
        raise ValueError(f"submit: job kind must be one of {', '.join(JOB_KINDS)}, not {kind!r}")
    if not flow or not isinstance(flow, str):
        raise ValueError(f"submit: a job needs the flow it runs, got {flow!r}")
    if not source or not isinstance(source, str):
        raise ValueError(f"submit: a job needs the source that submitted it, got {source!r}")
    key = given.get("key")
    if key is not None and not isinstance(key, str):
        raise TypeError(f"submit: an idempotency key is a string, not {type(key).__name__}")
    payload = given.get("payload")
    return {"id": job_id, "kind": kind, "flow": flow, "source": source, "document": given.get("document"),
            "batch_id": given.get("batch_id"), "run_id": given.get("run_id"),
            "payload": None if payload is None else json.dumps(payload, default=str),
            "idempotency_key": key, "correlation_id": given.get("correlation_id"),
            "status": JobStatus.QUEUED.value, "claims": 0, "created_at": now}


def _select(conn: sa.Connection, where: sa.ColumnElement[bool]) -> list[sa.RowMapping]:
    """The jobs matching ``where``, as row mappings."""
    return list(conn.execute(sa.select(jobs).where(where)).mappings())


def _decode(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A job row as a dict with its payload decoded."""
    job = dict(row)
    job["payload"] = None if job["payload"] is None else json.loads(job["payload"])
    return job
