"""``POST /api/flows/{name}/runs``: uploaded files become queued document jobs of a recorded
flow, once per idempotency key (also when two requests race), with ``?wait=`` answering with
the runs' outcomes. Over a real server app, on SQLite and on PostgreSQL; the runner's end of a
job is played by the store's job API and the records the engine hands the store writer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import TOYS, write_flow

from docpipe import service
from docpipe.plugins import Registry
from docpipe.server import create_app
from docpipe.service.intake import plan_job
from docpipe.status import JobStatus, Status
from docpipe.store import Store
from docpipe.store.records import run_finished, run_started

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STEPS = [{"id": "read", "block": "toy.read"}, {"id": "upper", "block": "toy.upper"}]


class Runner:
    """What the app's runner offers the intake: ``wake()``, counted."""

    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


@pytest.fixture
def app(tmp_path: Path, store_url: str) -> Any:
    flow = write_flow(tmp_path / "flow.json", STEPS, name="intake", outputs=["upper"])
    with Store(store_url) as store:
        service.record_flow(store, service.plan_flow(flow, Registry(entry_points=False, extra=[TOYS])))
    made = create_app(store_url, tmp_path / "data", TOKEN, plugins=(TOYS,))
    made.state.ctx.runner = Runner()
    return made


def files(*names: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (n, f"text of {n}".encode(), "text/plain")) for n in names]


def uploads(tmp_path: Path) -> list[str]:
    folder = tmp_path / "data" / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_posted_files_are_queued_as_runs(app, tmp_path):
    with TestClient(app, base_url="http://127.0.0.1") as c:
        reply = c.post("/api/flows/intake/runs", files=files("a.txt", "b.txt"), headers=AUTH,
                       data={"correlation_id": "ticket-9", "params": "{}"})
        assert reply.status_code == 202, reply.text
        body = reply.json()
        assert body["repeated"] is False and len(body["runs"]) == 2
        store = app.state.ctx.store
        jobs = {j["id"]: j for j in store.jobs.list(batch_id=body["batch_id"])}
        for run in body["runs"]:
            job = jobs[run["job_id"]]
            assert (job["run_id"], job["document"], job["source"]) == (run["run_id"], run["document"], "api")
            assert job["correlation_id"] == "ticket-9" and job["status"] == JobStatus.QUEUED
            assert Path(run["document"]).read_text().startswith("text of ")
        assert app.state.ctx.runner.woken == 1
        plain = c.post("/api/flows/intake/runs", files=files("c.txt"), headers=AUTH).json()
        assert store.jobs.get(plain["runs"][0]["job_id"])["correlation_id"] is None  # none by default


def test_an_idempotency_key_queues_once(app, tmp_path):
    key = {**AUTH, "Idempotency-Key": "order-77"}
    with TestClient(app, base_url="http://127.0.0.1") as c:
        first = c.post("/api/flows/intake/runs", files=files("a.txt", "b.txt"), headers=key)
        assert first.status_code == 202
        kept = uploads(tmp_path)
        again = c.post("/api/flows/intake/runs", files=files("a.txt", "b.txt"), headers=key)
        assert again.status_code == 200 and again.json() == {**first.json(), "repeated": True}
        assert uploads(tmp_path) == kept  # the repeat's files are not kept
        assert len(app.state.ctx.store.jobs.list()) == 2 and app.state.ctx.runner.woken == 1
        plan = service.plan_flow(write_flow(tmp_path / "other.json", STEPS[:1], name="other"),
                                 Registry(entry_points=False, extra=[TOYS]))
        service.record_flow(app.state.ctx.store, plan)
        elsewhere = c.post("/api/flows/other/runs", files=files("a.txt"), headers=key)
        assert elsewhere.status_code == 409 and "was used for flow intake" in elsewhere.text
        other = c.post("/api/flows/intake/runs", files=files("a.txt"), headers={**AUTH, "Idempotency-Key": "o-78"})
        assert other.status_code == 202 and other.json()["batch_id"] != first.json()["batch_id"]
        long = c.post("/api/flows/intake/runs", files=files("a.txt"), headers={**AUTH, "Idempotency-Key": "k" * 201})
        assert long.status_code == 422


def test_two_racing_requests_with_one_key_queue_once(app, tmp_path):
    key = {**AUTH, "Idempotency-Key": "race-1"}
    gate = threading.Barrier(2)
    with TestClient(app, base_url="http://127.0.0.1") as c:

        def post(_: int) -> Any:
            gate.wait()
            return c.post("/api/flows/intake/runs", files=files("a.txt", "b.txt", "c.txt"), headers=key)

        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(post, range(2)))
    assert sorted(r.status_code for r in replies) == [200, 202]
    assert replies[0].json()["runs"] == replies[1].json()["runs"]
    assert len(app.state.ctx.store.jobs.list()) == 3
    assert len(uploads(tmp_path)) == 6  # three files and their .json notes: the loser's are gone


def test_refusals_queue_nothing_and_keep_no_file(app, tmp_path):
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.post("/api/flows/intake/runs", files=files("a.txt")).status_code == 401
        assert c.post("/api/flows/nope/runs", files=files("a.txt"), headers=AUTH).status_code == 404
        bad = c.post("/api/flows/intake/runs", files=files("a.txt"), headers=AUTH, data={"params": "{"})
        assert bad.status_code == 400 and "not JSON" in bad.text
        unknown = c.post("/api/flows/intake/runs", files=files("a.txt"), headers=AUTH,
                         data={"params": '{"nope": 1}'})
        assert unknown.status_code == 422 and "no param 'nope'" in unknown.text
        secret = c.post("/api/flows/intake/runs", files=files("a.txt"), headers=AUTH,
                        data={"params": '{"password": "x"}'})
        assert secret.status_code == 400 and "look secret" in secret.text
        assert c.post("/api/flows/intake/runs?wait=61", files=files("a.txt"), headers=AUTH).status_code == 422
        assert c.post("/api/flows/intake/runs", headers=AUTH).status_code == 422  # no file
    assert app.state.ctx.store.jobs.list() == [] and uploads(tmp_path) == []
    assert app.state.ctx.runner.woken == 0


def play_runner(store: Store, n: int, stop: threading.Event) -> None:
    """Take ``n`` jobs as a runner would, record each run as succeeded and finish the job."""
    registry = Registry(entry_points=False, extra=[TOYS])
    done = 0
    while done < n and not stop.is_set():
        for job in store.jobs.claim("runner", limit=n, lease_s=30):
            plan = plan_job(store, job, registry)
            flow_id = store.put_flow(plan.name, plan.version, plan.content_hash, plan.definition)
            if store.batch(job["batch_id"]) is None:
                store.start_batch(flow_id, {}, batch_id=job["batch_id"], inputs=[job["document"]])
            text = Path(job["document"]).read_text()
            store.writer.flow_run_started(run_started(job["run_id"], job["batch_id"], flow_id, job["document"],
                                                      time.time(), job["correlation_id"]))
            store.writer.flow_run_finished(run_finished(job["run_id"], Status.SUCCEEDED, time.time(), None, None,
                                                        None, {"upper": text.upper()}))
            store.writer.flush()
            store.jobs.finish(job["id"], "runner", outcome=Status.SUCCEEDED)
            done += 1
        time.sleep(0.01)


def test_wait_answers_with_the_outcomes(app, store_url):
    stop = threading.Event()
    with TestClient(app, base_url="http://127.0.0.1") as c, Store(store_url) as runner_store:
        pending = c.post("/api/flows/intake/runs?wait=0.05", files=files("a.txt"), headers=AUTH).json()
        assert [r["status"] for r in pending["runs"]] == ["queued"]  # the time was up
        runner = threading.Thread(target=play_runner, args=(runner_store, 3, stop))
        runner.start()
        try:
            reply = c.post("/api/flows/intake/runs?wait=30", files=files("b.txt", "c.txt"), headers=AUTH)
        finally:
            stop.set()
            runner.join()
    assert reply.status_code == 202
    runs = reply.json()["runs"]
    assert [(r["status"], r["job_status"]) for r in runs] == [("succeeded", "finished")] * 2
    assert [r["outputs"]["upper"] for r in runs] == ["TEXT OF B.TXT", "TEXT OF C.TXT"]


def test_posted_files_run_on_the_servers_runner(app, store_url, tmp_path, monkeypatch):
    from docpipe.service.worker import Runner

    monkeypatch.setenv("DOCPIPE_BLOBS", str(tmp_path / "blobs"))
    with Store(store_url) as runner_store:
        runner = Runner(runner_store, Registry(entry_points=False, extra=[TOYS]), workers=1, poll_s=5)
        runner.start()
        app.state.ctx.runner = runner  # woken by the post: no wait for its poll
        try:
            with TestClient(app, base_url="http://127.0.0.1") as c:
                reply = c.post("/api/flows/intake/runs?wait=60", files=files("a.txt", "b.txt"), headers=AUTH,
                               data={"correlation_id": "order-5"})
                empty = c.post("/api/flows/intake/runs?wait=60", files=[("files", ("e.txt", b"", "text/plain"))],
                               headers=AUTH)
        finally:
            runner.stop()
    assert reply.status_code == 202
    assert [(r["status"], r["outputs"]["upper"]) for r in reply.json()["runs"]] == [
        ("succeeded", "TEXT OF A.TXT"), ("succeeded", "TEXT OF B.TXT")]
    with Store(store_url) as store:
        assert {store.get_run(r["run_id"])["correlation_id"] for r in reply.json()["runs"]} == {"order-5"}
    (failed,) = empty.json()["runs"]
    assert (failed["status"], failed["error_kind"], failed["job_status"]) == ("failed", "corrupt", "finished")
