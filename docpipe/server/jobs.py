"""Runs, retries, resumes and continues asked for from the UI or the API: rows of the store's
``jobs`` table (:mod:`docpipe.store.jobs`), run by the server's
:class:`~docpipe.service.worker.Runner` on its resident engine.

Being rows, they outlive the server: after a restart (a ``kill -9`` included) the runner
claims every unfinished one again once its lease expires, and a run job whose batch had
started resumes that batch. Several servers on one PostgreSQL share them.

One job per batch at a time: a job that would repeat one already queued or running for the
batch (the same resume, a retry of the same documents) is refused (:class:`Duplicate`);
another job of a busy batch is queued (the runner runs batch jobs one at a time, oldest
first).
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from docpipe.flow import redact_params
from docpipe.status import JobStatus
from docpipe.store import Store, new_id

if TYPE_CHECKING:
    from docpipe.service.worker import Runner

log = logging.getLogger("docpipe.server.jobs")

#: the source of the jobs the UI and the API's batch actions queue
SOURCE = "ui"


@dataclass
class Job:
    """One run, retry, resume or continue the server was asked for (a ``jobs`` row)."""

    kind: str  # "run" | "retry" | "resume" | "continue" (a resume after a review's answer)
    flow: str
    batch_id: str | None = None
    id: str = field(default_factory=new_id)
    status: str = JobStatus.QUEUED
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    documents: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    #: the documents a retry is limited to (``None``: every failed document of the batch)
    only: list[str] | None = None
    #: the job of the same batch this one was queued after, if one was active then
    after: str | None = None
    #: a finished job's outcome: the batch's status then (succeeded, failed, waiting)
    outcome: str | None = None
    #: how many times a server took it (more than one: a server died holding it)
    claims: int = 0

    @property
    def active(self) -> bool:
        return self.status in (JobStatus.QUEUED, JobStatus.RUNNING)

    def repeats(self, other: Job) -> bool:
        """Whether this job would do again what ``other`` (active, same batch) is doing."""
        if self.kind == "continue":  # a queued resume will see the answer; a running one may not
            return other.kind in ("continue", "resume") and other.status == JobStatus.QUEUED
        if other.kind != self.kind:
            return False
        if self.kind != "retry" or other.only is None:
            return True
        return self.only is not None and set(self.only) <= set(other.only)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}

    @classmethod
    def of(cls, row: Mapping[str, Any], counts: dict[str, int] | None = None) -> Job:
        payload = row.get("payload") or {}
        return cls(kind=row["kind"], flow=str(payload.get("flow_name") or row["flow"]), batch_id=row["batch_id"],
                   id=row["id"], status=row["status"], error=row["error"], counts=counts or {},
                   documents=int(payload.get("n") or 0), created_at=row["created_at"],
                   started_at=row["started_at"], finished_at=row["finished_at"], only=payload.get("only"),
                   after=payload.get("after"), outcome=row["outcome"], claims=row["claims"])


class Duplicate(Exception):
    """A job would repeat ``job``, which is queued or running on the same batch."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} ({job.kind} of batch {job.batch_id}) is already {job.status}")
        self.job = job


class Jobs:
    """The server's batch jobs, in the store; the runner runs them."""

    def __init__(self, store: Store, runner: Runner | None = None) -> None:
        self.store = store
        self.runner = runner
        self._lock = threading.Lock()  # check and queue as one step (racing requests)

    def submit(self, job: Job, payload: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> Job:
        """Queue ``job`` (``payload``: what the runner needs to run it again from the row;
        ``params`` its params, secrets included, kept in this process only). A job on a batch
        that another active job works on waits for it (``after`` names it); one that would
        repeat such a job raises :class:`Duplicate`."""
        with self._lock:
            if job.batch_id:
                ahead = [j for j in self.active_on(job.batch_id) if j.kind != "document"]
                for other in ahead:
                    if job.repeats(other):
                        raise Duplicate(other)
                if ahead:
                    job.after = ahead[-1].id
            stored = {**payload, "params": redact_params(dict(params or {})), "n": job.documents,
                      "only": job.only, "flow_name": job.flow, "after": job.after}
            row, _ = self.store.jobs.submit(job.kind, job.flow, source=SOURCE, batch_id=job.batch_id,
                                            payload=stored)
            job.id, job.created_at = row["id"], row["created_at"]
        if self.runner is not None:
            self.runner.remember(job.id, params or {})
            self.runner.wake()
        log.info("job %s queued: %s of %s, batch %s, %d document%s%s", job.id, job.kind, job.flow,
                 job.batch_id or "(new)", job.documents, "" if job.documents == 1 else "s",
                 f", after job {job.after}" if job.after else "")
        return job

    def get(self, job_id: str) -> Job | None:
        row = self.store.jobs.get(job_id)
        return None if row is None else self._job(row)

    def list(self, limit: int = 100) -> builtins.list[Job]:
        """The batch jobs, newest first (a ``document`` job shows as its run)."""
        rows = self.store.jobs.list(source=SOURCE, limit=limit)
        return [self._job(r) for r in rows]

    def active_on(self, batch_id: str) -> builtins.list[Job]:
        """The queued and running jobs of batch ``batch_id`` (documents' too), oldest first."""
        rows = [r for status in (JobStatus.QUEUED, JobStatus.RUNNING)
                for r in self.store.jobs.list(status=status, batch_id=batch_id, limit=10_000)]
        return [Job.of(r) for r in sorted(rows, key=lambda r: r["created_at"])]

    def close(self, timeout: float = 5.0) -> None:
        """Nothing to stop here: the runner is stopped by the server."""

    def _job(self, row: Mapping[str, Any]) -> Job:
        counts: dict[str, int] = {}
        if row["batch_id"] and row["status"] not in (JobStatus.QUEUED,):
            batch = self.store.batch(row["batch_id"])
            counts = dict((batch or {}).get("counts") or {})
        return Job.of(row, counts)
