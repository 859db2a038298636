"""Runs, retries and resumes started from the UI or the API, executed one at a time, in the
order they were asked for, by a background thread with the same
:class:`~docpipe.engine.Engine` the CLI drives.

One job per batch at a time: two engines on one batch would race over its runs. A job
asked for while another job of its batch is queued or running is queued after it (it
starts when every job before it has ended); only a job that would repeat one already
queued or running for the batch (the same resume, a retry of the same documents) is
refused (:class:`Duplicate`).

A job opens its own :class:`~docpipe.store.Store` on the server's database (its
own record writer), so the pages keep reading while it runs. Jobs live in
memory: after a restart their batches are still in the store, and a batch that
was interrupted can be resumed from its page.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from queue import SimpleQueue
from typing import Any

from docpipe.status import JobStatus
from docpipe.store import Store

log = logging.getLogger("docpipe.server.jobs")

@dataclass
class Job:
    """One run, retry or resume the server was asked for."""

    kind: str  # "run" | "retry" | "resume" | "continue" (a resume after a review's answer)
    flow: str
    batch_id: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
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


class JobStore(Store):
    """The store a job writes through: a real store that also tells its job the id of the
    batch the engine starts, as soon as it is started (so the pages can link to it)."""

    job: Job | None = None

    def start_batch(self, *args: Any, **kwargs: Any) -> str:
        batch_id = super().start_batch(*args, **kwargs)
        if self.job is not None:
            self.job.batch_id = batch_id
        return batch_id


class Duplicate(Exception):
    """A job would repeat ``job``, which is queued or running on the same batch."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} ({job.kind} of batch {job.batch_id}) is already {job.status}")
        self.job = job


#: What a job does: given the job's store and an engine, run and return the BatchResult.
Work = Callable[[Any, Any], Any]


class Jobs:
    """A FIFO of jobs and the one thread that runs them."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers
        self._jobs: dict[str, Job] = {}
        self._queue: SimpleQueue[tuple[Job, JobStore, Work] | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="docpipe-jobs", daemon=True)
        self._thread.start()

    def submit(self, job: Job, store: JobStore, work: Work) -> Job:
        """Queue ``work`` to run with ``store`` (which the job closes when done). A job on a
        batch that another queued or running job works on waits for it (``after`` names it);
        one that would repeat such a job raises :class:`Duplicate` (and closes the store).
        Checked and registered under one lock, so two requests at once cannot both pass."""
        with self._lock:
            if job.batch_id:
                ahead = [j for j in self._jobs.values() if j.active and j.batch_id == job.batch_id]
                for other in ahead:
                    if job.repeats(other):
                        store.close()
                        raise Duplicate(other)
                if ahead:
                    job.after = ahead[-1].id  # the dict keeps submission order
            store.job = job
            self._jobs[job.id] = job
            self._queue.put((job, store, work))  # under the lock: queue order is check order
        log.info("job %s queued: %s, %s%s", job.id, _what(job), _documents(job),
                 f", after job {job.after}" if job.after else "")
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def active_on(self, batch_id: str) -> builtins.list[Job]:
        """The queued and running jobs of batch ``batch_id``, in queue order."""
        with self._lock:
            return [j for j in self._jobs.values() if j.active and j.batch_id == batch_id]

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking jobs; wait a little for the running one (its batch can be resumed)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        from docpipe.engine import Engine

        while True:
            item = self._queue.get()
            if item is None:
                return
            job, store, work = item
            job.status, job.started_at = JobStatus.RUNNING, time.time()
            log.info("job %s started: %s, %s", job.id, _what(job), _documents(job))
            try:
                with Engine(store, workers=self.workers) as engine:
                    result = work(store, engine)
                job.batch_id = result.batch_id or job.batch_id
                job.counts = dict(result.counts)
                job.status = JobStatus.FINISHED
            except Exception as exc:  # noqa: BLE001 - a failed job is shown, the server goes on
                job.status, job.error = JobStatus.ERROR, f"{type(exc).__name__}: {exc}"
                log.exception("job %s error: %s, in %.2f s: %s", job.id, _what(job),
                              time.time() - job.started_at, job.error)
            finally:
                job.finished_at = time.time()
                if job.status == JobStatus.FINISHED:
                    counts = ", ".join(f"{k} {v}" for k, v in job.counts.items()) or "no documents"
                    log.info("job %s finished: %s, %s, in %.2f s", job.id, _what(job), counts,
                             job.finished_at - job.started_at)
                try:
                    store.close()
                except Exception:  # noqa: BLE001
                    log.exception("closing the store of job %s", job.id)


def _what(job: Job) -> str:
    """``retry of idp, batch 1a2b…`` (a new batch has no id until its job starts it)."""
    return f"{job.kind} of {job.flow}, batch {job.batch_id or '(new)'}"


def _documents(job: Job) -> str:
    return f"{job.documents} document{'' if job.documents == 1 else 's'}"
