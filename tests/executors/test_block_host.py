"""BlockHost: a block set up once and its batches run and checked, the same in a worker
process, a thread pool, a Ray actor and the engine's loop."""

from __future__ import annotations

from typing import Any

import pytest
from executor_blocks import BLOCKS
from pydantic import BaseModel
from support import TOYS

import docpipe
from docpipe import Block, Manifest
from docpipe.blocks import NoParams, Retry, import_ref
from docpipe.engine import Engine
from docpipe.errors import BlockTimeout, CorruptDocument, WorkerDied
from docpipe.executors import ErrorInfo
from docpipe.executors.base import BlockHost
from docpipe.planner import build_plan
from docpipe.plugins import Registry


class Counting(Block):
    """Counts its set-ups, runs and teardowns (on the class: one host per test)."""

    manifest = Manifest(name="host.counting", version="1.0", reads={"text": str},
                        writes={"n": int})
    log: list[str] = []

    def setup(self, params: BaseModel) -> None:
        self.log.append("setup")

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        self.log.append(f"run {len(batch)}")
        out: list[Any] = []
        for item in batch:
            text = item["text"]
            if text == "raise":
                raise ValueError("the whole batch breaks")
            if text == "short":
                return out  # fewer results than inputs
            if text == "corrupt":
                out.append(CorruptDocument("bad bytes"))  # a typed failure, returned
            elif text == "liar":
                out.append({"n": 0, "extra": 1})  # a key the manifest does not declare
            else:
                out.append({"n": len(text)})
        return out

    def teardown(self) -> None:
        self.log.append("teardown")


@pytest.fixture
def counting() -> type[Counting]:
    Counting.log = []
    return Counting


def host_of(cls: type[Block], threads: int | None = None) -> BlockHost:
    return BlockHost(cls.manifest.name, lambda: (cls, NoParams()), threads)


def test_a_host_sets_its_block_up_once_and_runs_its_batches(counting):
    host = host_of(counting)
    assert host.error is None and counting.log == ["setup"]
    assert host.call([{"text": "ab"}, {"text": "abc"}]) == ([{"n": 2}, {"n": 3}], None)
    assert host.run_one({"text": "abcd"}) == {"n": 4}
    host.teardown()
    assert counting.log == ["setup", "run 2", "run 1", "teardown"]


def test_results_are_checked_per_input_and_a_broken_call_fails_as_a_whole(counting):
    host = host_of(counting)
    results, error = host.call([{"text": "ok"}, {"text": "corrupt"}])
    assert error is None and results is not None
    assert results[0] == {"n": 2}
    assert (results[1].kind, results[1].type, results[1].message) == ("corrupt", "CorruptDocument",
                                                                     "bad bytes")
    liar = host.run_one({"text": "liar"})
    assert isinstance(liar, ErrorInfo) and liar.type == "ContractError"
    assert "block 'host.counting' broke its manifest: undeclared ['extra']" in liar.message

    results, error = host.call([{"text": "a"}, {"text": "raise"}])
    assert results is None and error is not None
    assert (error.kind, error.type, error.message) == ("block_error", "ValueError",
                                                       "the whole batch breaks")
    assert "Traceback" in error.traceback
    results, error = host.call([{"text": "a"}, {"text": "short"}])
    assert results is None and error is not None and error.type == "TypeError"
    assert "returned 1 results for 2 inputs" in error.message


class NoModel(Block):
    manifest = Manifest(name="host.no_model", version="1.0", reads={"text": str},
                        writes={"n": int})
    raises: BaseException = FileNotFoundError("model directory /nonexistent/model not found")
    ran = False

    def setup(self, params: BaseModel) -> None:
        raise self.raises

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        NoModel.ran = True
        return [{"n": 1} for _ in batch]

    def teardown(self) -> None:
        raise AssertionError("teardown of a block that was never set up")


@pytest.mark.parametrize(("raises", "kind", "message"), [
    (FileNotFoundError("model directory /nonexistent/model not found"), "block_error",
     "model directory /nonexistent/model not found"),
    (MemoryError(), "out_of_memory", "out of memory"),
])
def test_a_failed_setup_fails_every_call_with_one_typed_error(raises, kind, message):
    NoModel.raises, NoModel.ran = raises, False
    host = host_of(NoModel)
    err = host.error
    assert err is not None and host.block is None
    assert (err.kind, err.type) == (kind, type(raises).__name__)
    assert err.message == f"setup of block 'host.no_model' failed: {message}"
    assert "Traceback" in err.traceback and " in setup" in err.traceback
    assert host.call([{"text": "a"}, {"text": "b"}]) == (None, err)
    assert host.run_one({"text": "a"}) is err
    host.teardown()  # nothing to tear down
    assert not NoModel.ran


def test_a_block_that_cannot_be_loaded_is_a_setup_failure_under_the_name_given():
    host = BlockHost("docpipe_nowhere:Block",
                     lambda: (import_ref("docpipe_nowhere:Block"), NoParams()))
    assert host.error is not None and host.error.type == "ModuleNotFoundError"
    assert host.error.message.startswith("setup of block 'docpipe_nowhere:Block' failed: ")
    assert host.call([{"text": "a"}]) == (None, host.error)


def test_failures_that_happen_to_a_call_are_typed_by_their_class():
    for exc, kind in ((WorkerDied("the worker process (pid:1) exited with status 139"), "worker_died"),
                      (BlockTimeout("block 'x' exceeded its timeout"), "timeout")):
        info = ErrorInfo.failure(exc)
        assert (info.kind, info.type, info.message, info.traceback) == (
            kind, type(exc).__name__, str(exc), "")
        assert str(info) == str(exc)
        # the default retry policy tries them again, as it does what a block marks retryable
        assert info.retryable and Retry(max_attempts=2).allows(1, info.kind, info.type, info.retryable)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(entry_points=False, extra=[TOYS, BLOCKS])


@pytest.mark.parametrize("runtime", ["inline", "thread", "process"])
def test_a_setup_failure_is_the_same_typed_failure_wherever_the_block_runs(registry, docs, runtime):
    """Inline steps used to record a failed setup as the bare exception; now every runtime
    gives the same error, typed by the exception and naming the block."""
    block = f"exec.broken_setup_{runtime}"
    p = build_plan({"name": "t", "version": "1", "steps": [
        {"id": "read", "block": "toy.read"}, {"id": "load", "block": block}]}, registry)
    with Engine(workers=1) as engine:
        result = engine.run(p, docs("a", "b"))
    assert result.counts == {"succeeded": 0, "failed": 2}
    for r in result.failed:
        assert (r.error_kind, r.step) == ("block_error", "load")
        assert r.error == (f"FileNotFoundError: setup of block '{block}' failed: "
                           "model directory /nonexistent/model not found")
        assert r.traceback is not None and "FileNotFoundError" in r.traceback
