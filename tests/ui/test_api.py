"""The REST API and the pages over a real store with runs made by running real flows."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import DOCPIPE, TOYS
from ui_runs import FLOW, QUICK, SCRIPT, make_runs

from docpipe.engine import Engine
from docpipe.planner import build_plan
from docpipe.plugins import Registry
from docpipe.server import create_app
from docpipe.store import Store

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def client(made: dict[str, Any], tmp_path: Path, **options: Any) -> TestClient:
    options.setdefault("plugins", (TOYS,))
    app = create_app(made["url"], tmp_path / "data", TOKEN, **options)
    return TestClient(app, base_url="http://127.0.0.1")


def wait_job(c: TestClient, reply: dict[str, Any], deadline: float = 120) -> dict[str, Any]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        job = c.get(reply["url"]).json()
        if not job["active"]:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {reply['url']} still running after {deadline}s")


@pytest.fixture
def made(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Runs in a SQLite file, and in the PostgreSQL test database (blobs under tmp_path)."""
    monkeypatch.setenv("DOCPIPE_BLOBS", str(tmp_path / "blobs"))
    return make_runs(tmp_path, url=store_url)


def test_runs_list_filters_counts_and_pages(made, tmp_path):
    with client(made, tmp_path) as c:
        listing = c.get("/api/runs").json()
        assert listing["counts"]["failed"] == 1 and listing["counts"]["succeeded"] == 2
        assert listing["total"] == 3
        failed = c.get("/api/runs", params={"status": "failed"}).json()
        assert [Path(r["document"]).name for r in failed["runs"]] == ["late.txt"]
        assert c.get("/api/runs", params={"flow": "nope"}).json()["total"] == 0
        assert c.get("/api/runs", params={"correlation_id": "ticket-7"}).json()["total"] == 3
        assert c.get("/api/runs", params={"since": "2099-01-01"}).json()["total"] == 0
        assert c.get("/api/runs", params={"until": "2000-01-01"}).json()["total"] == 0
        assert c.get("/api/runs", params={"since": "1h"}).json()["total"] == 3
        assert c.get("/api/runs", params={"since": "yesterday-ish"}).status_code == 400
        far = c.get("/api/runs", params={"page": 10**20})  # past the end: empty, not an SQL overflow
        assert far.status_code == 200 and far.json()["runs"] == []
        assert c.get("/runs", params={"page": 10**20}).status_code == 200
        pages = [c.get("/api/runs", params={"per_page": 1, "page": p}).json() for p in (1, 2, 3)]
        assert pages[0]["pages"] == 3
        ids = [p["runs"][0]["id"] for p in pages]
        assert len(set(ids)) == 3
        starts = [p["runs"][0]["started_at"] for p in pages]
        assert starts == sorted(starts, reverse=True)  # newest first
        html = c.get("/runs", params={"status": "failed"}).text
        assert "late.txt" in html and "good.txt" not in html
        assert 'data-watch-kind="counts"' in html  # the page polls the API while it is open


def test_run_detail_has_steps_timeline_traceback_and_children(tmp_path):
    made = make_runs(tmp_path, FLOW)  # with a map over the lines (worker processes)
    with client(made, tmp_path) as c:
        run = c.get(f"/api/runs/{made['runs']['lines.txt']}").json()
        steps = [t["step"] for t in run["tasks"]]
        assert {"read", "upper", "words", "lengths", "lengths[0]", "lengths[2]"} <= set(steps)
        lengths = next(t for t in run["tasks"] if t["step"] == "lengths")
        assert lengths["children"] == 3
        assert steps.index("lengths[0]") > steps.index("lengths")  # children follow their map
        assert all(0 <= t["left"] <= 100 and t["width"] > 0 for t in run["tasks"])
        assert run["outputs"]["words"] == 6 and run["outputs"]["length"] == [3, 7, 17]
        by_step = {t["step"]: t for t in run["tasks"]}
        inputs = {v["key"]: json.loads(v["json"]) for v in by_step["lengths[1]"]["shown_inputs"]}
        assert inputs == {"line ← lines[1]": "two two"}  # a map item's input: its element of the list
        inputs = {v["key"]: json.loads(v["json"]) for v in by_step["upper"]["shown_inputs"]}
        assert inputs == {"text": "one\ntwo two\nthree three three"}
        assert by_step["read"]["shown_inputs"][0]["key"] == "path"
        page = c.get(f"/runs/{run['id']}").text
        assert "3 children" in page and 'href="#children-lengths"' in page and 'class="bar succeeded"' in page

        failed = c.get(f"/api/runs/{made['runs']['late.txt']}").json()
        assert failed["status"] == "failed"
        task = failed["failed_tasks"][0]
        assert task["step"] == "read" and "FileNotFoundError" in task["traceback"]
        page = c.get(f"/runs/{failed['id']}").text
        assert "Traceback (most recent call last)" in page and "FileNotFoundError" in page
        assert 'action="/runs/' + failed["id"] + '/retry"' in page

        assert c.get("/api/runs/nope").status_code == 404
        assert c.get("/runs/nope").status_code == 404


def test_block_output_is_escaped(made, tmp_path):
    with client(made, tmp_path) as c:
        run = c.get(f"/api/runs/{made['runs']['good.txt']}").json()
        assert SCRIPT.upper() in run["outputs"]["upper"]  # the API gives the value as it is
        page = c.get(f"/runs/{run['id']}")
        assert "<script>alert" not in page.text and "<SCRIPT>ALERT" not in page.text
        assert "&lt;script&gt;alert" in page.text and "&lt;SCRIPT&gt;ALERT" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]


def test_large_outputs_are_links_to_the_blob(tmp_path):
    docs = tmp_path / "big"
    docs.mkdir()
    (docs / "big.txt").write_text("word " * 30000)  # upper: 150 KB of JSON, over the 64 KiB threshold
    made = make_runs(tmp_path, missing=False)
    with Store(made["url"]) as store, Engine(store) as engine:
        result = engine.run(build_plan(QUICK, Registry(extra=[TOYS])), [str(docs / "big.txt")])
    run_id = result.results[0].run_id
    with client(made, tmp_path) as c:
        run = c.get(f"/api/runs/{run_id}").json()
        ref = run["outputs"]["upper"]
        assert set(ref) == {"$blob", "size", "type"}
        page = c.get(f"/runs/{run_id}").text
        assert f"/api/blobs/{ref['$blob']}?type=json" in page and "WORD WORD" not in page
        blob = c.get(f"/api/blobs/{ref['$blob']}")
        assert blob.status_code == 200 and json.loads(blob.text).startswith("WORD WORD")
        assert c.get("/api/blobs/../../store.db").status_code == 404
        assert c.get("/api/blobs/" + "0" * 64).status_code == 404


def test_changes_need_the_token(made, tmp_path):
    late = made["runs"]["late.txt"]
    with client(made, tmp_path, allow_dirs=(str(made["docs"]),)) as c:
        assert c.post(f"/api/runs/{late}/retry").status_code == 401
        assert c.post(f"/api/runs/{late}/retry", headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert c.post(f"/api/batches/{made['batch_id']}/resume").status_code == 401
        assert c.post(f"/api/batches/{made['batch_id']}/retry").status_code == 401
        body = {"flow": "ui-quick", "paths": [str(made["docs"])]}
        assert c.post("/api/runs", json=body).status_code == 401
        files = {"files": ("a.txt", b"text", "text/plain")}
        assert c.post("/api/runs/upload", data={"flow": "ui-quick"}, files=files).status_code == 401
        assert not (tmp_path / "data" / "uploads").exists()
        # the pages' forms: token field or cookie
        assert c.post(f"/runs/{late}/retry").status_code == 401
        assert c.post(f"/runs/{late}/retry", data={"token": "wrong"}).status_code == 403
        assert c.post(f"/batches/{made['batch_id']}/resume").status_code == 401
        assert c.post("/flows/ui-quick/start", data={"paths": str(made["docs"])}).status_code == 401
        assert c.post("/login", data={"token": "wrong"}).status_code == 403
        assert c.get("/api/jobs").json() == []  # nothing was started


def test_retry_a_failed_run_after_the_fault_is_fixed(made, tmp_path):
    late = made["runs"]["late.txt"]
    with client(made, tmp_path) as c:
        assert c.post(f"/api/runs/{made['runs']['good.txt']}/retry", headers=AUTH).status_code == 409
        (made["docs"] / "late.txt").write_text("here now", encoding="utf-8")
        reply = c.post(f"/api/runs/{late}/retry", headers=AUTH)
        assert reply.status_code == 202, reply.text
        job = wait_job(c, reply.json())
        assert job["status"] == "finished" and job["counts"] == {"succeeded": 3, "failed": 0}
        run = c.get(f"/api/runs/{late}").json()
        assert run["status"] == "succeeded" and run["attempt"] == 2 and run["outputs"]["upper"] == "HERE NOW"
        assert c.get("/api/runs").json()["total"] == 3  # the same run, not a new one
        assert c.post(f"/api/batches/{made['batch_id']}/retry", headers=AUTH).status_code == 409


def test_retry_of_a_run_retries_only_that_run(tmp_path):
    made = make_runs(tmp_path)
    docs = made["docs"]
    # a second batch with two failing documents
    with Store(made["url"]) as store, Engine(store, workers=1) as engine:
        plan = build_plan(json.loads(json.dumps(QUICK)), Registry(extra=[TOYS]))
        result = engine.run(plan, [str(docs / "a.txt"), str(docs / "b.txt")])
    runs = {Path(r.document).name: r.run_id for r in result.results}
    for name in ("a.txt", "b.txt"):
        (docs / name).write_text(f"{name} is here", encoding="utf-8")
    with client(made, tmp_path) as c:
        job = wait_job(c, c.post(f"/api/runs/{runs['a.txt']}/retry", headers=AUTH).json())
        assert job["status"] == "finished"
        assert c.get(f"/api/runs/{runs['a.txt']}").json()["status"] == "succeeded"
        assert c.get(f"/api/runs/{runs['b.txt']}").json()["status"] == "failed"  # not asked for
        assert c.get(f"/api/runs/{made['runs']['late.txt']}").json()["status"] == "failed"  # other batch


def test_resume_a_batch(made, tmp_path):
    with client(made, tmp_path) as c:
        reply = c.post(f"/api/batches/{made['batch_id']}/resume", headers=AUTH)
        assert reply.status_code == 202, reply.text
        job = wait_job(c, reply.json())
        assert job["status"] == "finished" and job["kind"] == "resume"
        assert c.get(f"/api/batches/{made['batch_id']}").json()["status"] == "failed"  # late.txt still missing
        assert c.post("/api/batches/nope/resume", headers=AUTH).status_code == 404


def test_a_batch_the_server_cannot_plan_again_is_refused_with_why(tmp_path, caplog):
    """Planned again as `docpipe resume` plans it (docpipe.service): a secret param must be
    given again (400); a recorded flow the server's blocks no longer satisfy is a 422 whose
    issues are in the server's log."""
    made = make_runs(tmp_path, {**QUICK, "name": "ui-secret", "params": {"api_token": "s3cret"}})
    batch = made["batch_id"]
    with client(made, tmp_path) as c:
        refused = c.post(f"/api/batches/{batch}/retry", headers=AUTH)
        assert refused.status_code == 400
        assert refused.json()["detail"] == "these params are secret and not recorded; give them: api_token"
        (made["docs"] / "late.txt").write_text("here now", encoding="utf-8")
        reply = c.post(f"/api/batches/{batch}/retry", headers=AUTH, json={"params": {"api_token": "again"}})
        assert reply.status_code == 202, reply.text
        assert wait_job(c, reply.json())["counts"] == {"succeeded": 3, "failed": 0}
    with client(made, tmp_path, plugins=()) as c, caplog.at_level("WARNING", logger="docpipe.server"):
        before = c.get("/api/jobs").json()  # jobs are rows of the store: the retry above is listed
        assert [j["kind"] for j in before] == ["retry"] and not before[0]["active"]
        bad = c.post(f"/api/batches/{batch}/resume", headers=AUTH, json={"params": {"api_token": "x"}})
        assert bad.status_code == 422 and "not valid with the installed blocks" in bad.json()["detail"]
        assert c.get("/api/jobs").json() == before  # nothing was queued
    assert any("unknown block 'toy.read'" in r.getMessage() for r in caplog.records)


def test_upload_starts_a_run_and_is_size_limited(made, tmp_path):
    uploads = tmp_path / "data" / "uploads"
    with client(made, tmp_path, max_upload=4096) as c:
        files = [("files", ("../../evil.txt", b"uploaded text", "text/plain"))]
        reply = c.post("/api/runs/upload", data={"flow": "ui-quick"}, files=files, headers=AUTH)
        assert reply.status_code == 202, reply.text
        job = wait_job(c, reply.json())
        assert job["status"] == "finished" and job["counts"]["succeeded"] == 1
        saved = [p for p in uploads.iterdir() if p.suffix == ".txt"]
        assert len(saved) == 1 and saved[0].name != "evil.txt" and saved[0].read_bytes() == b"uploaded text"
        assert not (tmp_path / "evil.txt").exists()
        assert json.loads(saved[0].with_name(saved[0].name + ".json").read_text())["filename"] == "evil.txt"
        run = c.get("/api/runs", params={"batch_id": job["batch_id"]}).json()["runs"][0]
        assert run["correlation_id"] == "evil.txt" and run["document"] == str(saved[0])
        assert "uploaded as <code>evil.txt</code>" in c.get(f"/runs/{run['id']}").text

        big = [("files", ("big.txt", b"x" * 10_000, "text/plain"))]
        assert c.post("/api/runs/upload", data={"flow": "ui-quick"}, files=big, headers=AUTH).status_code == 413
        two = [("files", ("a.txt", b"x" * 3000, "text/plain")), ("files", ("b.txt", b"y" * 3000, "text/plain"))]
        assert c.post("/api/runs/upload", data={"flow": "ui-quick"}, files=two, headers=AUTH).status_code == 413
        assert len([p for p in uploads.iterdir() if p.suffix == ".txt"]) == 1  # nothing kept of those


def test_upload_over_the_limit_is_refused_before_it_is_read(made, tmp_path):
    with client(made, tmp_path, max_upload=1024) as c:
        huge = [("files", ("huge.bin", b"z" * (3 * 1024 * 1024), "application/octet-stream"))]
        reply = c.post("/api/runs/upload", data={"flow": "ui-quick"}, files=huge, headers=AUTH)
        assert reply.status_code == 413 and "limit" in reply.json()["detail"]


def test_server_paths_must_be_under_an_allowed_folder(made, tmp_path):
    docs = made["docs"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (docs / "link.txt").symlink_to(outside / "secret.txt")
    with client(made, tmp_path) as c:  # no --allow-dir: no server-side paths at all
        assert c.post("/api/runs", json={"flow": "ui-quick", "paths": [str(docs / "good.txt")]},
                      headers=AUTH).status_code == 403
    with client(made, tmp_path, allow_dirs=(str(docs),)) as c:
        for bad in (str(outside / "secret.txt"), f"{docs}/../outside/secret.txt", "/etc/passwd",
                    str(docs / "link.txt"), f"{docs}/../outside/*.txt", str(docs)):
            reply = c.post("/api/runs", json={"flow": "ui-quick", "paths": [bad]}, headers=AUTH)
            assert reply.status_code == 403, (bad, reply.text)
        (docs / "link.txt").unlink()
        assert c.post("/api/runs", json={"flow": "ui-quick", "paths": [str(docs / "nope.txt")]},
                      headers=AUTH).status_code == 400
        assert c.post("/api/runs", json={"flow": "nope", "paths": [str(docs / "good.txt")]},
                      headers=AUTH).status_code == 404
        reply = c.post("/api/runs", json={"flow": "ui-quick", "paths": [str(docs / "*.txt")],
                                          "correlation_id": "by-path"}, headers=AUTH)
        assert reply.status_code == 202, reply.text
        job = wait_job(c, reply.json())
        assert job["documents"] == 2 and job["counts"]["succeeded"] == 2
        assert c.get("/api/runs", params={"correlation_id": "by-path"}).json()["total"] == 2


def test_exposed_server_needs_the_token_to_read(made, tmp_path):
    with client(made, tmp_path, host="0.0.0.0") as c:
        assert c.get("/api/runs").status_code == 401
        assert c.get("/api/runs", headers=AUTH).status_code == 200
        page = c.get("/runs?status=failed", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fruns%3Fstatus%3Dfailed"
        assert c.post("/login", data={"token": TOKEN, "next": "/runs?status=failed"},
                      follow_redirects=False).headers["location"] == "/runs?status=failed"
        assert c.get("/runs").status_code == 200  # the cookie now carries the token
        assert c.post("/login", data={"token": TOKEN, "next": "//evil.example/"},
                      follow_redirects=False).headers["location"] == "/runs"


def test_loopback_server_answers_only_to_loopback_names(made, tmp_path):
    with client(made, tmp_path) as c:
        assert c.get("/api/runs", headers={"Host": "evil.example"}).status_code == 400
        assert c.get("/api/runs", headers={"Host": "localhost:8765"}).status_code == 200


def test_flows_and_blocks(made, tmp_path):
    with client(made, tmp_path) as c:
        flows = c.get("/api/flows").json()
        assert [f["name"] for f in flows] == ["ui-quick"] and flows[0]["n_runs"] == 3
        flow = c.get("/api/flows/ui-quick").json()
        assert [s["id"] for s in flow["definition"]["steps"]] == ["read", "upper", "words"]
        assert c.get("/api/flows/nope").status_code == 404
        page = c.get("/flows/ui-quick").text
        assert "&#34;toy.read&#34;" in page or "&quot;toy.read&quot;" in page
        assert "ui-quick" in c.get("/flows").text
        blocks = c.get("/api/blocks").json()
        names = {b["name"] for p in blocks["plugins"] for b in p["blocks"]}
        assert {"toy.read", "toy.linelen"} <= names
        assert "toy.linelen" in c.get("/blocks").text
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/api/runs", "/api/runs/{run_id}", "/api/runs/upload", "/api/runs/{run_id}/retry",
                "/api/batches/{batch_id}/resume", "/api/flows", "/api/flows/{name}", "/api/blocks"} <= set(paths)


def test_broken_plugins_are_shown(made, tmp_path):
    bad = tmp_path / "badplugin.py"
    bad.write_text("raise ImportError('needs <b>libfoo</b>')\n")
    with client(made, tmp_path, plugins=(TOYS, str(bad))) as c:
        broken = c.get("/api/blocks").json()["broken"]
        assert broken and "libfoo" in broken[0]["error"]
        page = c.get("/blocks").text
        assert "needs &lt;b&gt;libfoo&lt;/b&gt;" in page


def test_start_form_of_the_flow_page(made, tmp_path):
    with client(made, tmp_path) as c:
        form = {"token": TOKEN, "params": "", "correlation_id": "from-the-form"}
        files = [("files", ("form.txt", b"from the form", "text/plain"))]
        reply = c.post("/flows/ui-quick/start", data=form, files=files, follow_redirects=False)
        assert reply.status_code == 303 and reply.headers["location"].startswith("/jobs/")
        cookie = reply.headers["set-cookie"].lower()
        assert "docpipe_token" in cookie and "samesite=strict" in cookie and "httponly" in cookie
        assert TOKEN.lower() not in cookie  # the cookie holds a keyed hash, never the token
        job = wait_job(c, {"url": "/api" + reply.headers["location"]})
        assert job["status"] == "finished" and job["counts"]["succeeded"] == 1
        runs = c.get("/api/runs", params={"correlation_id": "from-the-form"}).json()["runs"]
        assert [r["status"] for r in runs] == ["succeeded"]
        page = c.get(reply.headers["location"]).text
        assert job["batch_id"] in page and "finished" in page
        bad = c.post("/flows/ui-quick/start", data={**form, "params": "[1]"}, files=files)
        assert bad.status_code == 400 and "JSON object" in bad.text


def test_changes_from_another_origins_page_are_refused(made, tmp_path):
    """A page on another port of localhost is the same *site*: SameSite=Strict cookies go with
    its posts. The Origin / Sec-Fetch-Site check refuses them, whatever credential they carry."""
    late = made["runs"]["late.txt"]
    (made["docs"] / "late.txt").write_text("here now", encoding="utf-8")
    with client(made, tmp_path) as c:
        login = c.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert login.status_code == 303 and c.cookies.get("docpipe_token")
        for headers in ({"Origin": "http://localhost:3000"}, {"Origin": "null"},
                        {"Sec-Fetch-Site": "same-site"}, {"Origin": "http://127.0.0.1:9", **AUTH}):
            refused = c.post(f"/api/runs/{late}/retry", headers=headers)
            assert refused.status_code == 403 and "cross-origin" in refused.text, headers
        assert c.get("/api/jobs").json() == []  # nothing was started
        same = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}  # the server's own page
        reply = c.post(f"/api/runs/{late}/retry", headers=same)  # with the login cookie
        assert reply.status_code == 202, reply.text
        assert wait_job(c, reply.json())["status"] == "finished"


def test_serve_command_is_registered():
    proc = subprocess.run([DOCPIPE, "serve", "--help"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0 and "--allow-dir" in proc.stdout and "--max-upload" in proc.stdout


def test_a_batch_takes_one_job_at_a_time_even_when_requests_race(tmp_path):
    """The duplicate check and the queueing happen under one lock: while a job of a batch is
    active, four racing requests for the same retry of another document of it give one queued
    job (after the first) and three refusals. Jobs are rows of the store (no runner here: they
    stay queued, which is what the check looks at)."""
    from docpipe.server.jobs import Duplicate, Job, Jobs

    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    jobs = Jobs(store)

    def submit(kind: str, batch: str, only: list[str] | None = None) -> Job | None:
        try:
            return jobs.submit(Job(kind, "f", batch_id=batch, only=only), {})
        except Duplicate:
            return None

    try:
        first = submit("retry", "b1", ["a"])
        assert first is not None
        with ThreadPoolExecutor(4) as pool:
            racing = list(pool.map(lambda _: submit("retry", "b1", ["b"]), range(4)))
        queued = [j for j in racing if j is not None]
        assert len(queued) == 1 and queued[0].status == "queued" and queued[0].after == first.id
        assert submit("retry", "b1", ["a"]) is None  # the first already does that
        assert submit("retry", "b1") is not None  # every failed document: queued too
        assert submit("retry", "b1", ["c"]) is None  # ... and that covers c
        assert submit("resume", "b1") is not None
        assert submit("resume", "b1") is None
        other = submit("resume", "b2")  # another batch
        assert other is not None and other.after is None
        assert [j.id for j in jobs.active_on("b1")][:2] == [first.id, queued[0].id]
        again = jobs.get(queued[0].id)
        assert again is not None and again.after == first.id and again.only == ["b"]
    finally:
        store.close()


REVIEW_STEPS = [
    {"id": "read", "block": "toy.read"},
    {"id": "classify", "expr": "'invoice' if 'invoice' in text else 'letter'", "output": "doc_class"},
    {"id": "score", "expr": "0.3 if 'maybe' in text else 0.9", "output": "doc_class_score"},
    {"id": "check", "review": {"kind": "choose", "key": "doc_class", "choices": ["invoice", "letter"]},
     "when": "doc_class_score < 0.5"},
    {"id": "tag", "expr": "doc_class + '/' + str(doc_class_reviewed_by)", "output": "tag"},
]


def test_review_tasks_are_listed_claimed_answered_and_the_run_continues(tmp_path, store_url, monkeypatch):
    """Two documents wait; two reviewers race for one task over the API; the winner's answer
    makes the server continue the run at once, and a double submit records one answer."""
    monkeypatch.setenv("DOCPIPE_BLOBS", str(tmp_path / "blobs"))
    docs = []
    for name, text in (("a", "invoice maybe"), ("b", "letter maybe"), ("c", "letter for sure")):
        (tmp_path / f"{name}.txt").write_text(text)
        docs.append(str(tmp_path / f"{name}.txt"))
    plan = build_plan({"name": "rv", "version": "1", "steps": REVIEW_STEPS}, Registry(extra=[TOYS]))
    with Store(store_url) as store, Engine(store, workers=1) as engine:
        batch_id = engine.run(plan, docs).batch_id
    with client({"url": store_url}, tmp_path) as c:
        listing = c.get("/api/review/tasks").json()
        assert listing["counts"] == {"waiting": 2}
        a, b = listing["tasks"]
        assert Path(a["document"]).name == "a.txt" and a["proposal"]["doc_class"] == "invoice"
        assert c.get(f"/api/review/tasks/{a['id']}").json()["choices"] == ["invoice", "letter"]
        assert c.get("/api/review/tasks/nope").status_code == 404
        claim = {"reviewer": "ann", "lease_s": 60}
        assert c.post(f"/api/review/tasks/{a['id']}/claim", json=claim).status_code in (401, 403)  # no token
        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda who: c.post(f"/api/review/tasks/{a['id']}/claim", headers=AUTH,
                                                       json={"reviewer": who}).status_code, ["ann", "bob"]))
        assert sorted(replies) == [200, 409]
        holder = c.get(f"/api/review/tasks/{a['id']}").json()["lease_owner"]
        other = "bob" if holder == "ann" else "ann"
        answer_url = f"/api/review/tasks/{a['id']}/answer"
        taken = c.post(answer_url, headers=AUTH, json={"reviewer": other, "answer": "letter"})
        assert taken.status_code == 409
        bad = c.post(answer_url, headers=AUTH, json={"reviewer": holder, "answer": "poem"})
        assert bad.status_code == 400
        reply = c.post(f"/api/review/tasks/{a['id']}/answer", headers=AUTH,
                       json={"reviewer": holder, "answer": "letter"}).json()
        assert reply["answered"] and reply["task"]["answered_by"] == holder
        job = wait_job(c, reply)
        assert job["status"] == "finished" and job["kind"] == "continue"
        again = c.post(f"/api/review/tasks/{a['id']}/answer", headers=AUTH,
                       json={"reviewer": holder, "answer": "letter"}).json()
        assert not again["answered"] and again["job"] is None  # the run already went on
        run = c.get(f"/api/runs/{a['flow_run_id']}").json()
        assert run["status"] == "succeeded" and run["outputs"]["tag"] == f"letter/{holder}"
        assert c.post(f"/api/review/tasks/{b['id']}/claim", headers=AUTH, json={"reviewer": "cy"}).status_code == 200
        released = c.post(f"/api/review/tasks/{b['id']}/release", headers=AUTH, json={"reviewer": "cy"})
        assert released.status_code == 200 and released.json()["status"] == "waiting"
        assert c.get("/api/review/tasks", params={"status": "answered"}).json()["tasks"][0]["id"] == a["id"]
        counts = c.get("/api/runs", params={"batch_id": batch_id}).json()["counts"]
        assert (counts["succeeded"], counts["waiting"], counts["failed"]) == (2, 1, 0)
