"""The local executor's pools driven directly through the Pool interface, and the engine
getting every pool from its executor."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from queue import Empty, SimpleQueue
from typing import Any

import pytest
from executor_blocks import BLOCKS, WhereProcess, WhereThread
from pydantic import BaseModel
from support import TOYS
from toys import Crash, Hang

from docpipe.blocks import Block, NoParams
from docpipe.engine import Engine
from docpipe.executors import WAKE, Done
from docpipe.executors.base import Pool, Recycle
from docpipe.executors.local import LocalExecutor, ProcessPool, ThreadPool
from docpipe.executors.worker import MEMORY_ENV
from docpipe.planner import build_plan
from docpipe.plugins import Registry
from docpipe.store import Store


def next_done(events: SimpleQueue[Any], timeout: float = 30) -> Done:
    """The next finished call on ``events`` (wake-ups skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        item = events.get(timeout=max(0.0, deadline - time.monotonic()))
        if item is not WAKE:
            return item


def wait_idle(pool: Pool, events: SimpleQueue[Any], n: int = 1, timeout: float = 30) -> None:
    """Wait until ``n`` workers are ready for a call (a process worker says so with a WAKE)."""
    deadline = time.monotonic() + timeout
    while pool.idle() < n:
        assert time.monotonic() < deadline, "the pool's workers never became ready"
        try:
            assert events.get(timeout=0.1) is WAKE
        except Empty:
            pass


@pytest.mark.parametrize("cls", [WhereThread, WhereProcess])
def test_the_local_executor_makes_a_started_pool_for_each_runtime(cls, tmp_path):
    events: SimpleQueue[Any] = SimpleQueue()
    pool = LocalExecutor().make_pool(cls, NoParams(), workers=1, threads=1, events=events,
                                     env={"TMPDIR": str(tmp_path)})
    try:
        assert type(pool) is {"thread": ThreadPool, "process": ProcessPool}[cls.manifest.runtime]
        wait_idle(pool, events)
        pool.submit(7, [{"text": "a"}, {"text": "b"}])
        assert pool.idle() == 0
        done = next_done(events)
        assert (done.pool, done.call_id, done.error) == (pool, 7, None)
        pool.release(done)
        assert pool.idle() == 1
        assert done.results is not None and len(done.results) == 2
        pid, tmpdir = done.results[0]["pid"], done.results[0]["tmpdir"]
        if cls is WhereProcess:  # its own process, with the temporary folder it was given
            assert pool.pids() == [pid] and pid != os.getpid() and tmpdir == str(tmp_path)
        else:  # threads of this process: no pids of their own, and nothing to kill
            assert pool.pids() == [] and pid == os.getpid()
            assert pool.kill(7, "too slow") is False
    finally:
        pool.close()


def test_a_killed_call_fails_as_a_timeout_and_its_worker_is_replaced():
    events: SimpleQueue[Any] = SimpleQueue()
    pool = ProcessPool(Hang, NoParams(), 1, 1, events)
    try:
        wait_idle(pool, events)
        pool.submit(1, [{"text": "hang here"}])
        time.sleep(0.2)
        assert pool.kill(1, "block 'toy.hang' exceeded its timeout") is True
        done = next_done(events)
        assert done.call_id == 1 and done.results is None and done.error is not None
        err = done.error
        assert (err.kind, err.type, err.message, err.traceback, err.retryable) == (
            "timeout", "BlockTimeout", "block 'toy.hang' exceeded its timeout", "", True)
        pool.release(done)
        assert pool.spawned == 2
        wait_idle(pool, events)  # the replacement takes calls
        pool.submit(2, [{"text": "fine"}])
        assert next_done(events).results == [{"done": True}]
    finally:
        pool.close()


def test_a_dead_worker_fails_its_call_as_worker_died():
    events: SimpleQueue[Any] = SimpleQueue()
    pool = ProcessPool(Crash, NoParams(), 1, 1, events)
    try:
        wait_idle(pool, events)
        pool.submit(1, [{"text": "segfault now"}])
        err = next_done(events).error
        assert err is not None
        assert (err.kind, err.type, err.traceback, err.retryable) == ("worker_died", "WorkerDied",
                                                                      "", True)
        assert err.message.startswith("the worker process (pid:")
        assert err.message.endswith("running block 'toy.crash' exited with status 139")
    finally:
        pool.close()


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(entry_points=False, extra=[TOYS, BLOCKS])


def test_a_thread_that_runs_past_its_timeout_is_given_up_on(registry, docs, tmp_path):
    """A thread cannot be killed (its pool says so): the engine fails the call as a timeout
    itself, retries it as the step's policy says, and ignores the late result."""
    p = build_plan({"name": "t", "version": "1", "steps": [
        {"id": "read", "block": "toy.read"},
        {"id": "nap", "block": "exec.nap", "params": {"seconds": 1.0}, "timeout": 0.3,
         "retry": {"max_attempts": 2, "delay": 0, "on": ["timeout"]}}],
        "outputs": ["woke"]}, registry)
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        with Engine(store, workers=2) as engine:
            result = engine.run(p, docs("awake", "take a nap", "awake too"))
        assert [r.status for r in result.results] == ["succeeded", "failed", "succeeded"]
        napped = result.results[1]
        assert (napped.error_kind, napped.step) == ("timeout", "nap")
        assert napped.error is not None and napped.error.endswith(
            "; the thread finishes in the background")
        attempts = [(t["attempt"], t["status"], t["error_kind"])
                    for t in store.get_run(napped.run_id)["tasks"] if t["step"] == "nap"]
        assert attempts == [(1, "retrying", "timeout"), (2, "failed", "timeout")]
    finally:
        store.close()


class RecordingExecutor(LocalExecutor):
    """Local pools, noting what the engine asked for."""

    def __init__(self) -> None:
        self.made: list[tuple[str, int, dict[str, str], Pool]] = []

    def make_pool(self, cls: type[Block], params: BaseModel, *, workers: int, threads: int,
                  events: SimpleQueue[Any], env: Mapping[str, str] | None = None,
                  recycle: Recycle | None = None) -> Pool:
        pool = super().make_pool(cls, params, workers=workers, threads=threads, events=events,
                                 env=env, recycle=recycle)
        self.made.append((cls.manifest.name, workers, dict(env or {}), pool))
        return pool


def test_the_engine_gets_every_pool_from_its_executor(registry, docs, tmp_path):
    p = build_plan({"name": "t", "version": "1", "steps": [
        {"id": "read", "block": "toy.read"}, {"id": "where", "block": "exec.where_process"}],
        "outputs": ["tmpdir"]}, registry)
    executor = RecordingExecutor()
    with Engine(workers=2, executor=executor, work_dir=tmp_path / "work",
                worker_memory_mb=700) as engine:
        result = engine.run(p, docs("a", "b"))
        assert [name for name, *_ in executor.made] == ["toy.read", "exec.where_process"]
        for name, workers, env, pool in executor.made:
            assert engine.pools(name) == [pool] and workers == 2
            assert env[MEMORY_ENV] == "700"
            assert env["TMPDIR"].startswith(str(tmp_path / "work"))
    assert result.counts == {"succeeded": 2, "failed": 0}
    assert {r.outputs["tmpdir"] for r in result.results} == {executor.made[1][2]["TMPDIR"]}
    assert isinstance(Engine().executor, LocalExecutor)  # the default
