"""The engine: drives flow runs over many documents at once, task by task.

One loop in the calling thread owns all run state (no locks on the hot path).
A task starts as soon as its inputs are ready; independent steps of a document
and many documents (up to ``max_in_flight``) are in flight together; there are
no stage barriers. ``inline`` steps run right in the loop (a function call);
``thread`` and ``process`` blocks go through batchers to their pools: ready
inputs of the same block (same params) from different documents are gathered
into one call, up to the block's batch size, or what is ready once the oldest
input has waited ``batch_wait`` — and a batch is only formed when the pool has
an idle worker, so a busy pool naturally gets full batches. Pools report back
through one event queue.

A document whose task fails is failed with the typed error and traceback; the
rest go on. A document that reaches a review step whose ``when`` holds waits: its
review task and its ``waiting`` status are recorded and the engine lets go of it
as it would of a failed run (its work in flight dropped, its folder removed); a
resume continues it once the task is answered (docs/review.md). Records go to the
store's writer, which batches them off the loop.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any

from docpipe import steps as steps_mod
from docpipe.artifacts import WORK_DIR_KEY, WorkArea, default_work_root, missing_files
from docpipe.blocks import params_key
from docpipe.budget import Budget, budget_on
from docpipe.errors import BlockTimeout, ExpressionError
from docpipe.executors import WAKE, Done, ErrorInfo
from docpipe.executors.base import BlockHost, Executor, Pool, Recycle
from docpipe.executors.local import LocalExecutor, NoDevicePool
from docpipe.executors.worker import MEMORY_ENV, default_memory_mb
from docpipe.flow import redact_definition, redact_params
from docpipe.inputs import INPUT_STEP, clean_text, display_path, not_a_regular_file
from docpipe.planner import Node, Plan, switch_key
from docpipe.provenance import cache_key, input_hash, static_provenance, with_inputs
from docpipe.status import ErrorKind, Status
from docpipe.steps import child_prefix, step_path
from docpipe.store import new_id
from docpipe.store.records import (
    ReviewTask,
    RunResumed,
    TaskRecord,
    run_finished,
    run_started,
    task_succeeded,
)

log = logging.getLogger("docpipe.engine")

#: the worker of a task record whose outputs were reused from an equal earlier task
REUSED = "reused"

#: the statuses by their former names here (benchmarks and plugins' tests import them)
SUCCEEDED, FAILED, SKIPPED, RETRYING = Status.SUCCEEDED, Status.FAILED, Status.SKIPPED, Status.RETRYING


@dataclass
class DocResult:
    run_id: str
    document: str
    status: str
    error_kind: str | None = None
    error: str | None = None
    step: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None


@dataclass
class BatchResult:
    batch_id: str | None
    #: each document's result, in input order (empty when the engine keeps none: ``keep_results``)
    results: list[DocResult]
    seconds: float
    #: documents by status (what ``results`` would count, also when none are kept)
    tally: dict[str, int] | None = None

    @property
    def failed(self) -> list[DocResult]:
        return [r for r in self.results if r.status == Status.FAILED]

    @property
    def waiting(self) -> list[DocResult]:
        """The documents waiting for a review (see docs/review.md)."""
        return [r for r in self.results if r.status == Status.WAITING]

    @property
    def status(self) -> Status:
        """The batch's outcome: failed if a document failed, else waiting if one waits for a
        review, else succeeded."""
        statuses = {k for k, v in self.counts.items() if v}
        return (Status.FAILED if Status.FAILED in statuses else
                Status.WAITING if Status.WAITING in statuses else Status.SUCCEEDED)

    @property
    def counts(self) -> dict[str, int]:
        if self.tally is not None:
            return dict(self.tally)
        out: dict[str, int] = {Status.SUCCEEDED: 0, Status.FAILED: 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def _noop(*_: Any) -> None:
    return None


def _zero() -> int:
    return 0


#: records the store's writer may have unwritten before new documents wait for it
MAX_BACKLOG = 20_000
#: how often documents waiting for the writer look again, in seconds
BACKLOG_WAIT = 0.02


class _Run:
    """One document's run of a plan (or a subflow's run inside a parent run)."""

    __slots__ = ("id", "seq", "document", "plan", "state", "pending", "left", "root", "stopped",
                 "parent", "prefix", "maps", "restored_items", "batch")

    def __init__(self, run_id: str, seq: int, document: str, plan: Plan, state: dict[str, Any],
                 parent: tuple[_Run, Node] | None = None, prefix: str = "", batch: _Batch | None = None) -> None:
        self.id, self.seq, self.document, self.plan, self.state = run_id, seq, document, plan, state
        #: the batch the run belongs to (a subflow's run: its parent's)
        self.batch: _Batch = parent[0].batch if parent else batch  # type: ignore[assignment]
        self.pending = [len(n.deps) for n in plan.nodes]
        self.left = len(plan.nodes)
        self.parent = parent
        self.root: _Run = parent[0].root if parent else self
        #: the run ended early (failed, or waits for a review): its work still in flight is dropped
        self.stopped = False
        self.prefix = prefix
        self.maps: dict[int, list[Any]] = {}
        #: results of map items that succeeded before a resume: step id -> item index -> result
        self.restored_items: dict[str, dict[int, dict[str, Any]]] = {}


class _Item:
    """One input of a thread/process block waiting for, or inside, a pool call."""

    __slots__ = ("run", "node", "inputs", "index", "attempt", "queued")

    def __init__(self, run: _Run, node: Node, inputs: dict[str, Any], index: int,
                 attempt: int) -> None:
        self.run, self.node, self.inputs, self.index, self.attempt = run, node, inputs, index, attempt
        self.queued = time.monotonic()


class _Batch:
    """One batch in the engine: its plan and params, the documents still to admit (an iterator
    read as slots free up, plus documents added to an open batch), its counts. Many can be
    in one engine at once (a server's); nothing here grows with the number of documents
    unless ``results`` are kept."""

    __slots__ = ("plan", "id", "flow_id", "params", "source", "added", "finished", "resumable", "active",
                 "counts", "results", "order", "open", "on_document", "on_end", "seq", "t0", "ended")

    def __init__(self, plan: Plan, batch_id: str | None, flow_id: int | None,
                 source: Iterator[tuple[str, str | None]] | None, *, keep_results: bool,
                 finished: dict[str, DocResult] | None = None, resumable: dict[str, dict[str, Any]] | None = None,
                 open_: bool = False, on_document: Callable[[DocResult], None] = _noop,
                 on_end: Callable[[BatchResult], None] = _noop) -> None:
        self.plan, self.id, self.flow_id, self.params = plan, batch_id, flow_id, plan.params
        self.source = source
        #: documents added to an open batch: (path, correlation id, run id, resume entry)
        self.added: deque[tuple[str, str | None, str | None, dict[str, Any] | None]] = deque()
        self.finished, self.resumable = finished or {}, resumable or {}
        self.active, self.seq, self.open, self.ended = 0, 0, open_, False
        self.counts: dict[str, int] = {Status.SUCCEEDED: 0, Status.FAILED: 0}
        self.results: list[DocResult] | None = [] if keep_results else None
        self.order: dict[str, int] = {}
        self.on_document, self.on_end = on_document, on_end
        self.t0 = time.perf_counter()

    def has_docs(self) -> bool:
        return bool(self.added) or self.source is not None

    def done(self) -> bool:
        return not self.open and not self.added and self.source is None and self.active == 0

    def result(self) -> BatchResult:
        results = sorted(self.results, key=lambda r: self.order[r.run_id]) if self.results is not None else []
        return BatchResult(self.id, results, time.perf_counter() - self.t0, dict(self.counts))


class OpenBatch:
    """A batch a running engine (:meth:`Engine.start`) takes documents into as they come
    (a server's jobs): :meth:`add` them from any thread, :meth:`close` when no more will
    come; ``on_end`` hears the :class:`BatchResult` once every document has ended."""

    def __init__(self, engine: Engine, batch: _Batch) -> None:
        self._engine, self._batch = engine, batch

    @property
    def id(self) -> str | None:
        return self._batch.id

    def add(self, path: str, *, correlation_id: str | None = None, run_id: str | None = None,
            resume: dict[str, Any] | None = None) -> None:
        """Run ``path`` in this batch: a new run (with ``run_id`` if given), or, with ``resume``
        (:meth:`~docpipe.store.Store.run_state` of a run a dead server left running), that
        run continued from its recorded steps."""
        self._engine._call(self._engine._add, self._batch, (path, correlation_id, run_id, resume))

    def close(self) -> None:
        """No more documents: the batch ends when those added have."""
        self._engine._call(self._engine._close_batch, self._batch)


class _Batcher:
    __slots__ = ("pool", "size", "wait", "items", "solo", "name", "tokens")

    def __init__(self, pool: Pool, size: int, wait: float, name: str, tokens: int = 0) -> None:
        self.pool, self.size, self.wait, self.name = pool, size, wait, name
        #: the budget's core tokens each call holds while it runs (0: no budget)
        self.tokens = tokens
        self.items: deque[_Item] = deque()
        self.solo: deque[_Item] = deque()  # inputs of a batch that raised, retried one by one


def _waited_since(b: _Batcher) -> float:
    """When the oldest input waiting for the batcher's pool was queued."""
    return b.solo[0].queued if b.solo else b.items[0].queued


#: a map item's step name: ``ocr[3]``


def redact_arg(arg: str) -> str:
    """A command-line argument as it may be recorded (``password=x`` -> ``password=***``)."""
    key, sep, value = arg.partition("=")
    return f"{key}=***" if sep and value and redact_params({key: value})[key] == "***" else arg


class Engine:
    """Run plans over documents. Reuse one engine for several runs to keep pools warm; or
    :meth:`start` it, and :meth:`open_batch` batches that take documents as they come (a
    server): their runs share the engine's pools and its ``max_in_flight``."""

    def __init__(self, store: Any = None, *, workers: int | None = None,
                 max_in_flight: int = 256, on_document: Callable[[DocResult], None] | None = None,
                 executor: Executor | None = None, work_dir: str | os.PathLike[str] | None = None,
                 worker_memory_mb: int | None = None, one_batch: bool = False,
                 prestart: bool = True, keep_results: bool = True, cores: int | None = None,
                 gpus: Iterable[int] | None = None, budget: bool | None = None) -> None:
        self.store = store
        #: this engine runs one batch (the CLI): a pool gets no more workers than the batch has
        #: documents (a map step's pool excepted), since more would only load the model more
        #: often. An engine kept for many batches (a server) keeps full pools.
        self.one_batch = one_batch
        #: start every pool a batch's flow needs when the batch starts (see ``_prestart``)
        self.prestart = prestart
        #: keep each document's :class:`DocResult` for the :class:`BatchResult` (``False``: only
        #: the counts, so a batch of a million documents holds no more than one of a thousand;
        #: ``on_document`` still hears of each, and the store has them all)
        self.keep_results = keep_results
        #: the work area of the runs' folders (artifacts): see :mod:`docpipe.artifacts`
        self.work_root = os.fspath(work_dir) if work_dir is not None else os.fspath(
            default_work_root(store.url if store is not None else None))
        self._work: WorkArea | None = None
        #: where ``thread`` and ``process`` blocks run: local pools unless told otherwise
        self.executor: Executor = executor or LocalExecutor()
        #: the cores and GPUs every pool shares (:mod:`docpipe.budget`); ``None`` with
        #: ``budget=False`` or ``DOCPIPE_BUDGET=0``: each pool gets ``workers`` workers of
        #: ``cores // workers`` threads, as before the budget. Busy calls hold its core tokens;
        #: with another executor than the local pools (Ray) they do only when ``cores`` is given
        self.budget: Budget | None = None
        if budget if budget is not None else budget_on():
            self.budget = Budget(cores, gpus, limit_calls=cores is not None or isinstance(
                self.executor, LocalExecutor))
        self.cores = self.budget.cores if self.budget else cores or os.cpu_count() or 1
        #: the workers asked for (``--workers``): with a budget, every pool's size unless its
        #: step says otherwise; ``None``: each block's hint (its manifest's ``cost``)
        self.workers_given = workers
        self.workers = max(1, workers or self.cores)
        self.threads_per_worker = max(1, self.cores // self.workers)
        #: core tokens held by calls in flight, by call id (given back when their Done comes)
        self._held: dict[int, int] = {}
        #: each worker process's memory limit in MiB (0: none); see ``limit_memory``
        self.worker_memory_mb = default_memory_mb() if worker_memory_mb is None else worker_memory_mb
        self.max_in_flight = max(1, max_in_flight)
        self.on_document = on_document or _noop
        self._events: SimpleQueue[Done] = SimpleQueue()
        #: (block, params, recycling, step's workers) -> its batcher and pool
        self._pools: dict[tuple[str, str, Recycle, int | None], _Batcher] = {}
        self._inline: dict[tuple[str, str], BlockHost] = {}
        self._node_batcher: dict[Node, _Batcher] = {}
        self._node_inline: dict[Node, BlockHost] = {}
        self._ready: deque[tuple[_Run, Node]] = deque()
        self._calls: dict[int, tuple[_Batcher, list[_Item]]] = {}
        self._call_seq = 0
        self._deadlines: list[tuple[float, int, float]] = []  # (due, call id, timeout) heap
        self._timers: list[tuple[float, int, _Item]] = []  # retries waiting for their delay
        self._timer_seq = 0
        #: batches with documents still to admit, taken in turn (a small batch posted while a
        #: big one runs gets the next free slot, not the big one's last)
        self._feeding: deque[_Batch] = deque()
        self._active = 0
        self._to_run = 1
        #: work other threads hand the loop (an open batch's documents), run between events
        self._inbox: SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: why the loop of a started engine stopped, if it crashed (a bug): the server is not ready
        self.crashed: BaseException | None = None
        self._writer_ready = False
        # reuse (docs/provenance.md; what a step records is on its Node: ``_plan_provenance``)
        #: tasks of cached steps waiting for this wave's reuse lookup: run, node, inputs, key, input hash
        self._lookups: list[tuple[_Run, Node, dict[str, Any] | None, str, str]] = []
        #: a cached step's task in flight -> its provenance text and cache key, for its record
        self._keys: dict[tuple[_Run, Node], tuple[str, str]] = {}

    # --- public -------------------------------------------------------------------------
    def run(self, plan: Plan, documents: Iterable[str | tuple[str, str | None]], *,
            argv: list[str] | None = None, correlation_id: str | None = None,
            batch_id: str | None = None) -> BatchResult:
        """Run ``plan`` over ``documents`` (paths, or ``(path, correlation_id)`` pairs) as one
        new batch (named ``batch_id`` if given). Failed documents are results, not exceptions.
        With a store, the documents are recorded with the batch as they are read (in chunks)
        and admitted from the store, so the iterable may be lazy and long. On a started
        engine the batch joins the running loop (and its warm pools); the call waits for it."""
        pairs = (d if isinstance(d, tuple) else (d, None) for d in documents)
        flow_id = None
        if self.store is not None:
            flow_id = self.store.put_flow(plan.name, plan.version, plan.content_hash,
                                          redact_definition(plan.definition))
            argv = [redact_arg(a) for a in argv] if argv else argv
            batch_id = self.store.start_batch(flow_id, redact_params(plan.params), None, argv,
                                              inputs=pairs, correlation_id=correlation_id, batch_id=batch_id)
            n = self.store.batch(batch_id)["n_inputs"] if self.one_batch else self.workers
            source: Iterator[tuple[str, str | None]] = self.store.iter_inputs(batch_id)
        else:
            source, n = pairs, len(documents) if isinstance(documents, Sized) else self.workers
        source = ((path, corr or correlation_id) for path, corr in source)
        batch = _Batch(plan, batch_id, flow_id, source, keep_results=self.keep_results,
                       on_document=self.on_document)
        return self._run_batch(batch, n)

    def resume(self, plan: Plan, batch_id: str, *, retry_failed: bool = False,
               documents: Collection[str] | None = None) -> BatchResult:
        """Finish an interrupted batch: documents that finished keep their result; runs that
        were in flight when the process died continue from their last recorded steps (steps
        that succeeded are not run again); documents never started are started. With
        ``retry_failed``, failed documents continue from their last succeeded step too: all
        of them, or only those in ``documents`` (the others keep their failure). Runs waiting
        for a review continue when every review task of theirs is answered (the answer is the
        review step's outputs); the others keep waiting."""
        if self.store is None:
            raise ValueError("resume needs a store")
        record = self.store.batch(batch_id)
        if record is None:
            raise KeyError(f"no batch {batch_id} in {self.store.url}")
        unanswered = self.store.reviews.open_runs(batch_id)

        def again(doc: str, entry: dict[str, Any]) -> bool:
            status = entry["status"]
            return status == Status.RUNNING or (
                status == Status.WAITING and entry["run_id"] not in unanswered) or (
                retry_failed and status == Status.FAILED and (documents is None or doc in documents))

        previous = self.store.resume_state(batch_id, steps_for=again)  # steps of those only
        finished: dict[str, DocResult] = {}
        resumable: dict[str, dict[str, Any]] = {}
        for doc, entry in previous.items():
            if again(doc, entry):
                resumable[doc] = entry
            else:
                finished[doc] = DocResult(entry["run_id"], doc, entry["status"],
                                          entry.get("error_kind"), entry.get("error"),
                                          entry.get("failed_step"))
        self.store.resume_batch(batch_id)
        self._work_area().adopt([entry["run_id"] for entry in resumable.values()])
        default = record.get("correlation_id")
        source = ((path, corr or default) for path, corr in self.store.iter_inputs(batch_id))
        batch = _Batch(plan, batch_id, record["flow_id"], source, keep_results=self.keep_results,
                       finished=finished, resumable=resumable, on_document=self.on_document)
        return self._run_batch(batch, max(1, record["n_inputs"] - len(finished)))

    def _run_batch(self, batch: _Batch, to_run: int) -> BatchResult:
        if self._thread is not None:
            return self._join(batch)
        self._work_area().sweep()  # what engines killed earlier left behind
        self._bind_writer()
        self._plan_provenance(batch.plan)
        self._to_run = max(1, to_run)
        if self.prestart and not self._reuses(batch.plan):
            self._prestart(batch.plan, batch.params)
        self._feeding.append(batch)
        status, done = Status.INTERRUPTED, False
        try:
            self._loop(batch)
            done = True
        finally:
            result = batch.result()
            if not done:  # an exception (a KeyboardInterrupt) left the loop: forget the batch
                self._abandon()
            if done:
                status = result.status
            if self.store is not None and batch.id is not None:
                self.store.writer.flush()
                self.store.finish_batch(batch.id, status, result.counts)
        return result

    def _join(self, batch: _Batch) -> BatchResult:
        """Run ``batch`` in the started engine's loop; wait for it to end (or the loop to stop)."""
        ended = threading.Event()
        batch.on_end = lambda _result: ended.set()
        self._call(self._open, batch)
        while not ended.wait(0.5):
            if not self.running:
                break
        result = batch.result()
        done = ended.is_set()
        if self.store is not None and batch.id is not None:
            self.store.writer.flush()
            self.store.finish_batch(batch.id, result.status if done else Status.INTERRUPTED, result.counts)
        if not done:
            raise RuntimeError(f"the engine stopped before batch {batch.id} ended: resume it")
        return result

    def _abandon(self) -> None:
        """Forget every run in flight (the loop left with an exception): a resume continues
        them. The pools stay; their late results find no call and are dropped."""
        self._feeding.clear()
        self._ready.clear()
        self._calls.clear()
        self._deadlines.clear()
        self._timers.clear()
        for b in self._pools.values():
            b.items.clear()
            b.solo.clear()
        self._lookups.clear()  # else the next batch's lookups would wait behind them forever
        self._keys.clear()
        self._active = 0

    def _bind_writer(self) -> None:
        """Point the record callbacks at the store's writer (no-ops without a store)."""
        if self._writer_ready:
            return
        writer = self.store.writer if self.store is not None else None
        self._task = writer.task_run if writer else _noop
        # builds a succeeded task's record (encodes its outputs): not at all when nothing records
        self._succeeded = task_succeeded if writer else _noop
        self._run_started = writer.flow_run_started if writer else _noop
        self._run_resumed = writer.flow_run_resumed if writer else _noop
        self._run_finished = writer.flow_run_finished if writer else _noop
        self._review = writer.review_task if writer else _noop
        self._pending = writer.pending if writer else _zero
        self._writer_ready = True

    # --- a started engine (a server's) ----------------------------------------------------
    def start(self) -> None:
        """Run the loop in a thread of its own until :meth:`stop`: batches come through
        :meth:`open_batch`, pools stay warm between them."""
        if self._thread is not None:
            return
        self._work_area().sweep()
        self._bind_writer()
        self._to_run = self.workers
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="docpipe-engine", daemon=True)
        self._thread.start()

    def open_batch(self, plan: Plan, *, batch_id: str | None = None, flow_id: int | None = None,
                   on_document: Callable[[DocResult], None] | None = None,
                   on_end: Callable[[BatchResult], None] | None = None) -> OpenBatch:
        """A batch of this started engine that takes documents as they come (thread-safe).
        ``batch_id``/``flow_id`` are its records' (the caller records the batch: a server's
        job names it when it is submitted). Its pools start now (``prestart``)."""
        if self._thread is None:
            raise RuntimeError("start() the engine first")
        batch = _Batch(plan, batch_id, flow_id, None, keep_results=False, open_=True,
                       on_document=on_document or self.on_document, on_end=on_end or _noop)
        self._call(self._open, batch)
        return OpenBatch(self, batch)

    def pool_stats(self) -> list[dict[str, Any]]:
        """Each live pool's block, workers and busy workers (for ``/metrics``; any thread)."""
        out = []
        for b in list(self._pools.values()):
            capacity = b.pool.capacity
            out.append({"block": b.name, "workers": capacity, "busy": max(0, capacity - b.pool.idle())})
        return out

    @property
    def running(self) -> bool:
        """A started engine whose loop is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        """Stop a started engine's loop: runs in flight are dropped (their batches resume
        them: their records say running); then the pools close with :meth:`close`."""
        if self._thread is None:
            return
        self._stopping = True
        self._events.put(WAKE)
        self._thread.join(timeout)
        self._thread = None

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the loop's thread, soon (from any thread)."""
        self._inbox.put((fn, args))
        self._events.put(WAKE)

    def _open(self, batch: _Batch) -> None:
        self._plan_provenance(batch.plan)
        if self.prestart and not self._reuses(batch.plan):
            self._prestart(batch.plan, batch.params)
        self._feeding.append(batch)

    def _add(self, batch: _Batch, item: tuple[str, str | None, str | None, dict[str, Any] | None]) -> None:
        batch.added.append(item)
        if batch not in self._feeding:  # it left the turn when it had nothing to admit
            self._feeding.append(batch)

    def _close_batch(self, batch: _Batch) -> None:
        batch.open = False
        self._end_if_done(batch)

    def _end_if_done(self, batch: _Batch) -> None:
        if batch.ended or not batch.done():
            return
        batch.ended = True
        if batch in self._feeding:
            self._feeding.remove(batch)
        if batch.on_end is not _noop:
            try:
                batch.on_end(batch.result())
            except Exception:  # noqa: BLE001 - a caller's callback must not stop the engine
                log.exception("on_end of batch %s raised", batch.id)

    def _serve(self) -> None:
        try:
            self._loop(None)
        except BaseException as exc:  # noqa: BLE001 - kept for the server's readiness and logs
            self.crashed = exc
            log.exception("the engine's loop stopped")
        finally:
            self._abandon()

    def _prestart(self, plan: Plan, params: dict[str, Any]) -> None:
        """Start the pools the flow will need now, all at once, so that models load while the
        first steps run instead of one after another as each step's first input arrives.
        A step that can never run with these params (a ``when`` false by its params alone,
        like translation without a model) gets no pool until an input reaches it."""
        for node in plan.nodes:
            if node.subplan is not None:
                self._prestart(node.subplan, params)
            if node.block is None or node.runtime == "inline":
                continue
            if node.when is not None and node.when.false_by_params(params):
                continue
            self._batcher(node)  # a pool starts its workers when it is made

    def _work_area(self) -> WorkArea:
        if self._work is None:
            self._work = WorkArea(self.work_root, new_id())
        return self._work

    def pools(self, block: str) -> list[Pool]:
        """The live pools of a block (one per distinct params), for inspection and tests."""
        return [b.pool for (name, *_), b in self._pools.items() if name == block]

    def close(self) -> None:
        self.stop()
        # every pool at once: each waits a few seconds at most for its workers' clean exit
        closers = [threading.Thread(target=b.pool.close, name=f"docpipe-close-{b.name}")
                   for b in self._pools.values()]
        for t in closers:
            t.start()
        for t in closers:
            t.join()
        self._pools.clear()
        for host in self._inline.values():
            host.teardown()
        self._inline.clear()
        self._node_inline.clear()
        self._node_batcher.clear()
        if self._work is not None:
            self._work.close()
            self._work = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the loop -----------------------------------------------------------------------
    def _loop(self, target: _Batch | None) -> None:
        """Until ``target`` is done (``None``: until :meth:`stop`)."""
        ready, events, inbox = self._ready, self._events, self._inbox
        while True:
            while True:
                while not inbox.empty():
                    fn, args = inbox.get_nowait()
                    fn(*args)
                if self._active < self.max_in_flight and self._feeding and not self._backlogged():
                    self._admit()
                if not ready:
                    break
                while ready:
                    run, node = ready.popleft()
                    if not run.root.stopped:
                        self._execute(run, node)
            if self._timers and self._timers[0][0] <= time.monotonic():
                self._fire_timers()
                continue
            timeout = self._dispatch()
            if target is not None:
                if target.done():
                    return
            elif self._stopping:
                return
            for due in (self._timers[0][0] if self._timers else None,
                        self._expire_calls() if self._deadlines else None):
                if due is not None:
                    wait = max(0.0, due - time.monotonic())
                    timeout = wait if timeout is None else min(timeout, wait)
            if self._feeding and self._active < self.max_in_flight and self._backlogged():
                # documents wait for the record writer to catch up: look again soon
                timeout = BACKLOG_WAIT if timeout is None else min(timeout, BACKLOG_WAIT)
            waiting = any(b.items or b.solo for b in self._pools.values())  # for workers
            if (target is not None and not self._calls and timeout is None and not waiting
                    and inbox.empty()):
                raise RuntimeError("docpipe engine stalled: documents in flight but nothing "
                                   "ready or running (this is a bug; please report it)")
            try:
                done = events.get(timeout=timeout)
            except Empty:
                continue
            self._on_done(done)
            while True:
                try:
                    done = events.get_nowait()
                except Empty:
                    break
                self._on_done(done)

    def _backlogged(self) -> bool:
        """Whether the store's writer is so far behind that no document should start now: the
        records it has not written are memory, and a batch of a million documents must not
        hold a million documents' records (the engine outruns SQLite on cheap steps)."""
        return self._pending() > MAX_BACKLOG

    def _next_doc(self, batch: _Batch) -> tuple[str, str | None, str | None, dict[str, Any] | None] | None:
        """The batch's next document to admit, or ``None`` (none now: the batch leaves the turn)."""
        if batch.added:
            return batch.added.popleft()
        if batch.source is not None:
            for path, corr in batch.source:
                return path, corr, None, None
            batch.source = None
        return None

    def _admit(self) -> None:
        feeding, work = self._feeding, self._work_area()
        while self._active < self.max_in_flight and feeding:
            batch = feeding[0]
            item = self._next_doc(batch)
            if item is None:
                feeding.popleft()
                if not batch.open:
                    self._end_if_done(batch)
                continue
            feeding.rotate(-1)  # the batches with documents take turns
            doc, corr, run_id, entry = item
            seq = batch.seq
            batch.seq += 1
            plan, nodes = batch.plan, batch.plan.nodes
            name = display_path(doc)  # how the store names it (a non-UTF-8 name escaped)
            before = batch.finished.get(name)
            if before is not None:  # finished in an earlier attempt of this batch: kept as is
                if batch.results is not None:
                    batch.order[before.run_id] = seq
                    batch.results.append(before)
                batch.counts[before.status] = batch.counts.get(before.status, 0) + 1
                batch.on_document(before)
                continue
            self._active += 1
            batch.active += 1
            entry = entry or batch.resumable.get(name)
            refused = not_a_regular_file(doc)  # never opened: a FIFO would block its reader
            if entry is None:
                run_id = run_id or new_id()
                run = _Run(run_id, seq, doc, plan, {"path": doc, WORK_DIR_KEY: work.path(run_id)}, batch=batch)
                self._run_started(run_started(run.id, batch.id, batch.flow_id, name, time.time(), corr))
                if refused is None:
                    self._ready.extend((run, nodes[i]) for i in plan.roots)
            else:
                run = _Run(entry["run_id"], seq, doc, plan,
                           {"path": doc, WORK_DIR_KEY: work.path(entry["run_id"])}, batch=batch)
                self._run_resumed(RunResumed(run.id, time.time()))
                if refused is None:
                    self._restore(run, entry["steps"])
            if batch.results is not None:
                batch.order[run.id] = seq
            if refused is not None:
                self._finish(run, ErrorInfo(ErrorKind.UNSUPPORTED, "UnsupportedDocument", refused, ""),
                             INPUT_STEP)

    def _restore(self, run: _Run, steps: dict[str, dict[str, Any]]) -> None:
        """Put back what a run's succeeded steps wrote; queue what is left to do. A step whose
        artifact file is gone (its run's folder was removed: the run had ended, or a sweep
        found its engine dead) is not restored: it runs again and makes the file anew."""
        nodes = run.plan.nodes
        done_ids = set(steps)
        for n in nodes:
            if n.id in steps and any(missing_files(steps[n.id].get(k)) for k in n.artifact_keys):
                # made again only if a step still to run reads it
                if any(nodes[d].id not in steps for d in n.dependents):
                    done_ids.discard(n.id)
        done = [n for n in nodes if n.id in done_ids]
        for step, outputs in steps.items():  # items of a map that was under way: kept
            item = steps_mod.parse(step)
            if (item.item is not None and not item.parents and item.step not in done_ids
                    and isinstance(outputs, dict)):
                run.restored_items.setdefault(item.step, {})[item.item] = outputs
        for n in done:
            run.state.update(steps[n.id])
        pending = run.pending
        for n in done:
            pending[n.idx] = -len(nodes) - 1  # never reaches 0 again: never re-queued
            run.left -= 1
            for d in n.dependents:
                pending[d] -= 1
        if run.left == 0:
            self._finish(run)
            return
        self._ready.extend((run, n) for n in nodes if pending[n.idx] == 0)

    # --- executing one node ---------------------------------------------------------------
    def _execute(self, run: _Run, node: Node) -> None:
        state = run.state
        for s, case in node.guards:
            if state.get(switch_key(s)) != case:
                return self._skip(run, node)
        for key in node.needs:
            if key not in state:
                return self._skip(run, node)
        if node.when is not None:
            try:
                if not node.when.evaluate(state, run.batch.params):
                    return self._skip(run, node)
            except ExpressionError as exc:
                return self._fail(run, node, ErrorInfo.of(exc), time.time(), "main")
        kind = node.kind
        if node.uses_work_dir:
            self._work_area().ensure(run.root.id)
        if kind == "block":
            inputs = {k: state[v] for k, v in node.reads.items()}
            if node.keyed and self.store is not None:
                return self._defer(run, node, inputs)
            if node.runtime == "inline":
                self._run_inline(run, node, inputs, -1)
            else:
                self._enqueue(_Item(run, node, inputs, -1, 1))
        elif kind == "map":
            if node.keyed and self.store is not None:
                return self._defer(run, node, None)
            self._start_map(run, node)
        elif kind == "expr":
            self._eval(run, node)
        elif kind == "switch":
            self._eval(run, node)
        elif kind == "join":
            now = time.time()
            self._complete(run, node, {}, now, now, "main")
        elif kind == "subflow":
            self._start_subflow(run, node)
        elif kind == "review":
            self._wait(run, node)
        return None

    # --- provenance and reuse (docs/provenance.md) ----------------------------------------
    def _plan_provenance(self, plan: Plan, cache: bool | None = None) -> None:
        """Each block and map step's static provenance (block, distribution, model, params
        hash: computed when a batch starts, so a rebuilt model counts from the next batch on;
        kept on its node, so it lives as long as the plan), and
        which steps reuse earlier outputs: a step's ``cache`` if it says, else its flow's (a
        subflow's steps: their parent's or their own flow's). A step's tasks get a cache key
        where the policy is on, and at every thread/process step, whose call costs far more
        than hashing its inputs. Nothing without a store: an engine that records nothing
        computes nothing."""
        if self.store is None:
            return
        policy = plan.cache if cache is None else cache
        for node in plan.nodes:
            if node.subplan is not None:
                self._plan_provenance(node.subplan, policy or node.subplan.cache)
            static = node.provenance = static_provenance(node)
            if static is None:
                continue
            node.recorded_provenance = static.json
            node.cached = node.cache if node.cache is not None else policy
            node.keyed = node.cached or node.runtime != "inline"

    def _reuses(self, plan: Plan) -> bool:
        """Whether ``plan``'s tasks look for earlier outputs (its cache policy is on, and this
        engine records): then its pools start when a task first needs one, not with the batch,
        so a batch that reuses everything starts no worker and loads no model."""
        return self.store is not None and plan.cache

    def _defer(self, run: _Run, node: Node, inputs: dict[str, Any] | None) -> None:
        """A task of a keyed step (``inputs``; ``None`` for a map: what the whole map reads):
        its cache key now; where the step's cache policy is on, its lookup with the rest of
        this wave of ready tasks (the loop runs :meth:`_lookup` from its inbox once the ready
        queue is drained), else it starts with the key kept for its record."""
        if inputs is None:
            state = run.state
            hashed = {k: state[v] for k, v in node.reads.items() if k != node.map_as}
            hashed["$map"] = state.get(node.map_over)  # type: ignore[arg-type]
        else:
            hashed = inputs
        work = frozenset(k for k, v in node.reads.items() if v == WORK_DIR_KEY)
        static = node.provenance
        assert static is not None  # a keyed node is a block or map step
        digest = input_hash(hashed, work)
        if len(self._keys) > 4096:  # entries of runs that failed with a task in flight
            self._keys = {k: v for k, v in self._keys.items() if not k[0].root.stopped}
        if not node.cached:
            self._keys[(run, node)] = (with_inputs(static, digest), cache_key(static, digest))
            return self._start(run, node, inputs)
        if not self._lookups:
            self._inbox.put((self._lookup, ()))
        self._lookups.append((run, node, inputs, cache_key(static, digest), digest))
        return None

    def _lookup(self) -> None:
        """This wave's reuse lookup, one query for all its keys: a task whose key a succeeded
        earlier task has takes that task's outputs (worker ``reused``) unless an artifact
        file they name is gone; the others run."""
        from docpipe.store.reuse import reusable

        pending, self._lookups = self._lookups, []
        try:
            found = reusable(self.store, {p[3] for p in pending if not p[0].root.stopped})
        except Exception:  # noqa: BLE001 - the store cannot answer: nothing is reused, all runs
            log.warning("the reuse lookup failed: the tasks run", exc_info=True)
            found = {}
        for run, node, inputs, key, digest in pending:
            if run.root.stopped:
                continue
            static, hit = node.provenance, found.get(key)
            assert static is not None
            if (hit is not None and hit.outputs.keys() == set(node.writes.values())
                    and not any(missing_files(hit.outputs.get(k)) for k in node.artifact_keys)):
                source = {"task": hit.task_id, "run": hit.flow_run_id, "step": hit.step}
                self._keys[(run, node)] = (with_inputs(static, digest, reused_from=source), key)
                t = time.time()
                self._complete(run, node, hit.outputs, t, t, REUSED)
                continue
            self._keys[(run, node)] = (with_inputs(static, digest), key)
            self._start(run, node, inputs)

    def _start(self, run: _Run, node: Node, inputs: dict[str, Any] | None) -> None:
        """Run a keyed step's task: a block's (``inputs``), or a map's (``None``)."""
        if inputs is None:
            self._start_map(run, node)
        elif node.runtime == "inline":
            self._run_inline(run, node, inputs, -1)
        else:
            self._enqueue(_Item(run, node, inputs, -1, 1))

    def _wait(self, run: _Run, node: Node) -> None:
        """The run reached a review step: record its review task (the model's proposal and the
        choices), the step ``waiting``, and let go of the run until it is answered."""
        review, state, t = node.review, run.state, time.time()
        assert review is not None and run.parent is None  # the planner allows no review in a subflow
        self._review(ReviewTask(new_id(), run.id, run.batch.id, node.id, review.kind, json.dumps(review.keys),
                                review.prompt, json.dumps(review.choices_for(state)),
                                review.proposal(state), t))
        self._task(TaskRecord(run.id, node.id, node.label, 1, Status.WAITING, t, t, "main"))
        run.stopped = True
        self._finish(run, waiting=True)

    def _eval(self, run: _Run, node: Node) -> None:
        t = time.time()
        assert node.expr is not None
        try:
            value = node.expr.evaluate(run.state, run.batch.params)
        except ExpressionError as exc:
            return self._fail(run, node, ErrorInfo.of(exc), t, "main")
        if node.kind == "switch":
            case = "true" if value is True else "false" if value is False else str(value)
            chosen = case if case in node.cases else ("" if node.has_default else None)
            return self._complete(run, node, {switch_key(node.idx): chosen}, t, time.time(), "main")
        assert node.output is not None
        return self._complete(run, node, {node.output: value}, t, time.time(), "main")

    def _inline_block(self, node: Node) -> BlockHost:
        """The set-up inline block of ``node`` (one per block and params, set up on first use)."""
        assert node.block is not None and node.params is not None
        key = (node.block.name, params_key(node.params))
        host = self._inline.get(key)
        if host is None:
            cls, params = node.block.cls, node.params
            host = self._inline[key] = BlockHost(node.block.name, lambda: (cls, params))
        self._node_inline[node] = host
        return host

    def _run_inline(self, run: _Run, node: Node, inputs: dict[str, Any], index: int,
                    attempt: int = 1) -> None:
        host = self._node_inline.get(node) or self._inline_block(node)
        t = time.time()
        result = host.run_one(inputs)
        if isinstance(result, ErrorInfo):
            self._error(_Item(run, node, inputs, index, attempt), result, t, time.time(), "main")
        else:
            self._result(run, node, index, result, t, time.time(), "main", attempt)

    def _result(self, run: _Run, node: Node, index: int, result: dict[str, Any], started: float,
                finished: float, worker: str, attempt: int = 1) -> None:
        """A block's written keys for one input (a document, or one item of a map)."""
        if index < 0:
            writes = node.writes
            return self._complete(run, node, {writes[k]: v for k, v in result.items()},
                                  started, finished, worker, attempt)
        step = step_path(run.prefix, node.id, index)
        # with its outputs: a resume keeps the item
        self._task(self._succeeded(run.root.id, step, node.label, attempt, started, finished, worker, result,
                                   node.recorded_provenance))
        gather = run.maps[node.idx]
        gather[index + 2] = result
        gather[0] -= 1
        if gather[0] == 0:
            del run.maps[node.idx]
            items = gather[2:]
            values = {sk: [r[bk] for r in items] for bk, sk in node.writes.items()}
            self._complete(run, node, values, gather[1], finished, worker)
        return None

    # --- system steps -------------------------------------------------------------------
    def _start_map(self, run: _Run, node: Node) -> None:
        t = time.time()
        items = run.state[node.map_over]  # type: ignore[index]
        if not isinstance(items, list | tuple):
            err = ErrorInfo(ErrorKind.BLOCK_ERROR, "TypeError",
                            f"map over '{node.map_over}' needs a list, got {type(items).__name__}", "")
            return self._fail(run, node, err, t, "main")
        if not items:
            return self._complete(run, node, {sk: [] for sk in node.writes.values()}, t, t, "main")
        gather: list[Any] = [len(items), t, *([None] * len(items))]
        run.maps[node.idx] = gather
        assert node.map_as is not None
        base = {k: run.state[v] for k, v in node.reads.items() if k != node.map_as}
        inline = node.runtime == "inline"
        kept = run.restored_items.pop(node.id, {}) if not run.prefix else {}
        for i, result in kept.items():  # items that succeeded before a resume
            if i < len(items) and result.keys() == node.block_writes:
                gather[i + 2] = result
                gather[0] -= 1
        if gather[0] == 0:
            del run.maps[node.idx]
            values = {sk: [r[bk] for r in gather[2:]] for bk, sk in node.writes.items()}
            return self._complete(run, node, values, t, time.time(), "main")
        for i, item in enumerate(items):
            if gather[i + 2] is not None:
                continue
            inputs = {**base, node.map_as: item}
            if inline:
                self._run_inline(run, node, inputs, i)
                if run.root.stopped:
                    return None
            else:
                self._enqueue(_Item(run, node, inputs, i, 1))
        return None

    def _start_subflow(self, run: _Run, node: Node) -> None:
        assert node.subplan is not None
        state = {k: run.state[v] for k, v in node.reads.items()}
        state.setdefault("path", run.state.get("path"))
        state.setdefault(WORK_DIR_KEY, run.state.get(WORK_DIR_KEY))
        child = _Run(run.id, run.seq, run.document, node.subplan, state, parent=(run, node),
                     prefix=child_prefix(run.prefix, node.id))
        child.maps = {}
        child.state["__started"] = time.time()
        nodes = node.subplan.nodes
        self._ready.extend((child, nodes[i]) for i in node.subplan.roots)
        if not node.subplan.nodes:
            self._finish(child)

    # --- batching and pools ---------------------------------------------------------------
    def _batcher(self, node: Node) -> _Batcher:
        b = self._node_batcher.get(node)
        if b is not None:
            return b
        assert node.block is not None and node.params is not None
        m = node.block.cls.manifest
        recycle = Recycle(node.max_tasks_per_worker, node.max_worker_rss_mb)
        key = (m.name, params_key(node.params), recycle, node.workers)
        b = self._pools.get(key)
        if b is None:
            # workers write their temporary files (Tesseract's images, torch's caches) into
            # this engine's own folder, removed when it closes or, if it is killed, swept
            tmp = self._work_area().temp_dir()
            env = {"TMPDIR": tmp, "TEMP": tmp, "TMP": tmp, MEMORY_ENV: str(self.worker_memory_mb)}
            budget, tokens = self.budget, 0
            local = isinstance(self.executor, LocalExecutor)  # Ray pins the GPUs it gives out
            if budget is None:  # as before the budget: every pool alike
                workers, threads = node.workers or self.workers, self.threads_per_worker
            else:
                workers = budget.pool_size(m, node.workers or self.workers_given)
                threads = budget.threads(m)
                tokens = threads if budget.limit_calls else 0
                if local:
                    env |= budget.pool_env(m)
            # more workers than documents only load the model more often (a map's items are
            # many per document: its pool gets them all)
            if self.one_batch and node.kind != "map":
                workers = max(1, min(workers, self._to_run))
            missing = budget.missing_gpu(m) if budget is not None and local else None
            pool: Pool
            if missing is not None:
                pool = NoDevicePool(m.name, missing, self._events)
            else:
                pool = self.executor.make_pool(node.block.cls, node.params, workers=workers,
                                               threads=threads, events=self._events,
                                               env=env, recycle=recycle or None)
            b = self._pools[key] = _Batcher(pool, m.batch, m.batch_wait, m.name, tokens)
        self._node_batcher[node] = b
        return b

    def _enqueue(self, item: _Item) -> None:
        item.queued = time.monotonic()
        self._batcher(item.node).items.append(item)

    def _dispatch(self) -> float | None:
        """Send what can go to idle workers; return how long until a partial batch is due.

        With a budget that limits calls, a call goes only when its core tokens are free, and
        the pools are served oldest waiting input first: when the oldest cannot start, no
        younger one takes the cores it waits for (a call that frees them wakes the loop)."""
        timeout: float | None = None
        now = time.monotonic()
        quiet = not self._ready and not self._calls and not self._feeding
        budget = self.budget if self.budget is not None and self.budget.limit_calls else None
        batchers: Iterable[_Batcher] = self._pools.values()
        if budget is not None:
            if budget.free <= 0:
                return None
            batchers = sorted((b for b in batchers if b.items or b.solo), key=_waited_since)
        for b in batchers:
            pool = b.pool
            while pool.idle() > 0 and (b.solo or b.items):
                if not b.solo:
                    items = b.items
                    # drop inputs of documents that failed meanwhile
                    while items and items[0].run.root.stopped:
                        items.popleft()
                    if not items:
                        break
                    due = items[0].queued + b.wait
                    if not (len(items) >= b.size or now >= due or quiet):
                        wait = due - now
                        timeout = wait if timeout is None else min(timeout, wait)
                        break
                if budget is not None and not budget.can_take(b.tokens):
                    return timeout
                if b.solo:
                    self._send(b, [b.solo.popleft()])
                else:
                    self._send(b, [items.popleft() for _ in range(min(b.size, len(items)))])
        return timeout

    def _send(self, b: _Batcher, items: list[_Item]) -> None:
        self._call_seq += 1
        call_id = self._call_seq
        self._calls[call_id] = (b, items)
        if b.tokens and self.budget is not None:
            # held until the call's Done comes back, whatever happens to the call
            self.budget.take(b.tokens)
            self._held[call_id] = b.tokens
        limit = items[0].node.timeout
        if limit is not None:
            heapq.heappush(self._deadlines, (time.monotonic() + limit * len(items), call_id, limit))
        b.pool.submit(call_id, [it.inputs for it in items])

    def _expire_calls(self) -> float | None:
        """Time out calls past their deadline; return when the loop must next look: the next
        deadline, or now when a thread's call was given up on here (its documents failed or
        got a retry after the loop checked for finished runs and due retries)."""
        now = time.monotonic()
        due: float | None = None
        while self._deadlines and self._deadlines[0][0] <= now:
            _due, call_id, limit = heapq.heappop(self._deadlines)
            entry = self._calls.get(call_id)
            if entry is None:
                continue
            b, items = entry
            message = (f"block '{b.name}' exceeded its timeout ({limit:g} s per input, "
                       f"{len(items)} input(s))")
            if not b.pool.kill(call_id, message + "; its worker was killed and replaced"):
                # a thread cannot be killed: give up on the call, ignore its late result
                del self._calls[call_id]
                err = ErrorInfo.failure(BlockTimeout(message + "; the thread finishes in the background"))
                t = time.time()
                for item in items:
                    if not item.run.root.stopped:
                        self._error(item, err, t - limit, t, None)
                due = now
        return due if due is not None else self._deadlines[0][0] if self._deadlines else None

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            item = heapq.heappop(self._timers)[2]
            if item.run.root.stopped:
                continue
            if item.node.runtime == "inline":
                self._run_inline(item.run, item.node, item.inputs, item.index, item.attempt)
            else:
                self._enqueue(item)

    def _on_done(self, done: Done) -> None:
        if done is WAKE:
            return
        done.pool.release(done)
        tokens = self._held.pop(done.call_id, 0)
        if tokens and self.budget is not None:
            self.budget.give(tokens)  # also for a call given up on: its thread ran until now
        entry = self._calls.pop(done.call_id, None)
        if entry is None:
            return  # a thread call that already timed out
        b, items = entry
        if done.error is not None:
            if len(items) > 1:
                # isolate the document that broke the batch (raised, killed its worker, hung):
                # each input runs again on its own; only that one fails (or is retried)
                b.solo.extend(items)
                return
            for item in items:
                if not item.run.root.stopped:
                    self._error(item, done.error, done.started, done.finished, done.worker)
            return
        assert done.results is not None
        for item, result in zip(items, done.results, strict=True):
            if item.run.root.stopped:
                continue
            if isinstance(result, ErrorInfo):
                self._error(item, result, done.started, done.finished, done.worker)
            else:
                self._result(item.run, item.node, item.index, result, done.started, done.finished,
                             done.worker, item.attempt)

    def _error(self, item: _Item, err: ErrorInfo, started: float, finished: float,
               worker: str | None) -> None:
        """A failed attempt of one input: schedule the next attempt, or fail the document."""
        run, node = item.run, item.node
        step = step_path(run.prefix, node.id, item.index)
        if node.retry.allows(item.attempt, err.kind, err.type, err.retryable):
            self._task(TaskRecord(run.root.id, step, node.label, item.attempt, Status.RETRYING, started, finished,
                                  worker, error_kind=err.kind, error=str(err), traceback=err.traceback or None))
            retry = _Item(run, node, item.inputs, item.index, item.attempt + 1)
            self._timer_seq += 1
            due = time.monotonic() + node.retry.delay_for(item.attempt)
            heapq.heappush(self._timers, (due, self._timer_seq, retry))
            return
        self._fail(run, node, err, started, worker, finished, step=step, attempt=item.attempt)

    # --- state transitions ---------------------------------------------------------------
    def _complete(self, run: _Run, node: Node, values: dict[str, Any], started: float,
                  finished: float, worker: str, attempt: int = 1) -> None:
        run.state.update(values)
        entry = self._keys.pop((run, node), None) if self._keys else None
        if entry is None:
            self._task(self._succeeded(run.root.id, step_path(run.prefix, node.id), node.label, attempt,
                                       started, finished, worker, values, node.recorded_provenance))
        else:  # a task of a cached step: its input hash and key too
            self._task(self._succeeded(run.root.id, step_path(run.prefix, node.id), node.label, attempt,
                                       started, finished, worker, values, *entry))
        self._release(run, node)

    def _skip(self, run: _Run, node: Node) -> None:
        t = time.time()
        self._task(TaskRecord(run.root.id, step_path(run.prefix, node.id), node.label, 1, Status.SKIPPED, t, t,
                              None))
        self._release(run, node)

    def _release(self, run: _Run, node: Node) -> None:
        pending = run.pending
        nodes = run.plan.nodes
        for d in node.dependents:
            pending[d] -= 1
            if pending[d] == 0:
                self._ready.append((run, nodes[d]))
        run.left -= 1
        if run.left == 0:
            self._finish(run)

    def _fail(self, run: _Run, node: Node, err: ErrorInfo, started: float, worker: str | None,
              finished: float | None = None, step: str | None = None, attempt: int = 1) -> None:
        step = step or step_path(run.prefix, node.id)
        self._task(TaskRecord(run.root.id, step, node.label, attempt, Status.FAILED, started,
                              finished or time.time(), worker, error_kind=err.kind, error=str(err),
                              traceback=err.traceback or None))
        run.stopped = True
        self._finish(run, err, step)

    def _finish(self, run: _Run, err: ErrorInfo | None = None, step: str | None = None,
                waiting: bool = False) -> None:
        if run.parent is not None:
            parent, pnode = run.parent
            started = run.state.get("__started", time.time())
            if err is not None:
                return self._fail(parent, pnode, err, started, "main", step=step)
            values = {pk: run.state[sk] for sk, pk in pnode.writes.items() if sk in run.state}
            return self._complete(parent, pnode, values, started, time.time(), "main")
        run.stopped = err is not None or waiting
        if self._work is not None:
            self._work.remove(run.id)  # the run's artifacts end with it (a waiting run's too)
        state = run.state
        outputs = {k: state[k] for k in run.plan.outputs if k in state}
        status = Status.FAILED if err else Status.WAITING if waiting else Status.SUCCEEDED
        result = DocResult(run.id, display_path(run.document), status,
                           err.kind if err else None, clean_text(str(err)) if err else None, step,
                           outputs, clean_text(err.traceback) if err else None)
        self._run_finished(run_finished(run.id, status, time.time(), result.error_kind, result.error,
                                        step, outputs))
        batch = run.batch
        if batch.results is not None:
            batch.results.append(result)
        batch.counts[status] = batch.counts.get(status, 0) + 1
        self._active -= 1
        batch.active -= 1
        batch.on_document(result)
        if batch.active == 0 and not batch.has_docs():
            self._end_if_done(batch)
        return None
