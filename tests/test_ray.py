"""The Ray executor on a real local Ray cluster, started by this module in its own temp dir.

Ray's session files and auth token go under the test's tmp path (nothing under $HOME or the
system temp dir) and the cluster listens on 127.0.0.1 only. ``ray`` is imported only after
the executor set its environment (Ray reads some settings when it is imported).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ROOT, SERVE_TOKEN, TOYS, kill_decrypt_workers_when, kill_one_worker, run_cli, served, write_flow

from docpipe.engine import Engine
from docpipe.store import Store

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed")]


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory):
    from docpipe.executors.ray import MAX_TEMP_DIR, RayExecutor

    # Ray's Unix sockets live in its temp dir and their paths are limited to 107 bytes: the
    # deeper folders of pytest's tmp area are too long for them, so the base folder of this
    # test process's tmp area (pytest's own, removed with the rest) is used when needed
    base = tmp_path_factory.mktemp("ray")
    if len(str(base)) > MAX_TEMP_DIR:
        base = tmp_path_factory.getbasetemp()
    if len(str(base)) > MAX_TEMP_DIR:
        pytest.skip(f"pytest's temp dir {base} is too long for Ray's sockets")
    with RayExecutor(cluster_cpus=2, temp_dir=str(base)) as ex:
        yield ex


@pytest.fixture
def store(tmp_path: Path):
    s = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    yield s
    s.close()


def attempts_of(store: Store, run_id: str, step: str) -> list[tuple[int, str, str | None, str]]:
    return [(t["attempt"], t["status"], t["error_kind"], t["worker"])
            for t in store.get_run(run_id)["tasks"] if t["step"] == step]


def test_the_local_cluster_keeps_to_its_temp_dir_and_the_loopback(executor):
    import ray

    base = Path(executor.temp_dir)
    assert (base / "auth_token").stat().st_mode & 0o077 == 0  # the token is private
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(base / "auth_token")
    assert any(base.glob("session_*"))
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")


def test_blocks_run_on_actors_with_batching_and_records(executor, plan, docs, store):
    p = plan([{"id": "read", "block": "toy.read"},
              {"id": "dig", "block": "toy.digest", "params": {"rounds": 10}},
              {"id": "up", "block": "toy.upper"}], outputs=["digest", "digest_batch", "upper"])
    texts = [f"text {i}" for i in range(20)]
    with Engine(store, workers=2, executor=executor) as engine:
        result = engine.run(p, docs(*texts))
        (pool,) = engine.pools("toy.digest")
        assert type(pool).__name__ == "RayPool" and pool.spawned == 2
        assert type(engine.pools("toy.read")[0]).__name__ == "RayPool"  # thread blocks too
    assert result.counts == {"succeeded": 20, "failed": 0}
    assert [r.outputs["upper"] for r in result.results] == [t.upper() for t in texts]
    assert max(r.outputs["digest_batch"] for r in result.results) > 1  # batches reach actors
    worker = attempts_of(store, result.results[0].run_id, "dig")[0][3]
    assert worker.startswith("ray:")


def test_an_actor_killed_mid_batch_has_its_task_retried_on_another_actor(executor, plan, docs,
                                                                        store):
    p = plan([{"id": "read", "block": "toy.read"},
              {"id": "s", "block": "toy.sleep", "params": {"seconds": 1.0},
               "retry": {"max_attempts": 2, "delay": 0, "on": ["worker_died"]}}],
             outputs=["slept"])
    with Engine(store, workers=2, executor=executor) as engine:
        engine.run(p, docs("warm up"))  # actors started and set up
        pool = engine.pools("toy.sleep")[0]
        with kill_one_worker(pool) as victims:  # inside the first calls by then
            result = engine.run(p, docs(*[f"doc {i}" for i in range(4)]))
        assert pool.spawned == 3  # the dead actor was replaced
        assert victims[0] not in pool.pids()
        # an actor that dies between calls is found by the pool's liveness check and replaced
        # before a call reaches it: no call fails
        os.kill(pool.pids()[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (pool.spawned < 4 or len(pool.pids()) < 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pool.spawned == 4
        later = engine.run(p, docs("after 1", "after 2"))
        assert later.counts == {"succeeded": 2, "failed": 0}
        assert all(len(attempts_of(store, r.run_id, "s")) == 1 for r in later.results)
    assert result.counts == {"succeeded": 4, "failed": 0}
    retried = [r for r in result.results
               if [a[1] for a in attempts_of(store, r.run_id, "s")] == ["retrying", "succeeded"]]
    assert len(retried) == 1
    (first, second) = attempts_of(store, retried[0].run_id, "s")
    assert first[2] == "worker_died" and first[3].endswith(f":{victims[0]}")
    assert second[3] != first[3]  # the retry ran on another actor
    assert retried[0].outputs["slept"] != victims[0]


def test_a_timeout_kills_and_replaces_the_actor(executor, plan, docs, store):
    p = plan([{"id": "read", "block": "toy.read"},
              {"id": "h", "block": "toy.hang", "timeout": 1.0,
               "retry": {"max_attempts": 2, "delay": 0, "on": ["timeout"]}}], outputs=["done"])
    with Engine(store, workers=2, executor=executor) as engine:
        result = engine.run(p, docs("fine", "please hang", "fine too"))
        pool = engine.pools("toy.hang")[0]
        assert pool.spawned == 4  # the first two actors, then one replacement per timed-out attempt
        again = engine.run(p, docs("still fine"))  # the replacement works
    assert [r.status for r in result.results] == ["succeeded", "failed", "succeeded"]
    hung = result.results[1]
    assert hung.error_kind == "timeout"
    assert "exceeded its timeout (1 s per input" in hung.error and "killed and replaced" in hung.error
    assert [a[:3] for a in attempts_of(store, hung.run_id, "h")] == [
        (1, "retrying", "timeout"), (2, "failed", "timeout")]
    assert again.counts == {"succeeded": 1, "failed": 0}


def test_a_gpu_block_on_a_cluster_without_gpus_fails_clearly(executor, plan, docs):
    p = plan([{"id": "read", "block": "toy.read"}, {"id": "g", "block": "toy.needs_gpu"}])
    with Engine(workers=1, executor=executor) as engine:
        result = engine.run(p, docs("a", "b"))
    assert [r.status for r in result.results] == ["failed", "failed"]
    assert "needs a GPU (device='cuda') and the Ray cluster has none" in result.results[0].error


NODE_DEATH = '''
"""A Ray cluster of three nodes on this machine (Ray's own ray.cluster_utils.Cluster: real raylets
and workers), the node running every actor removed in the middle of a run."""
import json
import os
import secrets
import sys
import threading
import time

base, docs_dir, db, tests = sys.argv[1:5]
os.makedirs(os.path.join(base, "ray"), exist_ok=True)  # Ray notes the cluster's address there
token = os.path.join(base, "node_test_auth_token")  # not the module cluster's
with open(token, "w") as f:
    f.write(secrets.token_hex(32))
os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token",
                  RAY_AUTH_TOKEN_PATH=token, RAY_TMPDIR=base, RAY_USAGE_STATS_ENABLED="0")
sys.path.insert(0, tests)
import ray
from support import TOYS
from ray.cluster_utils import Cluster

from docpipe.engine import Engine
from docpipe.executors.ray import RayExecutor
from docpipe.planner import build_plan
from docpipe.plugins import Registry
from docpipe.store import Store

# the head takes no actors (no CPU); every actor starts on `doomed`, which is removed mid-run
# once a second worker node has joined: node deaths are noticed fast
fast = {"health_check_period_ms": 200, "health_check_failure_threshold": 3,
        "health_check_initial_delay_ms": 0}
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 0, "temp_dir": base, "include_dashboard": False, "_system_config": fast})
doomed = cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, log_to_driver=False)
retry = {"max_attempts": 2, "delay": 0, "on": ["worker_died"]}
plan = build_plan({"name": "t", "version": "1", "outputs": ["slept"], "steps": [
    {"id": "name", "expr": "path", "output": "text"},  # inline: only toy.sleep has actors
    {"id": "s", "block": "toy.sleep", "params": {"seconds": 1.0}, "retry": retry}]},
    Registry(extra=[TOYS]))
paths = []
for i in range(6):
    p = os.path.join(docs_dir, f"d{i}.txt")
    with open(p, "w") as f:
        f.write(f"doc {i}")
    paths.append(p)
store = Store(f"sqlite:///{db}")
with Engine(store, workers=2, executor=RayExecutor()) as engine:
    engine.run(plan, paths[:1])
    pool = engine.pools("toy.sleep")[0]
    while len(pool.pids()) < 2:
        time.sleep(0.1)
    cluster.add_node(num_cpus=1)
    killer = threading.Timer(0.5, cluster.remove_node, (doomed,), {"allow_graceful": False})
    killer.start()
    result = engine.run(plan, paths)
    killer.join()
    out = {"counts": result.counts, "spawned": pool.spawned, "attempts": [
        [(t["attempt"], t["status"], t["error_kind"], t["worker"])
         for t in store.get_run(r.run_id)["tasks"] if t["step"] == "s"] for r in result.results]}
store.close()
ray.shutdown()
cluster.shutdown()
print(json.dumps(out))
'''


def test_a_node_that_dies_fails_only_its_calls_and_the_run_completes(tmp_path: Path,
                                                                      tmp_path_factory):
    from docpipe.executors.ray import MAX_TEMP_DIR

    base = tmp_path / "r"
    if len(str(base)) > MAX_TEMP_DIR:  # Ray's socket paths (see the executor fixture)
        base = tmp_path_factory.getbasetemp()
    if len(str(base)) > MAX_TEMP_DIR:
        pytest.skip(f"pytest's temp dir {base} is too long for Ray's sockets")
    base.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", NODE_DEATH, str(base), str(tmp_path),
                           str(tmp_path / "runs.db"), str(ROOT / "tests")], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["counts"] == {"succeeded": 6, "failed": 0}
    retried = [a for a in out["attempts"] if len(a) > 1]
    assert retried, out  # calls in flight on the dead node failed ...
    for (first, second) in retried:  # ... as worker_died, and ran again elsewhere
        assert first[1:3] == ["retrying", "worker_died"] and second[1] == "succeeded"
        assert second[3] != first[3]
    assert not (tmp_path / "home").exists()


def test_cli_joins_a_running_cluster(executor, tmp_path: Path):
    import ray

    address = ray.get_runtime_context().gcs_address
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"d{i}.txt").write_text(f"some words {i}")
    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"},
                                            {"id": "w", "block": "toy.words"}], outputs=["words"])
    out, db = tmp_path / "out.csv", tmp_path / "d.db"
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": os.environ["RAY_AUTH_TOKEN_PATH"],
           "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    proc = run_cli("run", str(flow), str(tmp_path / "in"), "--plugin", TOYS, "--executor", "ray",
                   "--ray-address", address, "--ray-actors", "w=1", "--out", str(out),
                   "--db", f"sqlite:///{db}", "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    assert [r["words"] for r in csv.DictReader(out.open())] == ["3", "3", "3"]
    workers = dict(sqlite3.connect(db).execute("select step, worker from task_runs"))
    assert workers["read"].startswith("ray:") and workers["w"] == "main"  # inline: the driver
    assert not (tmp_path / "home").exists()


def test_a_server_runs_its_jobs_on_a_running_cluster(executor, tmp_path: Path):
    """`docpipe serve --executor ray`: documents posted to the API (and so the UI's runs, which
    go through the same runner) run on the cluster's actors."""
    import httpx
    import ray

    from docpipe import service
    from docpipe.plugins import Registry

    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"},
                                            {"id": "w", "block": "toy.words"}], name="on-ray", outputs=["words"])
    url = f"sqlite:///{tmp_path / 'd.db'}"
    with Store(url) as store:
        service.record_flow(store, service.plan_flow(str(flow), Registry(entry_points=False, extra=[TOYS])))
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": os.environ["RAY_AUTH_TOKEN_PATH"],
           "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    address = ray.get_runtime_context().gcs_address
    with served(url, tmp_path, "serve", "--executor", "ray", "--ray-address", address, env=env) as (base, _):
        files = [("files", (f"d{i}.txt", f"some words {i}".encode(), "text/plain")) for i in range(3)]
        reply = httpx.post(f"{base}/api/flows/on-ray/runs", params={"wait": 60}, files=files,
                           headers={"Authorization": f"Bearer {SERVE_TOKEN}"}, timeout=180)
        assert reply.status_code == 202, reply.text
        runs = reply.json()["runs"]
        assert [r["status"] for r in runs] == ["succeeded"] * 3, runs
    with Store(url) as store:
        workers = {t["step"]: t["worker"] for r in runs for t in store.get_run(r["run_id"])["tasks"]}
    assert workers["read"].startswith("ray:") and workers["w"] == "main"
    assert not (tmp_path / "home").exists()


def test_cli_refuses_ray_options_without_the_ray_executor(tmp_path: Path):
    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"}])
    (tmp_path / "a.txt").write_text("a")
    proc = run_cli("run", str(flow), str(tmp_path / "a.txt"), "--plugin", TOYS,
                   "--ray-address", "auto", "--db", f"sqlite:///{tmp_path / 'd.db'}")
    assert proc.returncode == 2 and "--ray-address needs --executor ray" in proc.stderr
    proc = run_cli("run", str(flow), str(tmp_path / "a.txt"), "--plugin", TOYS, "--executor",
                   "ray", "--ray-actors", "x=0", "--db", f"sqlite:///{tmp_path / 'd.db'}")
    assert proc.returncode == 2 and "is not N or BLOCK=N" in proc.stderr
    proc = run_cli("run", str(flow), str(tmp_path / "a.txt"), "--plugin", TOYS, "--executor",
                   "ray", "--ray-address", "127.0.0.1:1", "--db", f"sqlite:///{tmp_path / 'd.db'}")
    assert proc.returncode == 1 and "cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr


def test_the_idp_flow_on_ray_gives_the_same_csv_as_the_local_run(executor, tmp_path: Path):
    """`docpipe run --executor ray flows/idp.json samples/` on this module's cluster."""
    import ray

    samples = ROOT / "samples"
    env = {"DOCPIPE_PDF_PASSWORD": "docpipe", "HOME": str(tmp_path / "home"),
           "TMPDIR": str(tmp_path)}
    address = ["--ray-address", ray.get_runtime_context().gcs_address]
    rows = {}
    for executor_name in ("local", "ray"):
        out = tmp_path / f"{executor_name}.csv"
        proc = run_cli("run", str(ROOT / "flows" / "idp.json"), str(samples), "--out", str(out),
                       "--db", f"sqlite:///{tmp_path / executor_name}.db", "-q", "-w", "1",
                       "--executor", executor_name, *(address if executor_name == "ray" else []),
                       env=env, timeout=300)
        assert proc.returncode == 1 and out.exists(), proc.stderr  # corrupt.pdf fails, by design
        rows[executor_name] = list(csv.DictReader(out.open()))
    assert rows["ray"] == rows["local"]
    assert len(rows["ray"]) == len(list(samples.iterdir()))
    assert not (tmp_path / "home" / ".ray").exists()
    workers = {w for (w,) in sqlite3.connect(tmp_path / "ray.db").execute(
        "select worker from task_runs where step = 'classify'")}
    assert workers and all(w.startswith("ray:") for w in workers)


def test_a_decrypted_copy_outlives_the_actor_that_made_it(executor, tmp_path: Path, store):
    """decrypt and text run on different actors (of different pools); the decrypt actors are
    killed once the copies exist, so text reads files no live decrypt actor holds: the copies
    belong to the runs (a shared work area), and are gone when the runs end."""

    import pikepdf

    from docpipe.planner import build_plan
    from docpipe.plugins import Registry

    docs = []
    for name in ("a.pdf", "b.pdf"):
        with pikepdf.open(ROOT / "samples" / "encrypted.pdf", password="docpipe") as pdf:
            pdf.save(tmp_path / name, encryption=pikepdf.Encryption(user="ray-pw", owner="ray-o"))
        docs.append(str(tmp_path / name))
    plan = build_plan({"name": "ray-artifacts", "version": "1", "outputs": ["file_head", "text"],
                       "steps": [{"id": "decrypt", "block": "pdf.decrypt", "params": {"password": "ray-pw"}},
                                 {"id": "wait", "block": "toy.file_head", "inputs": {"path": "pdf_path"},
                                  "params": {"seconds": 2.0}},
                                 {"id": "text", "block": "pdf.text", "inputs": {"path": "pdf_path"}}]},
                      Registry(extra=[TOYS]))
    work = tmp_path / "work"
    with Engine(store, workers=1, executor=executor, work_dir=work) as engine:
        with kill_decrypt_workers_when(engine, work, copies=2) as killed:
            result = engine.run(plan, docs)
    assert killed and result.counts == {"succeeded": 2, "failed": 0}, [r.error for r in result.results]
    for r in result.results:
        assert r.outputs["file_head"].startswith("%PDF-") and "Fabrikam Components" in r.outputs["text"]
        workers = {t["step"]: t["worker"] for t in store.get_run(r.run_id)["tasks"]}
        assert workers["decrypt"] != workers["text"]  # two actors
        assert workers["decrypt"].endswith(tuple(f":{pid}" for pid in killed))
    assert sorted(p.name for p in work.iterdir()) == ["owners"]
