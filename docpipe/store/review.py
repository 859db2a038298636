"""Review tasks in the store: the queue, claims with a lease, answers (see docs/review.md).

The engine inserts a task (through the record writer, :class:`~docpipe.store.records.ReviewTask`)
when a run reaches a review step; everything after is here, one statement per change, so
that two reviewers, two processes or two servers on one database never both win:

* :meth:`ReviewTasks.claim` is one ``UPDATE ... WHERE status = 'waiting' OR the lease
  expired OR the claimer holds it``: the database decides who got it (PostgreSQL re-checks
  the condition on the row a concurrent update left; SQLite writes one at a time).
* :meth:`ReviewTasks.answer` is one ``UPDATE ... WHERE status != 'answered'`` (and not under
  another reviewer's live lease) plus, in the same transaction, the review step's succeeded
  task run whose outputs are the answer: what a resume restores. A second answer changes
  nothing; the caller reads the recorded one back.

A claim whose lease expired is waiting again: listings show it so, and anyone may claim or
answer it. Times are epoch seconds; ``now`` may be given (tests).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from docpipe.status import ReviewStatus, Status
from docpipe.store.schema import batches, flow_runs, flows, review_tasks, task_runs

if TYPE_CHECKING:
    from docpipe.store import Store

_COLUMNS = (*review_tasks.c, flows.c.name.label("flow"), flow_runs.c.document,
            flow_runs.c.status.label("run_status"))
_WITH_RUN = review_tasks.join(flow_runs, flow_runs.c.id == review_tasks.c.flow_run_id).join(
    flows, flows.c.id == flow_runs.c.flow_id)


def _free(now: float) -> sa.ColumnElement[bool]:
    """A task nobody holds: waiting, or claimed under a lease that expired."""
    return sa.or_(review_tasks.c.status == ReviewStatus.WAITING,
                  sa.and_(review_tasks.c.status == ReviewStatus.CLAIMED, review_tasks.c.lease_expires_at < now))


class ReviewTasks:
    """The review tasks of one :class:`~docpipe.store.Store` (``store.reviews``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def tasks(self, *, status: str | None = None, flow: str | None = None, kind: str | None = None,
             batch_id: str | None = None, limit: int = 100, now: float | None = None) -> list[dict[str, Any]]:
        """Tasks oldest first, as :meth:`get` gives them; ``status`` ``waiting`` includes claims
        whose lease expired (and shows them waiting)."""
        now = time.time() if now is None else now
        query = sa.select(*_COLUMNS).select_from(_WITH_RUN)
        if status == ReviewStatus.WAITING:
            query = query.where(_free(now))
        elif status == ReviewStatus.CLAIMED:
            query = query.where(review_tasks.c.status == status, review_tasks.c.lease_expires_at >= now)
        elif status is not None:
            query = query.where(review_tasks.c.status == status)
        if flow is not None:
            query = query.where(flows.c.name == flow)
        if kind is not None:
            query = query.where(review_tasks.c.kind == kind)
        if batch_id is not None:
            query = query.where(review_tasks.c.batch_id == batch_id)
        query = query.order_by(review_tasks.c.created_at, review_tasks.c.id).limit(limit)
        return [self._task(row, now) for row in self.store._query(query)]

    def count(self, *, now: float | None = None) -> dict[str, int]:
        """How many tasks there are by status (an expired claim counts as waiting)."""
        now = time.time() if now is None else now
        expired = sa.and_(review_tasks.c.status == ReviewStatus.CLAIMED, review_tasks.c.lease_expires_at < now)
        status = sa.case((expired, sa.literal(ReviewStatus.WAITING.value)), else_=review_tasks.c.status)
        query = sa.select(status.label("status"), sa.func.count().label("n")).group_by(status)
        return {row["status"]: int(row["n"]) for row in self.store._query(query)}

    def waiting_summary(self, *, now: float | None = None) -> dict[str, Any]:
        """What the queue page heads with, in one grouped query however long the queue is:
        waiting tasks (expired claims included) counted ``by_flow`` and ``by_kind``, and the
        ``oldest`` one's ``created_at`` (``None`` when nothing waits)."""
        now = time.time() if now is None else now
        query = (sa.select(flows.c.name.label("flow"), review_tasks.c.kind, sa.func.count().label("n"),
                           sa.func.min(review_tasks.c.created_at).label("oldest"))
                 .select_from(_WITH_RUN).where(_free(now)).group_by(flows.c.name, review_tasks.c.kind))
        by_flow: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        oldest: float | None = None
        for row in self.store._query(query):
            n = int(row["n"])
            by_flow[row["flow"]] = by_flow.get(row["flow"], 0) + n
            by_kind[row["kind"]] = by_kind.get(row["kind"], 0) + n
            oldest = row["oldest"] if oldest is None else min(oldest, row["oldest"])
        return {"by_flow": by_flow, "by_kind": by_kind, "oldest": oldest}

    def get(self, task_id: str, *, now: float | None = None) -> dict[str, Any] | None:
        """Task ``task_id``: its columns (``keys``, ``choices``, ``proposal``, ``answer`` decoded),
        ``flow``, ``document`` and ``run_status``; ``None`` if there is none."""
        rows = self.store._query(sa.select(*_COLUMNS).select_from(_WITH_RUN).where(review_tasks.c.id == task_id))
        return self._task(rows[0], time.time() if now is None else now) if rows else None

    def claim(self, task_id: str, reviewer: str, lease_s: float, *, now: float | None = None) -> bool:
        """Give task ``task_id`` to ``reviewer`` for ``lease_s`` seconds if nobody else holds it
        (the holder may claim again: its lease is renewed). ``True`` if it won."""
        now = time.time() if now is None else now
        held = sa.and_(review_tasks.c.status == ReviewStatus.CLAIMED, review_tasks.c.lease_owner == reviewer)
        update = (review_tasks.update()
                  .where(review_tasks.c.id == task_id, sa.or_(_free(now), held))
                  .values(status=ReviewStatus.CLAIMED, lease_owner=reviewer, lease_expires_at=now + lease_s))
        with self.store._begin() as conn:
            return bool(conn.execute(update).rowcount == 1)

    def release(self, task_id: str, reviewer: str) -> bool:
        """Give back ``reviewer``'s claim of task ``task_id``; ``True`` if it held one."""
        update = (review_tasks.update()
                  .where(review_tasks.c.id == task_id, review_tasks.c.status == ReviewStatus.CLAIMED,
                         review_tasks.c.lease_owner == reviewer)
                  .values(status=ReviewStatus.WAITING, lease_owner=None, lease_expires_at=None))
        with self.store._begin() as conn:
            return bool(conn.execute(update).rowcount == 1)

    def answer(self, task_id: str, reviewer: str, values: dict[str, Any], *, now: float | None = None) -> bool:
        """Record ``values`` (the answer, by key) as ``reviewer``'s, and the review step's
        succeeded task run writing them with ``<key>_reviewed_by`` and ``<key>_reviewed_at``, in
        one transaction, if the task is not answered and no other reviewer's lease holds it.
        ``True`` if this call answered it."""
        now = time.time() if now is None else now
        task = self.get(task_id, now=now)
        if task is None:
            return False
        held = sa.and_(review_tasks.c.status == ReviewStatus.CLAIMED, review_tasks.c.lease_owner == reviewer)
        update = (review_tasks.update()
                  .where(review_tasks.c.id == task_id, sa.or_(_free(now), held))
                  .values(status=ReviewStatus.ANSWERED, answer=json.dumps(values), answered_by=reviewer,
                          answered_at=now, lease_owner=None, lease_expires_at=None))
        outputs = {w: v for k, value in values.items()
                   for w, v in ((k, value), (f"{k}_reviewed_by", reviewer), (f"{k}_reviewed_at", now))}
        step = {"flow_run_id": task["flow_run_id"], "step": task["step"], "block": "review", "attempt": 1,
                "status": Status.SUCCEEDED.value, "started_at": task["created_at"], "finished_at": now,
                "worker": "review", "outputs": json.dumps(outputs, default=str)}
        with self.store._begin() as conn:
            if conn.execute(update).rowcount != 1:
                return False
            conn.execute(task_runs.insert().values(step))
        return True

    def answered(self, *, flow: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """Every answered task (of flow ``flow``, kind ``kind``), in the order they were
        answered, as :meth:`get` gives them: what ``docpipe review export`` reads."""
        query = sa.select(*_COLUMNS).select_from(_WITH_RUN).where(review_tasks.c.status == ReviewStatus.ANSWERED)
        if flow is not None:
            query = query.where(flows.c.name == flow)
        if kind is not None:
            query = query.where(review_tasks.c.kind == kind)
        now = time.time()
        query = query.order_by(review_tasks.c.answered_at, review_tasks.c.id)
        return [self._task(row, now) for row in self.store._query(query)]

    def open_runs(self, batch_id: str) -> set[str]:
        """The runs of batch ``batch_id`` with a review task not yet answered."""
        query = sa.select(review_tasks.c.flow_run_id).where(
            review_tasks.c.batch_id == batch_id, review_tasks.c.status != ReviewStatus.ANSWERED)
        with self.store._connect() as conn:
            return set(conn.execute(query).scalars())

    def answered_batches(self) -> list[str]:
        """Batches, oldest first, with a waiting run whose review tasks are all answered: what
        a resume would continue."""
        still_open = sa.select(review_tasks.c.flow_run_id).where(review_tasks.c.status != ReviewStatus.ANSWERED)
        query = (sa.select(flow_runs.c.batch_id, sa.func.min(batches.c.started_at).label("started"))
                 .select_from(flow_runs.join(batches, batches.c.id == flow_runs.c.batch_id))
                 .where(flow_runs.c.status == Status.WAITING, flow_runs.c.id.not_in(still_open))
                 .group_by(flow_runs.c.batch_id).order_by("started"))
        return [row["batch_id"] for row in self.store._query(query)]

    def _task(self, row: sa.RowMapping, now: float) -> dict[str, Any]:
        """A row as a dict with its JSON decoded and an expired claim shown waiting."""
        task = dict(row)
        for key in ("keys", "choices", "answer"):
            task[key] = None if task[key] is None else json.loads(task[key])
        task["proposal"] = self.store._decode(task["proposal"], True)
        expires = task["lease_expires_at"]
        if task["status"] == ReviewStatus.CLAIMED and expires is not None and expires < now:
            task.update(status=ReviewStatus.WAITING.value, lease_owner=None, lease_expires_at=None)
        return task

