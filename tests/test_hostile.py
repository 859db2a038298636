"""Issue 13: the hostile-input corpus (tests/hostile.py) through flows/idp.json in ONE batch,
on the CLI and through the server: one row per input with its typed verdict, the good
documents succeed, nothing hangs (the subprocess timeouts guard it), every process stays
under a memory bound, and no temporary file is left behind."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hostile import PASSWORD, build, paths
from support import DOCPIPE, ROOT, run_cli

pytestmark = pytest.mark.slow

#: the largest resident set any process of the batch may reach (the engine, the OCR, the
#: classifier and the NER workers each load their libraries and models: ~0.5-0.8 GB)
MAX_RSS_MB = 1500

#: runs ``docpipe`` and prints the largest resident set of it and every process it waited for
_MEASURED = """
import json, resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=900)
sys.stderr.write(proc.stderr)
print(json.dumps({"rc": proc.returncode,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(temp), "DOCPIPE_WORK_DIR": str(tmp_path / "work"),
            "DOCPIPE_PDF_PASSWORD": PASSWORD, "COLUMNS": "200"}


def _check_rows(rows: list[dict[str, str]], cases: dict[str, object]) -> None:
    by_doc = {r["document"]: r for r in rows}
    assert len(rows) == len(cases) and set(by_doc) == set(cases), "one row per input"
    wrong = {}
    for doc, case in cases.items():
        row = by_doc[doc]
        verdict = row["status"] if row["status"] == "succeeded" else row["error_kind"]
        if verdict not in case.verdicts:  # type: ignore[attr-defined]
            wrong[Path(doc).name] = (verdict, row["failed_step"], row["error"])
        if row["status"] == "failed":
            assert row["error"] and row["failed_step"], row
    assert wrong == {}


def test_the_corpus_in_one_batch_on_the_cli(tmp_path: Path) -> None:
    cases = build(tmp_path / "corpus")
    out = tmp_path / "results.csv"
    env = _env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _MEASURED, DOCPIPE, "run", str(ROOT / "flows" / "idp.json"),
                           *paths(tmp_path / "corpus"), "--db", f"sqlite:///{tmp_path / 'runs.db'}",
                           "--out", str(out), "-q"],
                          env=env, capture_output=True, text=True, timeout=960)
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads(proc.stdout.splitlines()[-1])
    assert measured["rc"] == 1, proc.stderr[-3000:]  # the bad files fail, as they must
    assert "Traceback" not in proc.stderr
    _check_rows(list(csv.DictReader(out.open(encoding="utf-8"))), cases)
    assert measured["max_rss_mb"] < MAX_RSS_MB, measured
    # nothing left behind: not in the temp dir, not in the work area (decrypted copies)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["owners"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(base: str, path: str, token: str, body: dict[str, object] | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method="POST" if data else "GET",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def test_the_corpus_through_the_server(tmp_path: Path) -> None:
    """The same corpus started through the API on server-side paths: the server answers while
    it runs (a FIFO cannot block its job), and records one run per input with its verdict."""
    cases = build(tmp_path / "corpus")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    env = _env(tmp_path)
    pushed = run_cli("flows", "push", str(ROOT / "flows" / "idp.json"), "--db", db, env=env)
    assert pushed.returncode == 0, pushed.stderr
    port, token = _free_port(), "hostile-test-token"
    server = subprocess.Popen([DOCPIPE, "serve", "--port", str(port), "--db", db, "--data-dir",
                               str(tmp_path / "data"), "--allow-dir", str(tmp_path / "corpus")],
                              env={**env, "DOCPIPE_TOKEN": token}, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "serve.log", "w"))  # noqa: SIM115
    base = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(200):
            try:
                _call(base, "/flows", token)
                break
            except OSError:
                time.sleep(0.1)
        job = _call(base, "/runs", token, {"flow": "idp", "paths": paths(tmp_path / "corpus")})["job"]
        deadline = time.monotonic() + 900
        while _call(base, f"/jobs/{job['id']}", token)["active"]:
            assert time.monotonic() < deadline, "the job never ended"
            _call(base, "/runs?per_page=1", token)  # the server answers while the job runs
            time.sleep(1)
        job = _call(base, f"/jobs/{job['id']}", token)
        assert job["status"] == "finished", job
        runs = _call(base, f"/runs?batch_id={job['batch_id']}&per_page=100", token)["runs"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    rows = [{**r, "failed_step": r.get("failed_step") or "", "error": r.get("error") or "",
             "error_kind": r.get("error_kind") or ""} for r in runs]
    _check_rows(rows, cases)
    assert list((tmp_path / "tmp").iterdir()) == []
