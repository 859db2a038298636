"""Worker recycling: a process worker past ``max_tasks_per_worker`` or ``max_worker_rss_mb``
finishes its call, exits cleanly (teardown runs) and is replaced; the task records say so."""

from __future__ import annotations

from pathlib import Path

import pytest
from executor_blocks import BLOCKS, Leak
from support import TOYS

from docpipe.blocks import Manifest
from docpipe.engine import Engine
from docpipe.errors import FlowError
from docpipe.executors.base import Recycle, rss_mb
from docpipe.planner import build_plan
from docpipe.plugins import Registry
from docpipe.store import Store


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(entry_points=False, extra=[TOYS, BLOCKS])


def leak_flow(marker_dir: Path, mb: int = 20, **limits: int) -> dict:
    return {"name": "leak", "version": "1", "steps": [
        {"id": "read", "block": "toy.read"},
        {"id": "leak", "block": "exec.leak", "params": {"mb": mb, "marker_dir": str(marker_dir)},
         **limits}],
        "outputs": ["pid"]}


def run_leak(registry: Registry, docs, tmp_path: Path, n: int, mb: int = 20, **limits: int):
    markers = tmp_path / "markers"
    markers.mkdir()
    plan = build_plan(leak_flow(markers, mb, **limits), registry)
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        with Engine(store, workers=2) as engine:
            result = engine.run(plan, docs(*[f"doc {i}" for i in range(n)]))
            (pool,) = engine.pools("exec.leak")
            recycled = pool.recycled  # type: ignore[attr-defined]
        workers = [t["worker"] for r in result.results
                   for t in store.get_run(r.run_id)["tasks"] if t["step"] == "leak"]
    finally:
        store.close()
    return result, workers, recycled, markers


def test_a_worker_is_replaced_after_max_tasks_per_worker(registry, docs, tmp_path):
    result, workers, recycled, markers = run_leak(registry, docs, tmp_path, 12,
                                                  max_tasks_per_worker=3)
    assert result.counts == {"succeeded": 12, "failed": 0}
    pids = {r.outputs["pid"] for r in result.results}
    assert len(pids) >= 4  # 2 workers, each replaced after 3 documents
    noted = [w for w in workers if "recycled" in w]
    # every third task of a worker: 12 tasks, at most 2 workers left with fewer than 3 at the end
    assert recycled == len(noted) >= 3
    assert all(w.endswith("(recycled: 3 tasks)") for w in noted)
    assert all(w.startswith("pid:") and "recycled" not in w for w in workers if w not in noted)
    # every recycled worker ran its teardown, holding the 3 calls it leaked
    recycled_pids = {w.split()[0].removeprefix("pid:") for w in noted}
    assert recycled_pids <= {p.name for p in markers.iterdir()}
    assert all((markers / p).read_text() == "3" for p in recycled_pids)


def test_a_worker_is_replaced_past_max_worker_rss_mb(registry, docs, tmp_path):
    # a fresh worker holds well under 150 MiB; 40 MiB more per call passes that in a few calls
    limit = 150
    result, workers, recycled, markers = run_leak(registry, docs, tmp_path, 12, mb=40,
                                                  max_worker_rss_mb=limit)
    assert result.counts == {"succeeded": 12, "failed": 0}
    noted = [w for w in workers if "recycled" in w]
    assert noted and recycled == len(noted)
    assert all(f"MiB > {limit})" in w and "(recycled: rss " in w for w in noted)
    assert len({r.outputs["pid"] for r in result.results}) > 2
    assert {w.split()[0].removeprefix("pid:") for w in noted} <= {p.name for p in markers.iterdir()}


def test_without_limits_workers_live_on(registry, docs, tmp_path):
    result, workers, recycled, _ = run_leak(registry, docs, tmp_path, 6)
    assert result.counts == {"succeeded": 6, "failed": 0}
    assert recycled == 0 and not any("recycled" in w for w in workers)
    assert len({r.outputs["pid"] for r in result.results}) <= 2


def test_the_limits_come_from_the_manifest_and_a_step_overrides_them(registry, tmp_path):
    plan = build_plan(leak_flow(tmp_path, max_worker_rss_mb=900), registry)
    node = next(n for n in plan.nodes if n.id == "leak")
    assert (node.max_tasks_per_worker, node.max_worker_rss_mb) == (None, 900)
    original = Leak.manifest
    Leak.manifest = Manifest(name="exec.leak", version="1.0", reads={"text": str},
                             writes={"pid": int}, runtime="process", max_tasks_per_worker=50)
    try:
        node = next(n for n in build_plan(leak_flow(tmp_path), registry).nodes if n.id == "leak")
        assert (node.max_tasks_per_worker, node.max_worker_rss_mb) == (50, None)
        node = next(n for n in build_plan(leak_flow(tmp_path, max_tasks_per_worker=7),
                                          registry).nodes if n.id == "leak")
        assert node.max_tasks_per_worker == 7
    finally:
        Leak.manifest = original


@pytest.mark.parametrize(("step", "message"), [
    ({"id": "leak", "block": "exec.leak", "max_tasks_per_worker": 0}, "max_tasks_per_worker"),
    ({"id": "leak", "block": "exec.leak", "max_worker_rss_mb": "big"}, "max_worker_rss_mb"),
    ({"id": "w", "block": "exec.where_thread", "max_tasks_per_worker": 5},
     "max_tasks_per_worker needs a process block"),
    ({"id": "r", "block": "toy.upper", "max_worker_rss_mb": 500},
     "max_worker_rss_mb needs a process block"),
])
def test_bad_or_meaningless_limits_are_refused(registry, step, message):
    flow = {"name": "bad", "version": "1", "steps": [{"id": "read", "block": "toy.read"}, step]}
    with pytest.raises(FlowError) as exc:
        build_plan(flow, registry)
    assert message in str(exc.value)


def test_manifest_limits_are_checked():
    m = Manifest(name="x", version="1", writes={"y": str}, max_tasks_per_worker=0,
                 max_worker_rss_mb=True)  # type: ignore[arg-type]
    assert m.problems() == [
        "manifest.max_tasks_per_worker must be None or an integer >= 1, got 0",
        "manifest.max_worker_rss_mb must be None or an integer >= 1, got True"]


def test_recycle_reasons():
    assert not Recycle() and Recycle(max_tasks=1)
    assert Recycle(max_tasks=3).reason(2) is None
    assert Recycle(max_tasks=3).reason(3) == "recycled: 3 tasks"
    assert Recycle(max_rss_mb=1).reason(0) == f"recycled: rss {rss_mb()} MiB > 1"
    assert Recycle(max_rss_mb=10**6).reason(10**6) is None
