"""The runner of a server: claims jobs from the store and runs them on one resident engine.

A server (``docpipe serve``) holds one :class:`Runner`. Its thread claims jobs
(``store.jobs``, :mod:`docpipe.store.jobs`) under a lease and:

* a ``document`` job (an upload, a watched folder's file) joins the started
  :class:`~docpipe.engine.Engine` as a document of its batch (an
  :class:`~docpipe.engine.OpenBatch`), so it runs on pools that are already warm, next
  to every other document in flight, with the run id it was given when it was queued;
* a ``run``, ``retry``, ``resume`` or ``continue`` job (the UI's and the API's batch
  actions) runs on the same engine, one at a time, on a second thread.

Leases are renewed every third of their length while the jobs run. A job ends only after
its run's final record is written (``writer.wait``); the job's end and its sinks' outbox
rows are one transaction (``store.jobs.finish``). So after a ``kill -9`` the jobs this
server held are claimed again once their leases expire (by this server restarted, or by
another on the same PostgreSQL), and a claim that is not the job's first resumes its run
from the recorded steps (``Store.run_state``): a run that had finished is not run again,
one in flight continues, nothing is lost and nothing delivered twice.

The runner has its own :class:`~docpipe.store.Store` (its own record writer); the caller
makes it and closes it after :meth:`Runner.stop`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from docpipe.status import JobStatus, Status

if TYPE_CHECKING:
    from docpipe.engine import DocResult, Engine, OpenBatch
    from docpipe.executors.base import Executor
    from docpipe.planner import Plan
    from docpipe.plugins import Registry
    from docpipe.store import Store

log = logging.getLogger("docpipe.server.runner")
#: one line per batch job's start and end (what ``docpipe serve --log-level info`` shows)
job_log = logging.getLogger("docpipe.server.jobs")

#: the kinds of job that are whole batches (the others are ``document``)
BATCH_KINDS = ("run", "retry", "resume", "continue")
#: a run status a document's run ends in (``waiting`` ends the job; a continue takes it up)
_FINAL = (Status.SUCCEEDED, Status.FAILED, Status.WAITING)


def default_owner() -> str:
    """This server's name on its leases: ``host:pid:random`` (a restarted server is another)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Open:
    """An open batch of the engine and how many of this runner's jobs are in it."""

    batch: OpenBatch
    jobs: int = 0


@dataclass
class Runner:
    """Claim jobs and run them on one started engine (see the module docstring)."""

    store: Store
    registry: Registry
    owner: str = field(default_factory=default_owner)
    workers: int | None = None
    executor: Executor | None = None
    max_in_flight: int = 256
    #: seconds a claim holds a job without renewal (a dead server's jobs wait this long)
    lease_s: float = 30.0
    #: seconds between claims when nothing wakes the runner (jobs other servers queued)
    poll_s: float = 0.5
    #: the sinks every finished run is delivered to (their names: the outbox's rows)
    sinks: Sequence[str] = ()
    #: called after jobs ended with deliveries queued (the sinks' dispatcher's ``wake``)
    on_delivery: Callable[[], None] | None = None
    #: counts leases taken over (``Telemetry.lease_expired``)
    on_lease_expired: Callable[[int], None] | None = None
    #: the engine's ``work_dir`` (run folders)
    work_dir: str | None = None

    def __post_init__(self) -> None:
        from docpipe.engine import Engine

        self.engine: Engine = Engine(self.store, workers=self.workers, executor=self.executor,
                                     max_in_flight=self.max_in_flight, keep_results=False,
                                     on_document=self._on_document, work_dir=self.work_dir)
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._batch_thread: threading.Thread | None = None
        self._batch_jobs: SimpleQueue[dict[str, Any] | None] = SimpleQueue()
        #: document jobs in the engine: run id -> job row
        self._by_run: dict[str, dict[str, Any]] = {}
        #: the batch job running now and the runs it ended (for its deliveries)
        self._batch_job: dict[str, Any] | None = None
        self._batch_runs: list[str] = []
        self._ended: SimpleQueue[DocResult] = SimpleQueue()
        self._open: dict[str, _Open] = {}
        self._plans: dict[tuple[str, str], tuple[Plan, int]] = {}
        self._batches: set[str] = set()
        #: params given with a job this server queued (secrets included: never stored)
        self._given: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._finishing = threading.Lock()
        self._batch_idle = threading.Event()
        self._batch_idle.set()
        self.claimed = 0
        self.taken_over = 0

    # --- public --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine (pools start as flows need them) and the claiming threads."""
        self.engine.start()
        self._thread = threading.Thread(target=self._loop, name="docpipe-runner", daemon=True)
        self._batch_thread = threading.Thread(target=self._batch_loop, name="docpipe-batch-jobs", daemon=True)
        self._thread.start()
        self._batch_thread.start()
        log.info("runner %s started", self.owner)

    def wake(self) -> None:
        """Jobs were queued: claim now rather than at the next poll."""
        self._wake.set()

    def remember(self, job_id: str, params: Mapping[str, Any]) -> None:
        """The params (secrets included) a job this server queued runs with; its stored payload
        has them masked. A job taken over after a restart has only the stored ones."""
        with self._lock:
            self._given[job_id] = dict(params)

    @property
    def ready(self) -> str | None:
        """Why the runner cannot take work (``None``: it can)."""
        if self.engine.crashed is not None:
            return f"the engine stopped: {self.engine.crashed!r}"
        if self._thread is None or not self._thread.is_alive():
            return "the runner is not running"
        return None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, stop the engine (runs in flight stay recorded running), and give the
        jobs this server holds back to the queue at once (no lease to wait for)."""
        self._stopping = True
        self._wake.set()
        self._batch_jobs.put(None)
        for t in (self._thread, self._batch_thread):
            if t is not None:
                t.join(timeout)
        self.engine.close()
        try:
            self._finish_ended()
            released = self.store.jobs.release(self.owner)
            if released:
                log.info("runner %s stopped: %d unfinished jobs back in the queue", self.owner, released)
        except Exception:  # noqa: BLE001 - their leases expire: another claim takes them
            log.exception("runner %s: releasing its jobs", self.owner)

    # --- the claiming thread --------------------------------------------------------------
    def _loop(self) -> None:
        renew_at = time.monotonic() + self.lease_s / 3
        while not self._stopping:
            self._wake.clear()
            try:
                self._finish_ended()
                got = self._claim()
                if time.monotonic() >= renew_at:
                    self._renew()
                    renew_at = time.monotonic() + self.lease_s / 3
            except Exception:  # noqa: BLE001 - the database may be away for a while: try again
                log.exception("runner %s", self.owner)
                got = 0
            if not got:
                self._wake.wait(min(self.poll_s, max(0.0, renew_at - time.monotonic())))

    def _held(self) -> list[str]:
        with self._lock:
            ids = [job["id"] for job in self._by_run.values()]
        if self._batch_job is not None:
            ids.append(self._batch_job["id"])
        return ids

    def _claim(self) -> int:
        room = self.max_in_flight * 2 - len(self._by_run)
        if room <= 0 or self.engine.crashed is not None:
            return 0
        jobs = self.store.jobs.claim(self.owner, limit=min(room, 64), lease_s=self.lease_s, kinds=["document"])
        if self._batch_idle.is_set():  # one batch job at a time: only a held one has its lease renewed
            batch_jobs = self.store.jobs.claim(self.owner, limit=1, lease_s=self.lease_s, kinds=BATCH_KINDS)
            if batch_jobs:
                self._batch_idle.clear()
                jobs += batch_jobs
        if not jobs:
            return 0
        self.claimed += len(jobs)
        again = sum(1 for j in jobs if j["claims"] > 1)
        if again:
            self.taken_over += again
            log.info("runner %s took over %d job(s) whose lease had expired", self.owner, again)
            if self.on_lease_expired is not None:
                self.on_lease_expired(again)
        for job in jobs:
            if job["kind"] == "document":
                self._take(job)
            else:
                self._batch_jobs.put(job)
        return len(jobs)

    def _renew(self) -> None:
        held = self._held()
        if not held:
            return
        kept = self.store.jobs.renew(self.owner, held, self.lease_s)
        lost = set(held) - kept
        if lost:  # another server took them over (this one was stalled past the lease)
            log.warning("runner %s lost the lease of %d job(s); their results here will be dropped",
                        self.owner, len(lost))

    def _end(self, job: Mapping[str, Any], *, outcome: str | None = None, error: str | None = None,
             status: str = JobStatus.FINISHED, run_ids: list[str] | None = None) -> None:
        # a run that waits for a review is delivered when it ends (its continue job's end)
        delivered = outcome in (Status.SUCCEEDED, Status.FAILED) or (outcome is not None and run_ids)
        sinks = list(self.sinks) if delivered else []
        # a batch job's runs may have been delivered before (failed, now retried): again
        ok = self.store.jobs.finish(job["id"], self.owner, status=status, outcome=outcome, error=error,
                                    sinks=sinks, run_ids=run_ids, again=run_ids is not None)
        if not ok:
            log.warning("job %s was taken over by another server; its result here is dropped", job["id"])
        with self._lock:
            self._given.pop(job["id"], None)
        if ok and sinks and self.on_delivery is not None:
            self.on_delivery()

    # --- document jobs ----------------------------------------------------------------------
    def _plan(self, job: Mapping[str, Any]) -> tuple[Plan, int]:
        """The plan (and its recorded flow's id) a document job runs, cached per flow and params."""
        from docpipe.flow import redact_definition
        from docpipe.service.intake import plan_job

        payload = job["payload"] or {}
        key = (str(job["flow"]), json.dumps(payload.get("params") or {}, sort_keys=True, default=str)
               + str(payload.get("content_hash")))
        found = self._plans.get(key)
        if found is None:
            plan = plan_job(self.store, job, self.registry)
            flow_id = self.store.put_flow(plan.name, plan.version, plan.content_hash,
                                          redact_definition(plan.definition))
            if len(self._plans) > 256:
                self._plans.clear()
            found = self._plans[key] = (plan, flow_id)
        return found

    def _ensure_batch(self, job: Mapping[str, Any], plan: Plan, flow_id: int) -> None:
        """Record the job's batch when its first document starts (by whichever server)."""
        from docpipe.flow import redact_params
        from docpipe.service.plans import subflows_of

        batch_id = job["batch_id"]
        if batch_id in self._batches:
            return
        if self.store.batch(batch_id) is None:
            # its documents, in order, as a batch's inputs: the batch can be resumed and retried
            # like any other once its jobs have ended
            docs = sorted(self.store.jobs.list(batch_id=batch_id, limit=1_000_000),
                          key=lambda j: (j["payload"] or {}).get("seq", 0))
            try:
                self.store.start_batch(flow_id, redact_params(plan.params), None,
                                       ["docpipe", "serve", f"({job['source']})"], batch_id=batch_id,
                                       inputs=[(j["document"], j["correlation_id"]) for j in docs],
                                       subflows=subflows_of(plan))
            except sa.exc.IntegrityError:
                pass  # another server recorded it first
        if len(self._batches) > 10_000:
            self._batches.clear()
        self._batches.add(batch_id)

    def _take(self, job: dict[str, Any]) -> None:
        """Put a claimed document job into the engine (or end it, if its run already ended)."""
        try:
            plan, flow_id = self._plan(job)
            self._ensure_batch(job, plan, flow_id)
        except Exception as exc:  # noqa: BLE001 - a job that cannot be planned fails alone
            log.warning("job %s cannot run: %s", job["id"], exc)
            self._end(job, status=JobStatus.ERROR, error=f"{type(exc).__name__}: {exc}")
            return
        # what did its run do before? Nothing on its first claim; a job taken again (its server
        # died holding it, or gave it back when it stopped) may have a run to resume or that ended
        state = self.store.run_state(job["run_id"]) if job["claims"] > 1 else None
        if state is not None and state["status"] in _FINAL:
            self._end(job, outcome=state["status"], error=state.get("error"))
            return
        resume = state
        batch_id = job["batch_id"]
        opened = self._open.get(batch_id)
        if opened is None:
            opened = self._open[batch_id] = _Open(self.engine.open_batch(plan, batch_id=batch_id, flow_id=flow_id))
        opened.jobs += 1
        with self._lock:
            self._by_run[job["run_id"]] = job
        opened.batch.add(job["document"], correlation_id=job["correlation_id"], run_id=job["run_id"],
                         resume=resume)

    def _on_document(self, result: DocResult) -> None:
        """A run ended (on the engine's thread): its job ends on the runner's."""
        self._ended.put(result)
        self._wake.set()

    def _finish_ended(self) -> None:
        with self._finishing:  # both threads: a batch job's runs are all counted before it ends
            self._finish_ended_locked()

    def _finish_ended_locked(self) -> None:
        ended: list[DocResult] = []
        while True:
            try:
                ended.append(self._ended.get_nowait())
            except Empty:
                break
        if not ended:
            return
        self.store.writer.wait()  # the runs' final records are written before their jobs end
        done_batches: list[str] = []
        for result in ended:
            with self._lock:
                job = self._by_run.pop(result.run_id, None)
            if job is None:  # a run of the batch job that runs now
                if self._batch_job is not None and result.status != Status.WAITING:
                    self._batch_runs.append(result.run_id)
                continue
            self._end(job, outcome=result.status, error=result.error)
            opened = self._open.get(job["batch_id"])
            if opened is not None:
                opened.jobs -= 1
                if opened.jobs <= 0:
                    opened.batch.close()
                    del self._open[job["batch_id"]]
                    done_batches.append(job["batch_id"])
        for batch_id in done_batches:
            self._close_batch_record(batch_id)

    def _close_batch_record(self, batch_id: str) -> None:
        """Record the end of a document batch once none of its jobs is queued or running."""
        rows = self.store.jobs.outcomes(batch_id)
        if any(status in (JobStatus.QUEUED, JobStatus.RUNNING) for status, _ in rows):
            return
        counts: dict[str, int] = {Status.SUCCEEDED: 0, Status.FAILED: 0}
        for (status, outcome), n in rows.items():
            key = outcome or (Status.FAILED if status == JobStatus.ERROR else str(status))
            counts[key] = counts.get(key, 0) + n
        status = (Status.FAILED if counts.get(Status.FAILED) else
                  Status.WAITING if counts.get(Status.WAITING) else Status.SUCCEEDED)
        try:
            self.store.finish_batch(batch_id, status, counts)
        except KeyError:
            pass  # never recorded (every job failed before its first run)

    # --- batch jobs -----------------------------------------------------------------------
    def _batch_loop(self) -> None:
        while True:
            job = self._batch_jobs.get()
            if job is None or self._stopping:
                return
            self._batch_job, self._batch_runs = job, []
            what = _what(job)
            t0 = time.perf_counter()
            job_log.info("job %s started: %s", job["id"], what)
            try:
                result = self._run_batch_job(job)
            except Exception as exc:  # noqa: BLE001 - a failed job is shown, the server goes on
                error = f"{type(exc).__name__}: {exc}"
                job_log.exception("job %s error: %s, in %.2f s: %s", job["id"], what.rsplit(", ", 1)[0],
                                  time.perf_counter() - t0, error)
                if not self._stopping:
                    self._end(job, status=JobStatus.ERROR, error=error)
            else:
                self._finish_ended()  # this thread's runs: their ids are in _batch_runs
                self._end(job, outcome=result.status, run_ids=list(self._batch_runs))
                counts = ", ".join(f"{k} {v}" for k, v in result.counts.items()) or "no documents"
                job_log.info("job %s finished: %s, %s, in %.2f s", job["id"], what.rsplit(", ", 1)[0], counts,
                             time.perf_counter() - t0)
            finally:
                self._batch_job = None
                self._batch_idle.set()
                self._wake.set()

    def _run_batch_job(self, job: Mapping[str, Any]) -> Any:
        """Run a ``run``/``retry``/``resume``/``continue`` job on the started engine."""
        from docpipe import service

        payload = dict(job["payload"] or {})
        with self._lock:
            params = self._given.get(job["id"], payload.get("params") or {})
        batch_id = job["batch_id"]
        if job["kind"] == "run" and (batch_id is None or self.store.batch(batch_id) is None):
            found = self.store.get_flow(payload.get("flow_name") or job["flow"],
                                        content_hash=payload.get("content_hash"))
            if found is None:
                raise service.NotFound(f"no recorded flow {job['flow']}")
            plan = service.plan_definition(found["definition"], self.registry, params)
            documents = [(str(p), c) for p, c in payload.get("documents") or []]
            return self.engine.run(plan, documents, argv=["docpipe", "serve"], batch_id=batch_id,
                                   correlation_id=payload.get("correlation_id"))
        only = payload.get("only")
        todo = service.continue_batch(self.store, batch_id, self.registry, params,
                                      retry_failed=job["kind"] == "retry", only=only)
        return todo.run(self.engine)


def _what(job: Mapping[str, Any]) -> str:
    """``retry of idp, batch 1a2b…, 3 documents``."""
    payload = job["payload"] or {}
    n = int(payload.get("n") or 0)
    return (f"{job['kind']} of {payload.get('flow_name') or job['flow']}, batch {job['batch_id'] or '(new)'}, "
            f"{n} document{'' if n == 1 else 's'}")
