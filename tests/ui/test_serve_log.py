"""What ``docpipe serve`` logs to stderr: a line per request and per job start and end, never
the token (header, cookie, query or form)."""

from __future__ import annotations

import re
import time

import httpx
from ui_runs import make_runs, serving

from docpipe.server.logs import shown_target
from docpipe.server.security import cookie_value

TOKEN = "log-test-token-Zq9w8e7r6t"


def test_request_and_job_lines_on_stderr_and_never_the_token(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCPIPE_BLOBS", str(tmp_path / "blobs"))
    made = make_runs(tmp_path)
    late = made["runs"]["late.txt"]
    (made["docs"] / "late.txt").write_text("here now", encoding="utf-8")
    with serving(made, tmp_path, TOKEN) as base, httpx.Client(base_url=base, timeout=30) as c:
        assert c.get("/api/runs", params={"status": "failed", "token": TOKEN, "page": 1}).status_code == 200
        assert c.get(f"/runs?next=/x?token%3D{TOKEN}").status_code == 200  # the token nested in a value
        assert c.post("/login", data={"token": TOKEN}).status_code == 303  # the cookie is set
        assert c.get("/runs").status_code == 200  # with the cookie
        assert c.get("/api/runs/nope", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
        reply = c.post(f"/api/runs/{late}/retry", headers={"Authorization": f"Bearer {TOKEN}"})
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["job"]["id"]
        deadline = time.monotonic() + 120
        while c.get(f"/api/jobs/{job_id}").json()["active"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.3)  # the job's end line is written just after the job is marked done
    log = (tmp_path / "serve.log").read_text()
    assert TOKEN not in log and cookie_value(TOKEN) not in log, log
    assert TOKEN not in (tmp_path / "serve.out").read_text()  # given in DOCPIPE_TOKEN: not printed
    line = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO docpipe\.server\.access: "
    assert re.search(line + r"GET /api/runs\?status=failed&token=\*\*\*&page=1 200 \d+\.\d ms\n", log), log
    assert re.search(line + r"GET /runs\?next=/x\?token%3D\*\*\* 200 [\d.]+ ms\n", log), log
    assert re.search(line + r"POST /login 303 [\d.]+ ms\n", log), log
    assert re.search(line + r"GET /api/runs/nope 404 [\d.]+ ms\n", log), log
    assert re.search(line + rf"POST /api/runs/{late}/retry 202 [\d.]+ ms\n", log), log
    batch = made["batch_id"]
    assert re.search(rf"INFO docpipe\.server\.jobs: job {job_id} queued: retry of ui-quick, batch {batch}, "
                     r"1 document\n", log), log
    assert re.search(rf"INFO docpipe\.server\.jobs: job {job_id} started: retry of ui-quick, batch {batch}, "
                     r"1 document\n", log), log
    assert re.search(rf"INFO docpipe\.server\.jobs: job {job_id} finished: retry of ui-quick, batch {batch}, "
                     r"succeeded 3, failed 0, in \d+\.\d\d s\n", log), log


def test_query_secrets_are_masked():
    assert shown_target("/api/runs", b"status=failed&page=2") == "/api/runs?status=failed&page=2"
    assert shown_target("/x", b"api_key=1&Password=2&sig=3&q=4") == "/x?api_key=***&Password=***&sig=***&q=4"
    assert shown_target("/x", b"next=/runs?token%3Dabc", token="abc") == "/x?next=/runs?token%3D***"
    assert shown_target("/a\nb c", b"") == "/a%0Ab%20c"  # no line breaks in the log
    assert shown_target("/runs/tok-en", b"", token="tok-en") == "/runs/***"


def test_a_failed_job_logs_its_error_and_traceback(tmp_path, caplog):
    """A job the runner cannot do (a resume of a batch the store does not have) ends in error,
    with its lines in the log: queued, started, error with the traceback."""
    from docpipe.plugins import Registry
    from docpipe.server.jobs import Job, Jobs
    from docpipe.service.worker import Runner
    from docpipe.store import Store

    url = f"sqlite:///{tmp_path}/j.db"
    with Store(url) as store, Store(url) as runner_store:
        runner = Runner(runner_store, Registry(entry_points=False), poll_s=0.05, work_dir=str(tmp_path / "work"))
        jobs = Jobs(store, runner)
        runner.start()
        try:
            with caplog.at_level("INFO", logger="docpipe.server.jobs"):
                job = jobs.submit(Job("resume", "f", batch_id="b1", documents=2), {})
                deadline = time.monotonic() + 60
                while (found := jobs.get(job.id)) is not None and found.active:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        finally:
            runner.stop()
    assert found is not None and found.status == "error" and "no batch b1" in (found.error or "")
    records = [r for r in caplog.records if r.name == "docpipe.server.jobs"]
    lines = [r.getMessage() for r in records]
    assert lines[0] == f"job {job.id} queued: resume of f, batch b1, 2 documents"
    assert lines[1] == f"job {job.id} started: resume of f, batch b1, 2 documents"
    assert re.fullmatch(rf"job {job.id} error: resume of f, batch b1, in \d+\.\d\d s: NotFound: .*no batch b1.*",
                        lines[2]), lines[2]
    assert records[2].levelname == "ERROR" and records[2].exc_info is not None
