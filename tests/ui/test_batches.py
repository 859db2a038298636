"""A batch's results file from the server, and retries queued behind the running job of their
batch: real runs of real flows over the toy blocks."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import DOCPIPE, TOYS
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
