"""One budget of cores and GPUs per engine (docpipe/budget.py): busy calls never hold more
threads than the cores, pools are sized per block, each worker is told its share and its GPU.

The overlap checks are correctness properties, not timings: each call records when it ran
(one clock for every process of the machine), and with one core no two calls may overlap."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from budget_blocks import BLOCKS
from support import TOYS, run_cli, write_flow

from docpipe.blocks import Manifest
from docpipe.budget import CUDA_ENV, GPUS_ENV, Budget, parse_gpus, visible_gpus, worker_env
from docpipe.engine import BatchResult, Engine
from docpipe.errors import FlowError
from docpipe.planner import Plan, build_plan
from docpipe.plugins import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(entry_points=False, extra=[TOYS, BLOCKS])


def make_plan(registry: Registry, steps: list[dict[str, Any]], outputs: list[str]) -> Plan:
    return build_plan({"name": "budget", "version": "1", "steps": steps, "outputs": outputs}, registry)


def most_at_once(spans: list[tuple[float, float, int]]) -> int:
    """The most calls that were running at one moment."""
    edges = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    now = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        now += step
        peak = max(peak, now)
    return peak


def two_burners(registry: Registry, seconds: float) -> Plan:
    """Two process blocks (two pools) that both start as soon as a document is read."""
    p = {"seconds": seconds}
    steps: list[dict[str, Any]] = [{"id": "read", "block": "toy.read"}]
    for x in ("a", "b"):
        steps.append({"id": x, "block": f"budget.burn_{x}", "params": p,
                      "outputs": {k: f"{x}_{k}" for k in ("started", "ended", "pid", "env")}})
    return make_plan(registry, steps, [f"{x}_{k}" for x in "ab" for k in ("started", "ended", "pid", "env")])


def spans_of(result: BatchResult) -> list[tuple[float, float, int]]:
    return [(r.outputs[f"{x}_started"], r.outputs[f"{x}_ended"], r.outputs[f"{x}_pid"])
            for r in result.results for x in "ab"]


def warm(engine: Engine, plan: Plan, docs: Any, *blocks: str) -> None:
    """Start the pools of ``plan`` and wait until every worker of ``blocks`` is ready, so that
    what follows does not depend on how fast processes start on a loaded machine."""
    engine.run(plan, docs("warm"))
    for block in blocks:
        for pool in engine.pools(block):
            all_ready(pool)


def test_one_core_runs_one_call_at_a_time_across_pools(registry, docs):
    plan = two_burners(registry, 0.25)
    # two workers per pool (four processes), but one core: one call at a time, whichever pool
    with Engine(workers=2, cores=1) as engine:
        result = engine.run(plan, docs(*[f"doc {i}" for i in range(4)]))
        assert engine.budget is not None and engine.budget.free == 1  # every token came back
        assert [p.capacity for p in engine.pools("budget.burn_a") + engine.pools("budget.burn_b")] == [2, 2]
    assert result.counts == {"succeeded": 4, "failed": 0}
    spans = spans_of(result)
    assert len(spans) == 8 and most_at_once(spans) == 1
    assert len({pid for *_, pid in spans}) >= 2  # both pools' workers ran: no pool was left out
    # each worker was told one thread
    for r in result.results:
        for env in (r.outputs["a_env"], r.outputs["b_env"]):
            assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OMP_THREAD_LIMIT"] == "1"


def test_without_the_budget_the_same_pools_overlap(registry, docs):
    """The control: what the budget prevents does happen without it (``budget=False``: the
    behaviour before it), so the check above can fail."""
    plan = two_burners(registry, 1.0)
    with Engine(workers=2, cores=1, budget=False) as engine:
        assert engine.budget is None
        warm(engine, plan, docs, "budget.burn_a", "budget.burn_b")
        result = engine.run(plan, docs(*[f"doc {i}" for i in range(4)]))
    assert result.counts == {"succeeded": 4, "failed": 0}
    assert most_at_once(spans_of(result)) >= 2


def test_an_idle_pool_holds_no_cores(registry, docs):
    """A step with nothing left to do (its pool idle) leaves both cores to the next step,
    whose two workers then run at once; a thread block's calls hold tokens too."""
    plan = make_plan(registry, [
        {"id": "read", "block": "toy.read"},
        {"id": "first", "block": "budget.burn_thread", "params": {"seconds": 0.05},
         "outputs": {"started": "t_started", "ended": "t_ended", "pid": "t_pid", "env": "t_env"}},
        {"id": "then", "block": "budget.burn_a", "params": {"seconds": 0.6}, "after": ["first"]},
    ], ["started", "ended", "pid", "t_started", "t_ended"])
    with Engine(workers=2, cores=2) as engine:
        warm(engine, plan, docs, "budget.burn_a")
        result = engine.run(plan, docs(*[f"doc {i}" for i in range(6)]))
        assert engine.budget is not None and engine.budget.free == 2
    assert result.counts == {"succeeded": 6, "failed": 0}
    burns = [(r.outputs["started"], r.outputs["ended"], r.outputs["pid"]) for r in result.results]
    threads = [(r.outputs["t_started"], r.outputs["t_ended"], 0) for r in result.results]
    assert most_at_once(burns + threads) <= 2  # never more than the cores
    assert most_at_once(burns) == 2  # the idle thread pool kept no core from the process pool


def test_a_thread_given_up_on_holds_its_core_until_it_ends(registry, docs, tmp_path):
    """A thread call past its timeout is failed at its deadline but cannot be stopped: its
    core stays taken until the thread really ends, so no other call runs beside it."""
    log = tmp_path / "calls.log"
    plan = make_plan(registry, [
        {"id": "read", "block": "toy.read"},
        {"id": "slow", "block": "budget.burn_thread", "params": {"seconds": 1.5, "log": str(log)},
         "timeout": 0.3},
        {"id": "other", "block": "budget.burn_b", "params": {"seconds": 0.2, "log": str(log)},
         "outputs": {k: f"o_{k}" for k in ("started", "ended", "pid", "env")}},
    ], ["pid"])
    with Engine(cores=1, workers=1) as engine:
        warm(engine, make_plan(registry, [{"id": "read", "block": "toy.read"}, {
            "id": "other", "block": "budget.burn_b", "params": {"seconds": 0.2, "log": str(log)}}],
            ["pid"]), docs, "budget.burn_b")
        log.unlink()
        result = engine.run(plan, docs("a", "b"))
        assert all(r.error_kind == "timeout" and r.step == "slow" for r in result.results)
    # closing the engine waited for the threads it had given up on: the log is complete
    spans = [tuple(map(float, line.split())) + (0,) for line in log.read_text().splitlines()]
    assert any(e - s > 1.0 for s, e, _ in spans)  # a slow call did run past its timeout
    assert most_at_once(spans) == 1  # type: ignore[arg-type]


def test_workers_are_told_their_threads_torch_included(registry, docs):
    plan = make_plan(registry, [{"id": "read", "block": "toy.read"}, {"id": "t", "block": "budget.torch"}],
                     ["torch_threads", "env"])
    with Engine(cores=4) as engine:  # the block asks for 2 threads a call: 4 cores, 2 workers
        result = engine.run(plan, docs("x"))
        (pool,) = engine.pools("budget.torch")
        assert pool.capacity == 2
    out = result.results[0].outputs
    assert out["torch_threads"] == 2
    assert out["env"]["OMP_NUM_THREADS"] == out["env"]["OMP_THREAD_LIMIT"] == "2"
    assert out["env"][CUDA_ENV] == ""  # a cpu block sees no GPU
    with Engine(cores=1) as engine:  # never more threads than the cores
        result = engine.run(plan, docs("x"))
    assert result.results[0].outputs["torch_threads"] == 1


def test_pools_are_sized_by_the_hint_the_step_and_the_command_line(registry, docs):
    steps = [{"id": "read", "block": "toy.read"},
             {"id": "cheap", "block": "budget.cheap"},
             {"id": "wide", "block": "budget.wide", "outputs": {"started": "w_started", "ended": "w_ended",
                                                                 "pid": "w_pid", "env": "w_env"}},
             {"id": "burn", "block": "budget.burn_thread", "params": {"seconds": 0},
              "outputs": {"started": "b_started", "ended": "b_ended", "pid": "b_pid", "env": "b_env"}}]
    plan = make_plan(registry, steps, ["pid"])

    def sizes(engine: Engine) -> dict[str, int]:
        engine.run(plan, docs("x"))
        return {name: engine.pools(name)[0].capacity
                for name in ("budget.cheap", "budget.wide", "budget.burn_thread")}

    with Engine(cores=4) as engine:  # cost 0.5: 2 of 4; 2 threads a call: 2; cost 1: 4
        assert sizes(engine) == {"budget.cheap": 2, "budget.wide": 2, "budget.burn_thread": 4}
    with Engine(cores=4, workers=3) as engine:  # --workers: every pool
        assert sizes(engine) == {"budget.cheap": 3, "budget.wide": 3, "budget.burn_thread": 3}
    steps[1]["workers"] = 1  # a step's workers beat the command line
    plan = make_plan(registry, steps, ["pid"])
    with Engine(cores=4, workers=3) as engine:
        assert sizes(engine) == {"budget.cheap": 1, "budget.wide": 3, "budget.burn_thread": 3}
    with Engine(cores=4, budget=False) as engine:  # as before: cores workers each
        assert sizes(engine) == {"budget.cheap": 1, "budget.wide": 4, "budget.burn_thread": 4}


def test_a_wide_call_waits_for_all_its_cores(registry, docs):
    """A call of two threads never runs beside another call on two cores (it takes both)."""
    plan = make_plan(registry, [
        {"id": "read", "block": "toy.read"},
        {"id": "wide", "block": "budget.wide", "outputs": {"started": "w_started", "ended": "w_ended",
                                                            "pid": "w_pid", "env": "w_env"}},
        {"id": "burn", "block": "budget.burn_a", "params": {"seconds": 0.2}},
    ], ["started", "ended", "pid", "w_started", "w_ended"])
    with Engine(cores=2, workers=2) as engine:
        result = engine.run(plan, docs(*[f"doc {i}" for i in range(4)]))
        assert engine.budget is not None and engine.budget.free == 2
    assert result.counts == {"succeeded": 4, "failed": 0}
    wide = [(r.outputs["w_started"], r.outputs["w_ended"], 0) for r in result.results]
    burns = [(r.outputs["started"], r.outputs["ended"], r.outputs["pid"]) for r in result.results]
    for s, e, _ in wide:
        assert not any(bs < e and s < be for bs, be, _ in burns)


def gpu_plan(registry: Registry, block: str) -> Plan:
    return make_plan(registry, [{"id": "read", "block": "toy.read"}, {"id": "g", "block": block}],
                     ["pid", "env"])


def all_ready(pool: Any, without: int | None = None) -> None:
    """Wait until every worker of ``pool`` is set up and idle (and ``without`` is gone)."""
    deadline = time.monotonic() + 120
    while pool.idle() < pool.capacity or without in pool.pids():
        assert time.monotonic() < deadline, "the pool's workers did not start"
        time.sleep(0.05)


def test_gpu_blocks_get_one_worker_per_gpu_pinned(registry, docs):
    """No CUDA needed: the blocks only report the GPU their worker was given."""
    plan = gpu_plan(registry, "budget.on_cuda")
    with Engine(gpus=[0, 1], cores=2) as engine:
        engine.run(plan, docs("warm"))
        (pool,) = engine.pools("budget.on_cuda")
        assert pool.capacity == 2
        all_ready(pool)  # two idle workers: two documents go to both at once
        result = engine.run(plan, docs("d0", "d1"))
        seen = {r.outputs["pid"]: r.outputs["env"][CUDA_ENV] for r in result.results}
        assert sorted(seen.values()) == ["0", "1"]
        # a replaced worker keeps its slot's GPU
        victim = next(iter(seen))
        os.kill(victim, signal.SIGKILL)
        all_ready(pool, without=victim)
        result = engine.run(plan, docs("e0", "e1"))
        again = {r.outputs["pid"]: r.outputs["env"][CUDA_ENV] for r in result.results}
        assert sorted(again.values()) == ["0", "1"] and victim not in again
        (newcomer,) = set(again) - set(seen)
        assert again[newcomer] == seen[victim]
    with Engine(gpus=[3], cores=2) as engine:  # "auto" uses the GPUs there are
        result = engine.run(gpu_plan(registry, "budget.on_auto"), docs("a", "b"))
        assert {r.outputs["env"][CUDA_ENV] for r in result.results} == {"3"}
        assert engine.pools("budget.on_auto")[0].capacity == 1


def test_cpu_blocks_and_auto_without_gpus_see_none(registry, docs):
    with Engine(gpus=[0], cores=2) as engine:
        result = engine.run(gpu_plan(registry, "budget.on_cpu"), docs("a"))
        assert result.results[0].outputs["env"][CUDA_ENV] == ""
    with Engine(cores=2) as engine:
        result = engine.run(gpu_plan(registry, "budget.on_auto"), docs("a"))
        assert result.results[0].outputs["env"][CUDA_ENV] == ""
        assert engine.pools("budget.on_auto")[0].capacity == 2


def test_a_cuda_block_without_gpus_fails_each_document_saying_so(registry, docs):
    with Engine(cores=2, gpus=()) as engine:
        result = engine.run(gpu_plan(registry, "budget.on_cuda"), docs("a", "b"))
        assert engine.budget is not None and engine.budget.free == 2
    assert result.counts == {"succeeded": 0, "failed": 2}
    for r in result.results:
        assert r.step == "g" and "needs a GPU" in (r.error or "") and "--gpus" in (r.error or "")


def test_the_gpus_the_machine_shows_are_the_default(monkeypatch):
    """No ``gpus`` given: CUDA_VISIBLE_DEVICES when set (indexes; "" or UUIDs: none), else the
    NVIDIA driver's list (none on a machine without one); ``()`` is none whatever the machine."""
    monkeypatch.setenv(CUDA_ENV, "1,3")
    assert visible_gpus() == (1, 3) and Budget(cores=2).gpus == (1, 3) and Budget(cores=2, gpus=()).gpus == ()
    monkeypatch.setenv(CUDA_ENV, "")
    assert visible_gpus() == ()
    monkeypatch.setenv(CUDA_ENV, "GPU-8f2c1e4a")
    assert visible_gpus() == ()
    monkeypatch.delenv(CUDA_ENV)
    driver = Path("/proc/driver/nvidia/gpus")
    assert visible_gpus() == tuple(range(len(list(driver.iterdir())) if driver.is_dir() else 0))


def test_worker_env_pins_gpus_in_turn():
    env = {"TMPDIR": "/t", GPUS_ENV: "2,5"}
    assert [worker_env(env, slot)[CUDA_ENV] for slot in range(4)] == ["2", "5", "2", "5"]  # type: ignore[index]
    assert worker_env({"TMPDIR": "/t"}, 3) == {"TMPDIR": "/t"}
    assert worker_env(None, 0) is None


def test_budget_values_are_checked():
    assert parse_gpus("0, 1") == (0, 1) and parse_gpus("none") == () and parse_gpus("") == ()
    for bad, says in (("0,x", "'x' is not a GPU index"), ("1,1", "repeat"), ("-1", "is not a GPU index")):
        with pytest.raises(ValueError, match=says):
            parse_gpus(bad)
    with pytest.raises(ValueError, match="cores must be a whole number >= 1"):
        Budget(cores=0)
    b = Budget(cores=2)
    assert b.can_take(2) and not b.can_take(3)
    b.take(2)
    assert b.busy == 2 and not b.can_take(1)
    b.give(2)
    assert b.free == 2 and "cores=2" in repr(b)
    m = Manifest(name="x.y", version="1", writes={"a": str}, cost=0, threads=0)
    assert any("manifest.cost must be a number above 0" in p for p in m.problems())
    assert any("manifest.threads must be an integer >= 1" in p for p in m.problems())


def test_workers_on_an_inline_step_is_refused(registry):
    with pytest.raises(FlowError, match="workers needs a thread or process block"):
        make_plan(registry, [{"id": "read", "block": "toy.read"},
                             {"id": "w", "block": "toy.words", "workers": 2}], ["words"])


def test_cli_takes_cores_and_refuses_bad_gpus(tmp_path: Path):
    flow = write_flow(tmp_path / "flow.json", [{"id": "read", "block": "toy.read"}], outputs=["text"])
    doc = tmp_path / "a.txt"
    doc.write_text("hello", encoding="utf-8")
    bad = run_cli("run", str(flow), str(doc), "--plugin", TOYS, "--gpus", "0,zero",
                  "--db", f"sqlite:///{tmp_path / 'r.db'}", cwd=tmp_path)
    assert bad.returncode == 2 and "'zero' is not a GPU index" in bad.stderr
    ok = run_cli("run", str(flow), str(doc), "--plugin", TOYS, "--cores", "1", "--gpus", "none",
                 "--db", f"sqlite:///{tmp_path / 'r.db'}", "-o", str(tmp_path / "out.csv"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "hello" in (tmp_path / "out.csv").read_text(encoding="utf-8")
