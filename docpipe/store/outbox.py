"""The outbox: one row per finished run and output sink, delivered at least once (``store.outbox``).

A ``deliveries`` row is made pending when a run's job finishes (in the same transaction:
:meth:`~docpipe.store.jobs.JobQueue.finish`) or by :meth:`Outbox.enqueue`; ``UNIQUE(sink,
run_id)`` makes it once however often that is asked. Dispatchers (one per server, any
number of servers on one database) drain it:

* :meth:`Outbox.claim` leases due pending deliveries to one dispatcher: on PostgreSQL
  ``SELECT ... FOR UPDATE SKIP LOCKED``, on SQLite one write transaction. A delivery under
  another dispatcher's live lease is never given out; one whose lease expired (its
  dispatcher died mid-send) is given out again, so the receiver may see a run twice and
  the run id is the idempotency key it dedupes on.
* :meth:`Outbox.delivered` records the send; :meth:`Outbox.failed` counts the attempt,
  keeps the error and sets the next attempt, or makes the delivery ``dead`` (given up;
  shown, and sent again only by :meth:`Outbox.retry_dead`).

:meth:`Outbox.backlog` counts pending rows through ``ix_deliveries_status_next`` only, so a
``/metrics`` scrape stays fast with millions of delivered rows. Times are epoch seconds;
``now`` may be given (tests). Deliveries come back as plain dicts of their columns.

    store.outbox.enqueue(["warehouse"], [run_id])
    for d in store.outbox.claim("server-1", limit=32, lease_s=30, sinks=["warehouse"]):
        try:
            send(d["run_id"])
        except OSError as exc:
            store.outbox.failed(d["id"], "server-1", str(exc), next_attempt_at=time.time() + 30)
        else:
            store.outbox.delivered([d["id"]], "server-1")
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from docpipe.status import DeliveryStatus
from docpipe.store.jobs import chunks, enqueue_deliveries, through_index, write_transaction
from docpipe.store.schema import deliveries

if TYPE_CHECKING:
    from docpipe.store import Store

__all__ = ["Outbox", "backlog_query"]

_PENDING = DeliveryStatus.PENDING
# Columns by name alone, for queries over the FROM clause through_index() gives.
_ID, _SINK, _STATUS = (sa.column(name, sa.String) for name in ("id", "sink", "status"))
_DUE, _LEASE = sa.column("next_attempt_at", sa.Double), sa.column("lease_expires_at", sa.Double)


def backlog_query(status: str, dialect: str) -> sa.Select[str, int]:
    """Deliveries in ``status`` counted by sink, through ``ix_deliveries_status_next`` only:
    what :meth:`Outbox.backlog` runs (the tests EXPLAIN it)."""
    return (sa.select(_SINK, sa.func.count().label("n"))
            .select_from(through_index(deliveries, "ix_deliveries_status_next", dialect))
            .where(_STATUS == DeliveryStatus(status).value).group_by(_SINK))


class Outbox:
    """The deliveries of one :class:`~docpipe.store.Store` (``store.outbox``); see the module
    docstring."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def enqueue(self, sinks: Iterable[str], run_ids: Iterable[str], now: float | None = None) -> int:
        """Make a pending delivery, due now, to each of ``sinks`` for each of ``run_ids``,
        skipping those that exist (whatever their status); how many were made."""
        now = time.time() if now is None else now
        with write_transaction(self.store) as conn:
            return enqueue_deliveries(conn, sinks, run_ids, now)

    def claim(self, owner: str, *, limit: int, lease_s: float, sinks: Iterable[str] | None = None,
              now: float | None = None) -> builtins.list[dict[str, Any]]:
        """Lease up to ``limit`` pending deliveries (to ``sinks``, if given) that are due and not
        under a live lease to ``owner`` for ``lease_s`` seconds, longest due first. Two
        dispatchers never hold the same delivery."""
        if limit < 1 or lease_s <= 0:
            raise ValueError(f"claim: limit must be >= 1 and lease_s > 0, not {limit} and {lease_s}")
        now = time.time() if now is None else now
        due_now = sa.and_(_STATUS == _PENDING.value, _DUE <= now, sa.or_(_LEASE.is_(None), _LEASE < now))
        if sinks is not None:
            due_now = sa.and_(due_now, _SINK.in_(builtins.list(sinks)))
        with write_transaction(self.store) as conn:
            dialect = conn.dialect.name
            pick = (sa.select(_ID).select_from(through_index(deliveries, "ix_deliveries_status_next", dialect))
                    .where(due_now).order_by(_DUE).limit(limit))
            if dialect == "postgresql":
                pick = pick.with_for_update(skip_locked=True)
            ids = builtins.list(conn.execute(pick).scalars())
            if not ids:
                return []
            rows = conn.execute(deliveries.update().where(deliveries.c.id.in_(ids))
                                .values(lease_owner=owner, lease_expires_at=now + lease_s)
                                .returning(*deliveries.c)).mappings().all()
        return sorted((dict(row) for row in rows), key=lambda d: (d["next_attempt_at"], d["id"]))

    def delivered(self, ids: Iterable[int], owner: str, now: float | None = None) -> int:
        """Record deliveries ``ids`` as sent by ``owner`` (delivered, ``delivered_at`` now, lease
        cleared); how many were not recorded so before. A send that happened is recorded even
        if ``owner``'s lease ran out meanwhile: the receiver has the run either way."""
        now = time.time() if now is None else now
        done = {"status": DeliveryStatus.DELIVERED.value, "delivered_at": now, "lease_owner": None,
                "lease_expires_at": None}
        with write_transaction(self.store) as conn:
            return sum(int(conn.execute(deliveries.update()
                                        .where(deliveries.c.id.in_(part),
                                               deliveries.c.status != DeliveryStatus.DELIVERED)
                                        .values(done)).rowcount)
                       for part in chunks(builtins.list(ids)))

    def failed(self, delivery_id: int, owner: str, error: str, next_attempt_at: float | None,
               now: float | None = None) -> bool:
        """Record a failed attempt of delivery ``delivery_id`` by ``owner``: ``attempts`` one
        more, ``last_error`` kept, lease released; tried again at ``next_attempt_at``, or, with
        ``None``, given up (``dead``). ``False`` (nothing changed) when it is not pending or
        another dispatcher holds it under a live lease."""
        now = time.time() if now is None else now
        values: dict[str, Any] = {"attempts": deliveries.c.attempts + 1, "last_error": error,
                                  "lease_owner": None, "lease_expires_at": None}
        if next_attempt_at is None:
            values["status"] = DeliveryStatus.DEAD.value
        else:
            values["next_attempt_at"] = next_attempt_at
        mine = sa.or_(deliveries.c.lease_owner == owner, deliveries.c.lease_owner.is_(None),
                      deliveries.c.lease_expires_at < now)
        update = deliveries.update().where(deliveries.c.id == delivery_id, deliveries.c.status == _PENDING, mine)
        with write_transaction(self.store) as conn:
            return bool(conn.execute(update.values(values)).rowcount == 1)

    def retry_dead(self, sink: str | None = None, now: float | None = None) -> int:
        """Make dead deliveries (to ``sink``, if given) pending again, due now, with their
        attempts counted from zero (``last_error`` kept); how many."""
        now = time.time() if now is None else now
        update = deliveries.update().where(deliveries.c.status == DeliveryStatus.DEAD)
        if sink is not None:
            update = update.where(deliveries.c.sink == sink)
        with write_transaction(self.store) as conn:
            return int(conn.execute(update.values(status=_PENDING.value, attempts=0, next_attempt_at=now)).rowcount)

    def backlog(self, status: str = DeliveryStatus.PENDING) -> dict[str, int]:
        """Deliveries in ``status`` (pending: not yet delivered, due or not) by sink. One grouped
        query through ``ix_deliveries_status_next``: it reads only rows in that status."""
        with self.store._connect() as conn:
            return {row.sink: int(row.n) for row in conn.execute(backlog_query(status, conn.dialect.name))}

    def get(self, delivery_id: int) -> dict[str, Any] | None:
        """Delivery ``delivery_id``'s columns, or ``None``."""
        with self.store._connect() as conn:
            row = conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id)).mappings().first()
        return None if row is None else dict(row)

    def list(self, *, status: str | None = None, sink: str | None = None, run_id: str | None = None,
             limit: int = 100) -> builtins.list[dict[str, Any]]:
        """Deliveries newest first, filtered by status, sink and run."""
        query = sa.select(deliveries)
        for column, value in ((deliveries.c.status, status), (deliveries.c.sink, sink),
                              (deliveries.c.run_id, run_id)):
            if value is not None:
                query = query.where(column == value)
        query = query.order_by(deliveries.c.created_at.desc(), deliveries.c.id.desc()).limit(limit)
        with self.store._connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]
