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
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any

from docpipe import steps as steps_mod
from docpipe.artifacts import WORK_DIR_KEY, WorkArea, default_work_root, missing_files
from docpipe.blocks import params_key
from docpipe.errors import BlockTimeout, ExpressionError
from docpipe.executors import WAKE, Done, ErrorInfo
from docpipe.executors.base import BlockHost, Executor, Pool, Recycle
from docpipe.executors.local import LocalExecutor
from docpipe.executors.worker import MEMORY_ENV, default_memory_mb
from docpipe.flow import redact_definition, redact_params
from docpipe.inputs import INPUT_STEP, clean_text, display_path, not_a_regular_file
from docpipe.planner import Node, Plan, switch_key
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
    results: list[DocResult]
    seconds: float

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
        statuses = {r.status for r in self.results}
        return (Status.FAILED if Status.FAILED in statuses else
                Status.WAITING if Status.WAITING in statuses else Status.SUCCEEDED)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {Status.SUCCEEDED: 0, Status.FAILED: 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out


class _Run:
    """One document's run of a plan (or a subflow's run inside a parent run)."""

    __slots__ = ("id", "seq", "document", "plan", "state", "pending", "left", "root", "stopped",
                 "parent", "prefix", "maps", "restored_items")

    def __init__(self, run_id: str, seq: int, document: str, plan: Plan, state: dict[str, Any],
                 parent: tuple[_Run, Node] | None = None, prefix: str = "") -> None:
        self.id, self.seq, self.document, self.plan, self.state = run_id, seq, document, plan, state
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


class _Batcher:
    __slots__ = ("pool", "size", "wait", "items", "solo", "name")

    def __init__(self, pool: Pool, size: int, wait: float, name: str) -> None:
        self.pool, self.size, self.wait, self.name = pool, size, wait, name
        self.items: deque[_Item] = deque()
        self.solo: deque[_Item] = deque()  # inputs of a batch that raised, retried one by one


#: a map item's step name: ``ocr[3]``


def _noop(*_: Any) -> None:
    return None


def redact_arg(arg: str) -> str:
    """A command-line argument as it may be recorded (``password=x`` -> ``password=***``)."""
    key, sep, value = arg.partition("=")
    return f"{key}=***" if sep and value and redact_params({key: value})[key] == "***" else arg


class Engine:
    """Run plans over documents. Reuse one engine for several runs to keep pools warm."""

    def __init__(self, store: Any = None, *, workers: int | None = None,
                 max_in_flight: int = 256, on_document: Callable[[DocResult], None] | None = None,
                 executor: Executor | None = None, work_dir: str | os.PathLike[str] | None = None,
                 worker_memory_mb: int | None = None, one_batch: bool = False,
                 prestart: bool = True) -> None:
        self.store = store
        #: this engine runs one batch (the CLI): a pool gets no more workers than the batch has
        #: documents (a map step's pool excepted), since more would only load the model more
        #: often. An engine kept for many batches (a server) keeps full pools.
        self.one_batch = one_batch
        #: start every pool a batch's flow needs when the batch starts (see ``_prestart``)
        self.prestart = prestart
        #: the work area of the runs' folders (artifacts): see :mod:`docpipe.artifacts`
        self.work_root = os.fspath(work_dir) if work_dir is not None else os.fspath(
            default_work_root(store.url if store is not None else None))
        self._work: WorkArea | None = None
        #: where ``thread`` and ``process`` blocks run: local pools unless told otherwise
        self.executor: Executor = executor or LocalExecutor()
        self.cores = os.cpu_count() or 1
        self.workers = max(1, workers or self.cores)
        self.threads_per_worker = max(1, self.cores // self.workers)
        #: each worker process's memory limit in MiB (0: none); see ``limit_memory``
        self.worker_memory_mb = default_memory_mb() if worker_memory_mb is None else worker_memory_mb
        self.max_in_flight = max(1, max_in_flight)
        self.on_document = on_document or _noop
        self._events: SimpleQueue[Done] = SimpleQueue()
        self._pools: dict[tuple[str, str, Recycle], _Batcher] = {}
        self._inline: dict[tuple[str, str], BlockHost] = {}
        self._node_batcher: dict[Node, _Batcher] = {}
        self._node_inline: dict[Node, BlockHost] = {}
        self._ready: deque[tuple[_Run, Node]] = deque()
        self._calls: dict[int, tuple[_Batcher, list[_Item]]] = {}
        self._call_seq = 0
        self._deadlines: list[tuple[float, int, float]] = []  # (due, call id, timeout) heap
        self._timers: list[tuple[float, int, _Item]] = []  # retries waiting for their delay
        self._timer_seq = 0

    # --- public -------------------------------------------------------------------------
    def run(self, plan: Plan, documents: Iterable[str | tuple[str, str | None]], *,
            argv: list[str] | None = None, correlation_id: str | None = None) -> BatchResult:
        """Run ``plan`` over ``documents`` (paths, or ``(path, correlation_id)`` pairs) as one
        new batch. Failed documents are results, not exceptions."""
        docs: list[str] = []
        self._correlation: dict[str, str | None] = {}
        for d in documents:
            path, corr = (d, correlation_id) if isinstance(d, str) else d
            docs.append(path)
            self._correlation[path] = corr
        batch_id = flow_id = None
        if self.store is not None:
            flow_id = self.store.put_flow(plan.name, plan.version, plan.content_hash,
                                          redact_definition(plan.definition))
            argv = [redact_arg(a) for a in argv] if argv else argv
            batch_id = self.store.start_batch(flow_id, redact_params(plan.params), len(docs), argv,
                                              inputs=docs, correlation_id=correlation_id)
        return self._run_batch(plan, docs, batch_id, flow_id, {}, {})

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
        batch = self.store.batch(batch_id)
        if batch is None:
            raise KeyError(f"no batch {batch_id} in {self.store.url}")
        docs = self.store.batch_inputs(batch_id)
        self._correlation = {d: batch.get("correlation_id") for d in docs}
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
        return self._run_batch(plan, docs, batch_id, batch["flow_id"], finished, resumable)

    def _run_batch(self, plan: Plan, docs: list[str], batch_id: str | None, flow_id: int | None,
                   finished: dict[str, DocResult], resumable: dict[str, dict[str, Any]],
                   ) -> BatchResult:
        t0 = time.perf_counter()
        self._work_area().sweep()  # what engines killed earlier left behind
        writer = self.store.writer if self.store is not None else None
        self._task = writer.task_run if writer else _noop
        # builds a succeeded task's record (encodes its outputs): not at all when nothing records
        self._succeeded = task_succeeded if writer else _noop
        self._run_started = writer.flow_run_started if writer else _noop
        self._run_resumed = writer.flow_run_resumed if writer else _noop
        self._run_finished = writer.flow_run_finished if writer else _noop
        self._review = writer.review_task if writer else _noop
        self._batch_id, self._flow_id, self._params = batch_id, flow_id, plan.params
        self._plan, self._docs, self._next_doc = plan, docs, 0
        self._finished_before, self._resumable = finished, resumable
        self._to_run = max(1, len(docs) - len(finished))
        if self.prestart:
            self._prestart(plan)
        self._active = 0
        self._order: dict[str, int] = {}
        self._results: list[DocResult] = []
        status, done = Status.INTERRUPTED, False
        try:
            self._loop()
            done = True
        finally:
            results = sorted(self._results, key=lambda r: self._order[r.run_id])
            result = BatchResult(batch_id, results, time.perf_counter() - t0)
            if done:
                status = result.status
            if self.store is not None and batch_id is not None:
                self.store.writer.flush()
                self.store.finish_batch(batch_id, status, result.counts)
        return result

    def _prestart(self, plan: Plan) -> None:
        """Start the pools the flow will need now, all at once, so that models load while the
        first steps run instead of one after another as each step's first input arrives.
        A step that can never run with these params (a ``when`` false by its params alone,
        like translation without a model) gets no pool until an input reaches it."""
        for node in plan.nodes:
            if node.subplan is not None:
                self._prestart(node.subplan)
            if node.block is None or node.runtime == "inline":
                continue
            if node.when is not None and node.when.false_by_params(self._params):
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
    def _loop(self) -> None:
        ready, events = self._ready, self._events
        while True:
            while True:
                if self._active < self.max_in_flight and self._next_doc < len(self._docs):
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
            if self._active == 0 and self._next_doc >= len(self._docs):
                return
            for due in (self._timers[0][0] if self._timers else None,
                        self._expire_calls() if self._deadlines else None):
                if due is not None:
                    wait = max(0.0, due - time.monotonic())
                    timeout = wait if timeout is None else min(timeout, wait)
            waiting = any(b.items or b.solo for b in self._pools.values())  # for workers
            if not self._calls and timeout is None and not waiting:
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

    def _admit(self) -> None:
        plan, nodes = self._plan, self._plan.nodes
        work = self._work_area()
        while self._active < self.max_in_flight and self._next_doc < len(self._docs):
            seq, doc = self._next_doc, self._docs[self._next_doc]
            self._next_doc += 1
            name = display_path(doc)  # how the store names it (a non-UTF-8 name escaped)
            before = self._finished_before.get(name)
            if before is not None:  # finished in an earlier attempt of this batch: kept as is
                self._order[before.run_id] = seq
                self._results.append(before)
                self.on_document(before)
                continue
            self._active += 1
            entry = self._resumable.get(name)
            refused = not_a_regular_file(doc)  # never opened: a FIFO would block its reader
            if entry is None:
                run_id = new_id()
                run = _Run(run_id, seq, doc, plan, {"path": doc, WORK_DIR_KEY: work.path(run_id)})
                self._run_started(run_started(run.id, self._batch_id, self._flow_id, name, time.time(),
                                              self._correlation.get(doc)))
                if refused is None:
                    self._ready.extend((run, nodes[i]) for i in plan.roots)
            else:
                run = _Run(entry["run_id"], seq, doc, plan,
                           {"path": doc, WORK_DIR_KEY: work.path(entry["run_id"])})
                self._run_resumed(RunResumed(run.id, time.time()))
                if refused is None:
                    self._restore(run, entry["steps"])
            self._order[run.id] = seq
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
                if not node.when.evaluate(state, self._params):
                    return self._skip(run, node)
            except ExpressionError as exc:
                return self._fail(run, node, ErrorInfo.of(exc), time.time(), "main")
        kind = node.kind
        if node.uses_work_dir:
            self._work_area().ensure(run.root.id)
        if kind == "block":
            inputs = {k: state[v] for k, v in node.reads.items()}
            if node.runtime == "inline":
                self._run_inline(run, node, inputs, -1)
            else:
                self._enqueue(_Item(run, node, inputs, -1, 1))
        elif kind == "map":
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

    def _wait(self, run: _Run, node: Node) -> None:
        """The run reached a review step: record its review task (the model's proposal and the
        choices), the step ``waiting``, and let go of the run until it is answered."""
        review, state, t = node.review, run.state, time.time()
        assert review is not None and run.parent is None  # the planner allows no review in a subflow
        self._review(ReviewTask(new_id(), run.id, self._batch_id, node.id, review.kind, json.dumps(review.keys),
                                review.prompt, json.dumps(review.choices_for(state)),
                                review.proposal(state), t))
        self._task(TaskRecord(run.id, node.id, node.label, 1, Status.WAITING, t, t, "main"))
        run.stopped = True
        self._finish(run, waiting=True)

    def _eval(self, run: _Run, node: Node) -> None:
        t = time.time()
        assert node.expr is not None
        try:
            value = node.expr.evaluate(run.state, self._params)
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
        self._task(self._succeeded(run.root.id, step, node.label, attempt, started, finished, worker, result))
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
        key = (m.name, params_key(node.params), recycle)
        b = self._pools.get(key)
        if b is None:
            # workers write their temporary files (Tesseract's images, torch's caches) into
            # this engine's own folder, removed when it closes or, if it is killed, swept
            # more workers than documents only load the model more often (a map's items are
            # many per document: its pool gets them all)
            workers = self.workers
            if self.one_batch and node.kind != "map":
                workers = max(1, min(self.workers, self._to_run))
            tmp = self._work_area().temp_dir()
            env = {"TMPDIR": tmp, "TEMP": tmp, "TMP": tmp, MEMORY_ENV: str(self.worker_memory_mb)}
            pool = self.executor.make_pool(node.block.cls, node.params, workers=workers,
                                           threads=self.threads_per_worker, events=self._events,
                                           env=env, recycle=recycle or None)
            b = self._pools[key] = _Batcher(pool, m.batch, m.batch_wait, m.name)
        self._node_batcher[node] = b
        return b

    def _enqueue(self, item: _Item) -> None:
        item.queued = time.monotonic()
        self._batcher(item.node).items.append(item)

    def _dispatch(self) -> float | None:
        """Send what can go to idle workers; return how long until a partial batch is due."""
        timeout: float | None = None
        now = time.monotonic()
        quiet = not self._ready and not self._calls and self._next_doc >= len(self._docs)
        for b in self._pools.values():
            pool = b.pool
            while pool.idle() > 0 and (b.solo or b.items):
                if b.solo:
                    self._send(b, [b.solo.popleft()])
                    continue
                items = b.items
                # drop inputs of documents that failed meanwhile
                while items and items[0].run.root.stopped:
                    items.popleft()
                if not items:
                    break
                due = items[0].queued + b.wait
                if len(items) >= b.size or now >= due or quiet:
                    self._send(b, [items.popleft() for _ in range(min(b.size, len(items)))])
                else:
                    wait = due - now
                    timeout = wait if timeout is None else min(timeout, wait)
                    break
        return timeout

    def _send(self, b: _Batcher, items: list[_Item]) -> None:
        self._call_seq += 1
        call_id = self._call_seq
        self._calls[call_id] = (b, items)
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
        self._task(self._succeeded(run.root.id, step_path(run.prefix, node.id), node.label, attempt, started,
                                   finished, worker, values))
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
        self._results.append(result)
        self._active -= 1
        self.on_document(result)
        return None
