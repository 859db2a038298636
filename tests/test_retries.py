"""Retries (per block, per step, with backoff) and timeouts that kill the worker."""

from __future__ import annotations

import pytest
from support import kill_one_worker

from docpipe.blocks import Retry
from docpipe.engine import Engine
from docpipe.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    yield s
    s.close()


def attempts_of(store, run_id, step):
    return [(t["attempt"], t["status"], t["error_kind"]) for t in store.get_run(run_id)["tasks"]
            if t["step"] == step]


def test_a_flaky_step_is_retried_and_every_attempt_recorded(plan, docs, store):
    p = plan([{"id": "flaky", "block": "toy.flaky", "params": {"fail_times": 2},
               "retry": {"max_attempts": 3, "delay": 0.01, "on": ["ConnectionError"]}}],
             outputs=["attempts"])
    with Engine(store, workers=2) as engine:
        result = engine.run(p, docs("a", "b"))
    assert result.counts == {"succeeded": 2, "failed": 0}
    assert [r.outputs["attempts"] for r in result.results] == [3, 3]
    assert attempts_of(store, result.results[0].run_id, "flaky") == [
        (1, "retrying", "block_error"), (2, "retrying", "block_error"), (3, "succeeded", None)]


def test_attempts_run_out(plan, docs, store):
    p = plan([{"id": "flaky", "block": "toy.flaky", "params": {"fail_times": 5},
               "retry": {"max_attempts": 2, "delay": 0, "on": ["ConnectionError"]}}])
    with Engine(store, workers=1) as engine:
        result = engine.run(p, docs("a"))
    assert result.failed[0].error == "ConnectionError: service unavailable (attempt 2)"
    assert [a[:2] for a in attempts_of(store, result.results[0].run_id, "flaky")] == [
        (1, "retrying"), (2, "failed")]


def test_errors_not_named_in_the_policy_are_final(plan, docs):
    p = plan([{"id": "flaky", "block": "toy.flaky", "params": {"fail_times": 1},
               "retry": {"max_attempts": 3, "delay": 0, "on": ["timeout"]}}])
    with Engine(workers=1) as engine:
        result = engine.run(p, docs("a"))
    assert result.failed and "attempt 1" in result.failed[0].error


def test_a_hanging_block_times_out_its_worker_is_replaced_and_the_run_goes_on(plan, docs, store):
    p = plan([{"id": "read", "block": "toy.read"},
              {"id": "h", "block": "toy.hang", "timeout": 1.0,
               "retry": {"max_attempts": 2, "delay": 0, "on": ["timeout"]}}], outputs=["done"])
    paths = docs("fine", "please hang", "fine too")
    with Engine(store, workers=1) as engine:
        result = engine.run(p, paths)
        pool = engine.pools("toy.hang")[0]
        assert pool.spawned == 3  # the first worker, then one replacement per timed-out attempt
    assert [r.status for r in result.results] == ["succeeded", "failed", "succeeded"]
    hung = result.results[1]
    assert hung.error_kind == "timeout"
    assert "exceeded its timeout (1 s per input" in hung.error
    assert attempts_of(store, hung.run_id, "h") == [(1, "retrying", "timeout"),
                                                    (2, "failed", "timeout")]


def test_a_killed_worker_is_retried_when_the_policy_says_so(plan, docs):
    p = plan([{"id": "read", "block": "toy.read"},
              {"id": "crash", "block": "toy.crash",
               "retry": {"max_attempts": 2, "delay": 0, "on": ["worker_died"]}}])
    with Engine(workers=2) as engine:
        result = engine.run(p, docs("ok", "segfault", "ok"))
    # the crashing document crashes again on its retry, the others are untouched
    assert [r.status for r in result.results] == ["succeeded", "failed", "succeeded"]


def test_timeouts_are_refused_on_inline_blocks(plan):
    from docpipe.errors import FlowError

    with pytest.raises(FlowError, match="cannot be interrupted"):
        plan([{"id": "read", "block": "toy.read"},
              {"id": "up", "block": "toy.upper", "timeout": 1}])


def test_backoff_policy():
    r = Retry(max_attempts=4, backoff="exponential", delay=1.0, max_delay=3.0, jitter=0.0)
    assert [r.delay_for(n) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]
    assert Retry(backoff="fixed", delay=0.5, jitter=0).delay_for(3) == 0.5
    jittered = {Retry(delay=1.0, jitter=0.5).delay_for(1) for _ in range(20)}
    assert len(jittered) > 1 and all(0.5 <= d <= 1.5 for d in jittered)
    # the default policy retries what says it is retryable (a timeout, a dead worker, ...)
    assert r.allows(1, "timeout", "BlockTimeout", True) and not r.allows(4, "timeout", "BlockTimeout", True)
    assert not r.allows(1, "block_error", "ValueError")
    assert not r.allows(1, "transient", "TransientError")  # not marked retryable: not by kind alone
    assert Retry(max_attempts=2, on=("corrupt",)).allows(1, "corrupt", "CorruptDocument")


@pytest.mark.parametrize("transient", [True, False])
def test_the_default_policy_retries_what_is_marked_retryable(plan, docs, store, transient):
    """DocumentError.retryable is what the default policy (``on: ["retryable"]``) goes by: a
    TransientError is tried again; a plain ConnectionError is final unless the step names it."""
    p = plan([{"id": "flaky", "block": "toy.flaky", "params": {"fail_times": 1, "transient": transient},
               "retry": {"max_attempts": 3, "delay": 0}}], outputs=["attempts"])
    with Engine(store, workers=1) as engine:
        result = engine.run(p, docs("a"))
    steps = [a[1:] for a in attempts_of(store, result.results[0].run_id, "flaky")]
    if transient:
        assert result.counts == {"succeeded": 1, "failed": 0}
        assert steps == [("retrying", "transient"), ("succeeded", None)]
    else:
        assert steps == [("failed", "block_error")]


def test_a_document_that_kills_its_batch_worker_fails_alone(plan, docs, store):
    """A worker death is not the batch's fault: with the default policy (one attempt) the
    batch's inputs run again one by one, so only the document that kills its worker fails."""
    p = plan([{"id": "read", "block": "toy.read"}, {"id": "c", "block": "toy.crash_batch"}],
             outputs=["survived"])
    with Engine(store, workers=1) as engine:
        result = engine.run(p, docs("a", "b", "segfault here", "c", "d"))
    assert [r.status for r in result.results] == ["succeeded"] * 2 + ["failed"] + ["succeeded"] * 2
    bad = result.results[2]
    assert (bad.error_kind, bad.step) == ("worker_died", "c")
    assert [a[1:] for a in attempts_of(store, bad.run_id, "c")] == [("failed", "worker_died")]


def test_a_worker_killed_mid_batch_has_its_task_retried_and_the_run_completes(plan, docs, store):
    p = plan([{"id": "read", "block": "toy.read"},
              {"id": "s", "block": "toy.sleep", "params": {"seconds": 1.0},
               "retry": {"max_attempts": 2, "delay": 0, "on": ["worker_died"]}}],
             outputs=["slept"])
    with Engine(store, workers=2) as engine:
        engine.run(p, docs("warm up"))
        pool = engine.pools("toy.sleep")[0]
        with kill_one_worker(pool):  # both workers are inside a 1 s call by then
            result = engine.run(p, docs(*[f"doc {i}" for i in range(4)]))
    assert result.counts == {"succeeded": 4, "failed": 0}
    retried = [r for r in result.results
               if [a[1] for a in attempts_of(store, r.run_id, "s")] == ["retrying", "succeeded"]]
    assert len(retried) == 1
    assert attempts_of(store, retried[0].run_id, "s")[0][2] == "worker_died"
