"""The resident service survives ``kill -9``: jobs are rows of the store, claimed under a
lease; a server restarted on the same store (or another server on the same PostgreSQL)
takes over a dead one's jobs once their leases expire, and every document's run ends once.

Real ``docpipe serve`` processes, real uploads through ``POST /api/flows/{name}/runs``, the
toy blocks (a 0.4 s sleep per document keeps runs in flight when the kill comes).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from support import SERVE_TOKEN, TOYS, served, write_flow

from docpipe import service
from docpipe.plugins import Registry
from docpipe.service.intake import submit_documents
from docpipe.status import JobStatus, Status
from docpipe.store import Store
from docpipe.store.schema import flow_runs, task_runs

AUTH = {"Authorization": f"Bearer {SERVE_TOKEN}"}
STEPS = [{"id": "read", "block": "toy.read"},
         {"id": "nap", "block": "toy.sleep", "params": {"seconds": 0.4}},
         {"id": "upper", "block": "toy.upper"}]


def record(url: str, folder: Path) -> None:
    flow = write_flow(folder / "flow.json", STEPS, name="durable", outputs=["upper", "slept"])
    with Store(url) as store:
        service.record_flow(store, service.plan_flow(flow, Registry(entry_points=False, extra=[TOYS])))


def post(base: str, names: list[str], key: str) -> dict[str, Any]:
    files = [("files", (n, f"text of {n}".encode(), "text/plain")) for n in names]
    reply = httpx.post(f"{base}/api/flows/durable/runs", files=files, headers={**AUTH, "Idempotency-Key": key},
                       timeout=60)
    assert reply.status_code in (200, 202), reply.text  # 200: a repeat of an earlier request
    assert (reply.status_code == 200) == reply.json()["repeated"]
    return reply.json()


def job_rows(url: str, batch_id: str) -> list[dict[str, Any]]:
    with Store(url) as store:
        return store.jobs.list(batch_id=batch_id, limit=1000)


def finished(url: str, batch_id: str) -> int:
    """How many jobs of the batch are finished."""
    return sum(r["status"] == JobStatus.FINISHED for r in job_rows(url, batch_id))


def all_finished(url: str, batch_id: str) -> bool:
    rows = job_rows(url, batch_id)
    return bool(rows) and all(r["status"] == JobStatus.FINISHED for r in rows)


def wait_until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def check_exactly_once(url: str, submitted: dict[str, Any]) -> list[dict[str, Any]]:
    """Every job finished with its run succeeded; each run's steps succeeded exactly once."""
    rows = job_rows(url, submitted["batch_id"])
    assert len(rows) == len(submitted["runs"])
    assert {r["status"] for r in rows} == {JobStatus.FINISHED}, rows
    assert {r["outcome"] for r in rows} == {Status.SUCCEEDED}, rows
    run_ids = [r["run_id"] for r in submitted["runs"]]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(sa.select(flow_runs.c.id, flow_runs.c.status, flow_runs.c.document)
                                .where(flow_runs.c.id.in_(run_ids))).all()
            last = conn.execute(sa.select(task_runs.c.flow_run_id, sa.func.count())
                                .where(task_runs.c.flow_run_id.in_(run_ids), task_runs.c.step == "upper",
                                       task_runs.c.status == Status.SUCCEEDED)
                                .group_by(task_runs.c.flow_run_id)).all()
            # a step that succeeded (and was recorded) is never run again: a taken-over run resumes
            steps = conn.execute(sa.select(task_runs.c.flow_run_id, task_runs.c.step, sa.func.count())
                                 .where(task_runs.c.flow_run_id.in_(run_ids), task_runs.c.status == Status.SUCCEEDED)
                                 .group_by(task_runs.c.flow_run_id, task_runs.c.step)).all()
            per_doc = conn.execute(sa.select(flow_runs.c.document, sa.func.count())
                                   .where(flow_runs.c.batch_id == submitted["batch_id"])
                                   .group_by(flow_runs.c.document)).all()
    finally:
        engine.dispose()
    assert sorted(r.id for r in runs) == sorted(run_ids)
    assert {r.status for r in runs} == {Status.SUCCEEDED}
    assert dict(last) == {run_id: 1 for run_id in run_ids}  # no document ran twice to completion
    assert {n for _, _, n in steps} == {1} and len(steps) == 3 * len(run_ids)
    assert {n for _, n in per_doc} == {1}  # one run per document
    return rows


def test_a_server_killed_mid_run_resumes_every_job_after_a_restart(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    record(url, tmp_path)
    names = [f"doc{i:02d}.txt" for i in range(10)]
    with served(url, tmp_path, "first") as (base, proc):
        submitted = post(base, names, "k-1")
        batch = submitted["batch_id"]
        wait_until(lambda: finished(url, batch) >= 2, 120,
                   "no job finished")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = job_rows(url, batch)
    assert any(r["status"] != JobStatus.FINISHED for r in before), "every job ended before the kill"
    with served(url, tmp_path, "second") as (base, _):
        again = post(base, names, "k-1")  # a client's retry of the same request: nothing new
        assert again["repeated"] and again["batch_id"] == batch
        wait_until(lambda: all_finished(url, batch), 180,
                   "the restarted server did not finish the jobs")
        rows = check_exactly_once(url, submitted)
        assert any(r["claims"] > 1 for r in rows)  # taken over after their lease expired
        metrics = httpx.get(f"{base}/metrics", timeout=30).text
        assert "docpipe_lease_expiries_total" in metrics


def test_two_servers_on_one_postgresql_share_the_work_and_survive_one_killed(tmp_path, pg_url):
    with Store(pg_url) as store:  # a clean queue: other tests share this database
        with store.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM jobs"))
    record(pg_url, tmp_path)
    names = [f"doc{i:02d}.txt" for i in range(16)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with served(pg_url, tmp_path / "a", "a") as (base_a, proc_a), served(pg_url, tmp_path / "b", "b") as (base_b, _):
        submitted = post(base_a, names, "two-servers")
        batch = submitted["batch_id"]
        wait_until(lambda: finished(pg_url, batch) >= 3, 120,
                   "no job finished")
        os.kill(proc_a.pid, signal.SIGKILL)
        proc_a.wait()
        wait_until(lambda: all_finished(pg_url, batch), 180,
                   "server b did not finish the jobs")
        rows = check_exactly_once(pg_url, submitted)
        assert {r["lease_owner"] for r in rows} == {None}
        assert any(r["claims"] > 1 for r in rows)  # b took over what a held when it died
    assert "took over" in (tmp_path / "b" / "b.log").read_text()


def test_jobs_queued_while_no_server_runs_are_run_when_one_starts(tmp_path):
    """Jobs are rows: queued with no server up (another server's API, a source), they run when
    a server starts."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    record(url, tmp_path)
    docs = []
    for i in range(3):
        p = tmp_path / f"q{i}.txt"
        p.write_text(f"queued {i}", encoding="utf-8")
        docs.append((str(p), f"c{i}"))
    with Store(url) as store:
        made = submit_documents(store, "durable", docs, registry=Registry(entry_points=False, extra=[TOYS]),
                                        source="test", files=False)
    submitted = made.as_dict()
    with served(url, tmp_path, "late"):
        wait_until(lambda: all_finished(url, made.batch_id), 120,
                   "the server did not run the queued jobs")
    check_exactly_once(url, submitted)


def test_a_watched_folder_feeds_a_sink_through_the_server(tmp_path):
    """`docpipe serve --watch DIR:FLOW --sink NAME=jsonl:FILE`: files dropped in DIR run, move
    to done/ (or failed/), and each run is one line of the sink's file; /metrics shows it."""
    import json

    url = f"sqlite:///{tmp_path / 'store.db'}"
    flow = write_flow(tmp_path / "flow.json", STEPS[:1] + STEPS[2:], name="watched", outputs=["upper"])
    inbox, out = tmp_path / "inbox", tmp_path / "out" / "results.jsonl"
    inbox.mkdir()
    with served(url, tmp_path, "watch", "--watch", f"{inbox}:{flow}", "--sink", f"results=jsonl:{out}") as (base, _):
        for i in range(3):
            (inbox / f"w{i}.txt").write_text(f"watched {i}", encoding="utf-8")
        (inbox / "sub").mkdir()  # not a file: left alone
        wait_until(lambda: len(list((inbox / "done").glob("*.txt"))) == 3 if (inbox / "done").exists() else False,
                   120, "the watched files were not all done")
        wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 3, 60, "the sink did not get 3 runs")
        metrics = httpx.get(f"{base}/metrics", timeout=30).text
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["upper"] for r in lines) == ["WATCHED 0", "WATCHED 1", "WATCHED 2"]
    assert {r["status"] for r in lines} == {"succeeded"} and len({r["run_id"] for r in lines}) == 3
    assert sorted(p.name for p in inbox.iterdir()) == ["done", "sub"]
    assert 'docpipe_flow_runs_total{flow="watched",status="succeeded"} 3.0' in metrics
    assert not any(line.startswith('docpipe_sink_backlog{sink="results"}') and not line.endswith(" 0.0")
                   for line in metrics.splitlines())  # nothing left to deliver


def test_a_server_stopped_mid_run_gives_its_jobs_back_and_a_restart_finishes_them(tmp_path):
    """SIGTERM: the runner gives the jobs it holds back to the queue at once (no lease to wait
    for); their runs, recorded running, continue from their steps on the next server."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    record(url, tmp_path)
    names = [f"doc{i:02d}.txt" for i in range(8)]
    with served(url, tmp_path, "first") as (base, proc):
        submitted = post(base, names, "k-stop")
        batch = submitted["batch_id"]
        wait_until(lambda: finished(url, batch) >= 1, 120,
                   "no job finished")
        proc.terminate()
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises it after its shutdown
    left = [r for r in job_rows(url, batch) if r["status"] != JobStatus.FINISHED]
    assert left and {r["status"] for r in left} == {JobStatus.QUEUED}  # given back, not held
    assert "unfinished jobs back in the queue" in (tmp_path / "first.log").read_text()
    with served(url, tmp_path, "second"):
        wait_until(lambda: all_finished(url, batch), 120,
                   "the next server did not finish the jobs")
    check_exactly_once(url, submitted)
