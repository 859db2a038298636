"""A batch's results file from the server, and retries queued behind the running job of their
batch: real runs of real flows over the toy blocks."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support import DOCPIPE, TOYS
from test_api import AUTH, client, wait_job
from ui_runs import QUICK, make_runs

from docpipe.engine import Engine
from docpipe.planner import build_plan
from docpipe.plugins import Registry
from docpipe.store import Store


@pytest.fixture
def made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("DOCPIPE_BLOBS", str(tmp_path / "blobs"))
    return make_runs(tmp_path)


def test_results_file_is_what_the_cli_writes(made, tmp_path):
    """`docpipe resume BATCH --out FILE` (which writes a batch's results from the store) and the
    server's download agree byte for byte, CSV and JSONL, failed documents included."""
    batch_id = made["batch_id"]
    written = {}
    with client(made, tmp_path) as c:
        for fmt in ("csv", "jsonl"):
            out = tmp_path / f"cli.{fmt}"
            proc = subprocess.run([DOCPIPE, "resume", batch_id, "--out", str(out), "--db", made["url"],
                                   "--plugin", TOYS, "-q", "--workers", "1"],
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 1 and out.is_file(), proc.stderr  # late.txt is missing: a failed row
            reply = c.get(f"/api/batches/{batch_id}/results.{fmt}")
            assert reply.status_code == 200, reply.text
            assert reply.content == out.read_bytes()
            assert f'filename="ui-quick-{batch_id}.{fmt}"' in reply.headers["content-disposition"]
            written[fmt] = reply.text
        rows = list(csv.DictReader(io.StringIO(written["csv"])))
        assert list(rows[0]) == ["document", "status", "error_kind", "error", "failed_step", "upper", "words"]
        assert [(Path(r["document"]).name, r["status"]) for r in rows] == [
            ("good.txt", "succeeded"), ("lines.txt", "succeeded"), ("late.txt", "failed")]
        assert rows[2]["failed_step"] == "read" and rows[2]["error_kind"]
        # ?format= names the same files
        by_query = c.get(f"/api/batches/{batch_id}/results", params={"format": "jsonl"})
        assert by_query.status_code == 200 and by_query.text == written["jsonl"]
        assert by_query.headers["content-type"].startswith("application/x-ndjson")
        assert c.get(f"/api/batches/{batch_id}/results").headers["content-type"].startswith("text/csv")
        assert c.get(f"/api/batches/{batch_id}/results.xlsx").status_code == 422
        assert c.get(f"/api/batches/{batch_id}/results", params={"format": "xml"}).status_code == 422
        assert c.get("/api/batches/nope/results.csv").status_code == 404
        page = c.get("/runs", params={"batch": batch_id}).text
        assert f'href="/api/batches/{batch_id}/results.csv"' in page
        assert f'href="/api/batches/{batch_id}/results.jsonl"' in page
        page = c.get(f"/runs/{made['runs']['good.txt']}").text
        assert f'href="/api/batches/{batch_id}/results.csv"' in page


def test_results_of_an_upload_name_the_original_files_and_need_no_secret(made, tmp_path):
    """A flow with a secret param and no declared outputs (the plan says them): the download
    needs no secret (nothing runs) and names each uploaded file by the name it was sent with."""
    secret = "s3cret-value-not-recorded"
    flow = {**QUICK, "name": "ui-secret", "params": {"api_token": secret}}
    del flow["outputs"]
    with Store(made["url"]) as store, Engine(store, workers=1) as engine:  # records the flow
        engine.run(build_plan(json.loads(json.dumps(flow)), Registry(extra=[TOYS])), [str(made["docs"] / "good.txt")])
    with client(made, tmp_path) as c:
        files = [("files", ("report one.txt", b"first upload", "text/plain")),
                 ("files", ("b.txt", b"second", "text/plain"))]
        reply = c.post("/api/runs/upload", data={"flow": "ui-secret", "params": json.dumps({"api_token": "x"})},
                       files=files, headers=AUTH)
        assert reply.status_code == 202, reply.text
        job = wait_job(c, reply.json())
        assert job["status"] == "finished", job
        rows = [json.loads(line) for line in c.get(f"/api/batches/{job['batch_id']}/results.jsonl").text.splitlines()]
        assert [r["document"] for r in rows] == ["report one.txt", "b.txt"]
        assert [r["upper"] for r in rows] == ["FIRST UPLOAD", "SECOND"]
        assert set(rows[0]) == {"document", "status", "error_kind", "error", "failed_step", "text", "upper", "words"}
        text = c.get(f"/api/batches/{job['batch_id']}/results.csv").text
        assert "report one.txt" in text and str(Path(tmp_path / "data" / "uploads")) not in text
        assert secret not in text


def test_results_need_the_token_on_an_exposed_server(made, tmp_path):
    with client(made, tmp_path, host="0.0.0.0") as c:
        url = f"/api/batches/{made['batch_id']}/results.csv"
        assert c.get(url).status_code == 401
        assert c.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert c.get(url, headers=AUTH).status_code == 200


SLOW: dict[str, Any] = {
    "name": "ui-slow", "version": "1", "outputs": ["upper", "slept"],
    "steps": [
        {"id": "read", "block": "toy.read"},
        {"id": "upper", "block": "toy.upper"},
        {"id": "sleep", "block": "toy.sleep", "params": {"seconds": 2}},
    ],
}


def test_a_second_retry_of_a_batch_is_queued_after_the_running_one(tmp_path, monkeypatch):
    """Two documents of a batch failed; the first one's retry is running (toy.sleep keeps it
    busy) when the second one's is asked for: 202, queued after it, run when it has ended."""
    monkeypatch.setenv("DOCPIPE_BLOBS", str(tmp_path / "blobs"))
    made = make_runs(tmp_path, missing=False)
    docs = made["docs"]
    with Store(made["url"]) as store, Engine(store, workers=1) as engine:
        result = engine.run(build_plan(json.loads(json.dumps(SLOW)), Registry(extra=[TOYS])),
                            [str(docs / "a.txt"), str(docs / "b.txt")])
    runs = {Path(r.document).name: r.run_id for r in result.results}
    assert result.counts["failed"] == 2
    for name in ("a.txt", "b.txt"):
        (docs / name).write_text(f"{name} is here", encoding="utf-8")
    with client(made, tmp_path, workers=1) as c:
        first = c.post(f"/api/runs/{runs['a.txt']}/retry", headers=AUTH)
        assert first.status_code == 202, first.text
        first_job = first.json()["job"]
        deadline = time.monotonic() + 60
        while c.get(first.json()["url"]).json()["status"] != "running":
            assert time.monotonic() < deadline, "the first retry did not start"
            time.sleep(0.05)
        page = c.get(f"/runs/{runs['b.txt']}").text
        assert "a retry now is queued after it" in page and "<button disabled" not in page
        second = c.post(f"/api/runs/{runs['b.txt']}/retry", headers=AUTH)
        assert second.status_code == 202, second.text
        listed = {j["id"]: j for j in c.get("/api/jobs").json()}
        queued = listed[second.json()["job"]["id"]]
        assert queued["status"] == "queued" and queued["after"] == first_job["id"]
        assert listed[first_job["id"]]["status"] == "running"
        assert queued["only"] == [str(docs / "b.txt")] and queued["documents"] == 1
        again = c.post(f"/api/runs/{runs['b.txt']}/retry", headers=AUTH)  # the same retry twice
        assert again.status_code == 409 and "already queued" in again.json()["detail"]
        assert "<button disabled" in c.get(f"/runs/{runs['b.txt']}").text  # its retry is queued
        page = c.get(f"/jobs/{queued['id']}").text
        assert "queued" in page and f'href="/jobs/{first_job["id"]}"' in page
        done = [wait_job(c, first.json()), wait_job(c, second.json())]
        assert [j["status"] for j in done] == ["finished", "finished"], done
        assert done[1]["started_at"] >= done[0]["finished_at"]  # one job per batch at a time
        for name in ("a.txt", "b.txt"):
            run = c.get(f"/api/runs/{runs[name]}").json()
            assert run["status"] == "succeeded" and run["attempt"] == 2, run
        rows = list(csv.DictReader(io.StringIO(c.get(f"/api/batches/{result.batch_id}/results.csv").text)))
        assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
        assert rows[1]["upper"] == "B.TXT IS HERE"
