"""The local executor: a thread pool and a process pool, both reporting to the engine's queue.

The process pool is written here rather than taken from
``concurrent.futures.ProcessPoolExecutor`` because that pool breaks as a whole
when one worker dies (every pending future fails with ``BrokenProcessPool``).
Here a dead worker fails only the call it held, and is replaced.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from queue import SimpleQueue
from typing import Any

from pydantic import BaseModel

from docpipe.blocks import Block
from docpipe.budget import worker_env
from docpipe.errors import BlockTimeout, WorkerDied
from docpipe.executors import WAKE, Done, ErrorInfo
from docpipe.executors.base import BlockHost, Pool, Recycle
from docpipe.executors.worker import main as worker_main
from docpipe.status import ErrorKind


class LocalExecutor:
    """Pools on this machine, the engine's default: ``thread`` blocks get a
    :class:`ThreadPool`, ``process`` blocks a :class:`ProcessPool`."""

    def make_pool(self, cls: type[Block], params: BaseModel, *, workers: int, threads: int,
                  events: SimpleQueue[Any], env: Mapping[str, str] | None = None,
                  recycle: Recycle | None = None) -> Pool:
        """A started pool (``env`` and ``recycle`` reach process workers only: threads share
        this process's environment and cannot be replaced)."""
        if cls.manifest.runtime == "thread":
            return ThreadPool(cls, params, workers, events)
        return ProcessPool(cls, params, workers, threads, events,
                           env=dict(env) if env is not None else None, recycle=recycle)


class ThreadPool:
    """Runs a thread block's calls on ``workers`` threads sharing one set-up block instance,
    set up in the background from the start."""

    def __init__(self, cls: type[Block], params: BaseModel, workers: int,
                 events: SimpleQueue[Any]) -> None:
        self.cls, self.params, self.events = cls, params, events
        self.capacity = max(1, workers)
        self.busy = 0
        self._exec = ThreadPoolExecutor(self.capacity, thread_name_prefix=f"docpipe-{cls.manifest.name}")
        self._host: BlockHost | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._setup, name=f"docpipe-warm-{cls.manifest.name}",
                         daemon=True).start()

    def idle(self) -> int:
        return self.capacity - self.busy

    def submit(self, call_id: int, inputs: list[dict[str, Any]]) -> None:
        self.busy += 1
        self._exec.submit(self._call, call_id, inputs)

    def release(self, done: Done) -> None:
        self.busy -= 1

    def kill(self, call_id: int, reason: str) -> bool:
        """A thread cannot be killed: the call runs on in the background."""
        return False

    def pids(self) -> list[int]:
        """None: the threads are this process's own."""
        return []

    def _setup(self) -> BlockHost:
        """The set-up block, set up by the first thread that needs it (the others wait)."""
        with self._lock:
            if self._host is None:
                self._host = BlockHost(self.cls.manifest.name, lambda: (self.cls, self.params))
            return self._host

    def _call(self, call_id: int, inputs: list[dict[str, Any]]) -> None:
        started = time.time()
        results, error = self._setup().call(inputs)
        worker = threading.current_thread().name
        self.events.put(Done(self, call_id, results, error, worker, started, time.time()))

    def close(self) -> None:
        self._exec.shutdown(wait=True, cancel_futures=True)
        if self._host is not None:
            self._host.teardown()


class NoDevicePool:
    """The pool of a block that cannot run here (it needs a GPU and the engine has none): it
    has one pretend worker, and every call fails at once with ``reason``, so each document
    says why instead of waiting for a worker that never comes."""

    def __init__(self, name: str, reason: str, events: SimpleQueue[Any]) -> None:
        self.name, self.events = name, events
        self.capacity = 1
        self.error = ErrorInfo(ErrorKind.BLOCK_ERROR, "NoGPU", reason, "")

    def idle(self) -> int:
        return 1

    def submit(self, call_id: int, inputs: list[dict[str, Any]]) -> None:
        now = time.time()
        self.events.put(Done(self, call_id, None, self.error, "none", now, now))

    def release(self, done: Done) -> None:
        return None

    def kill(self, call_id: int, reason: str) -> bool:
        return True

    def pids(self) -> list[int]:
        return []

    def close(self) -> None:
        return None


class _Worker:
    def __init__(self, proc: Any, conn: Connection, slot: int = 0) -> None:
        self.proc, self.conn, self.slot = proc, conn, slot
        self.call: tuple[int, float] | None = None  # (call id, sent at)
        self.ready = False  # set up and waiting for calls
        self.label = f"pid:{proc.pid}"
        self.killed_because: str | None = None
        self.recycled = False  # exiting on its own after a call (see :class:`Recycle`)


class ProcessPool:
    """``workers`` spawned processes, each holding one set-up block; one call per worker at a time.

    With ``recycle`` a worker past its limits sends its call's results noted
    ``recycled: <why>``, runs ``teardown`` and exits; it is replaced like a dead worker, but
    no call fails (the note goes into the :class:`Done`'s ``worker``, so into the call's task
    records). ``recycled`` counts the workers replaced that way."""

    def __init__(self, cls: type[Block], params: BaseModel, workers: int, threads: int,
                 events: SimpleQueue[Any], env: dict[str, str] | None = None,
                 recycle: Recycle | None = None) -> None:
        self.name = cls.manifest.name
        self.events = events
        self.capacity = max(1, workers)
        self.busy = 0
        self.threads = threads
        # pickled here, unpickled by the worker only after it set its thread limits (unpickling
        # imports the block's module); secrets travel too (model_dump_json would mask them)
        self._args = (cls.ref(), pickle.dumps(params))
        self._env = env
        self._recycle = recycle if recycle else None
        self.recycled = 0
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._closing = False
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self.workers: list[_Worker] = [self._spawn(slot) for slot in range(self.capacity)]
        self.spawned = self.capacity
        self._reader = threading.Thread(target=self._read_loop, name=f"docpipe-pool-{self.name}",
                                        daemon=True)
        self._reader.start()

    def _spawn(self, slot: int) -> _Worker:
        """Start the worker of ``slot`` (a replacement takes its predecessor's slot, so its
        GPU: see :func:`docpipe.budget.worker_env`)."""
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=worker_main, args=(child, *self._args, self.threads,
                                                           worker_env(self._env, slot), self._recycle),
                                 name=f"docpipe-{self.name}", daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent, slot)

    def idle(self) -> int:
        """Workers that finished ``setup()`` and hold no call. Calls go only to those, so a
        call's timeout never counts a worker's start-up or model loading."""
        with self._lock:
            return sum(1 for w in self.workers if w.ready and w.call is None)

    def submit(self, call_id: int, inputs: list[dict[str, Any]]) -> None:
        with self._lock:
            worker = next(w for w in self.workers if w.ready and w.call is None)
            worker.call = (call_id, time.time())
        self.busy += 1
        try:
            worker.conn.send((call_id, inputs))
        except (BrokenPipeError, OSError):
            pass  # the worker died; the reader sees its sentinel and fails the call
        except Exception as exc:  # noqa: BLE001 - inputs that cannot be pickled
            with self._lock:
                worker.call = None
            err = ErrorInfo(ErrorKind.BLOCK_ERROR, type(exc).__name__,
                            f"inputs for block '{self.name}' cannot be sent to a worker: {exc}", "")
            self.events.put(Done(self, call_id, None, err, worker.label, time.time(), time.time()))

    def release(self, done: Done) -> None:
        self.busy -= 1

    def kill(self, call_id: int, reason: str) -> bool:
        """Kill the worker running ``call_id`` (a timeout); its call fails with ``reason``
        when the pool replaces it. A call that finished meanwhile keeps its result."""
        with self._lock:
            worker = next((w for w in self.workers if w.call and w.call[0] == call_id), None)
            if worker is None:
                return True
            worker.killed_because = reason
        worker.proc.kill()
        return True

    def pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self.workers]

    def _read_loop(self) -> None:
        while True:
            with self._lock:
                if self._closing:
                    return
                by_conn = {w.conn: w for w in self.workers}
                by_sentinel = {w.proc.sentinel: w for w in self.workers}
            ready = wait([*by_conn, *by_sentinel, self._wake_r])
            if self._wake_r in ready:
                return
            for obj in ready:
                if obj in by_conn:
                    self._receive(by_conn[obj])  # type: ignore[index]
            for obj in ready:
                if obj in by_sentinel:
                    self._replace(by_sentinel[obj])  # type: ignore[index]

    def _receive(self, w: _Worker) -> None:
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            return  # died; the sentinel handles it
        except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be unpickled here
            with self._lock:
                call, w.call = w.call, None
            if call is not None:
                err = ErrorInfo(ErrorKind.BLOCK_ERROR, type(exc).__name__,
                                f"the result of block '{self.name}' could not be received: {exc}", "")
                self.events.put(Done(self, call[0], None, err, w.label, call[1], time.time()))
            return
        if msg[0] == "ready":
            with self._lock:
                w.ready = True
            self.events.put(WAKE)  # the engine may have inputs waiting for this worker
            return
        call_id, results, error, started, finished, recycled = msg
        label = w.label
        with self._lock:
            w.call = None
            if recycled:  # it exits now: no more calls for it; its sentinel replaces it
                w.ready, w.recycled = False, True
                self.recycled += 1
                label = f"{w.label} ({recycled})"
        self.events.put(Done(self, call_id, results, error, label, started, finished))

    def _replace(self, w: _Worker) -> None:
        w.proc.join(timeout=5)
        with self._lock:
            if self._closing or w not in self.workers:
                return
            call, w.call = w.call, None
            self.workers[self.workers.index(w)] = self._spawn(w.slot)
            self.spawned += 1
        w.conn.close()
        if call is not None and w.killed_because is not None:
            err = ErrorInfo.failure(BlockTimeout(w.killed_because))
            self.events.put(Done(self, call[0], None, err, w.label, call[1], time.time()))
        elif call is not None:
            code = w.proc.exitcode
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
            err = ErrorInfo.failure(WorkerDied(
                f"the worker process ({w.label}) running block '{self.name}' {how}"))
            self.events.put(Done(self, call[0], None, err, w.label, call[1], time.time()))

    def close(self) -> None:
        with self._lock:
            self._closing = True
            workers = list(self.workers)
        self._wake_w.send(None)
        self._reader.join(timeout=5)
        for w in workers:
            if w.recycled:  # leaving on its own, its teardown running: joined below
                continue
            if not w.ready:  # still loading its model, never given a call: nothing to lose
                w.proc.kill()
                continue
            try:
                w.conn.send(None)  # a clean exit: teardown runs
            except (BrokenPipeError, OSError):
                pass
        deadline = time.time() + 5
        for w in workers:
            w.proc.join(timeout=max(0.0, deadline - time.time()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()
