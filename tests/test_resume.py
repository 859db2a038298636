"""Crash and resume: kill `docpipe run` with SIGKILL mid-batch, resume, and every document
has exactly one run and one result row, with the right status."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from support import DOCPIPE, TOYS, run_cli, write_flow

N_DOCS = 120


def make_inputs(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(N_DOCS):
        p = folder / f"doc{i:03d}.txt"
        p.write_text("" if i % 40 == 7 else f"document {i} has some words")  # 3 fail: empty
        paths.append(p)
    return paths


def flow(tmp_path: Path) -> Path:
    return write_flow(tmp_path / "flow.json", [
        {"id": "read", "block": "toy.read"},
        {"id": "slow", "block": "toy.sleep", "params": {"seconds": 0.02}},
        {"id": "words", "block": "toy.words"},
        {"id": "label", "expr": "'long' if words > 4 else 'short'", "output": "label"},
    ], outputs=["words", "label", "slept"])


def db_rows(url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def start(tmp_path: Path, db: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([DOCPIPE, "run", str(flow(tmp_path)), str(tmp_path / "in"),
                             "--plugin", TOYS, "--db", db, "--out", str(out),
                             "-w", "2", "-q", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(db: str, sql: str, at_least: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"docpipe run ended before the kill point: {proc.stderr.read()}")
        try:
            if db_rows(db, sql)[0][0] >= at_least:
                return
        except sa.exc.DBAPIError:
            pass  # no database or tables yet
        time.sleep(0.02)
    pytest.fail("kill point never reached")


def check_exactly_once(db: str, out: Path) -> None:
    runs = db_rows(db, "select document, status from flow_runs")
    assert len(runs) == N_DOCS, "a document has no run or more than one"
    status = dict(runs)
    assert len(status) == N_DOCS
    for doc, st in status.items():
        assert st == ("failed" if int(Path(doc).stem[3:]) % 40 == 7 else "succeeded"), doc
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == N_DOCS
    assert sorted(r["document"] for r in rows) == sorted(status)
    assert {r["document"]: r["status"] for r in rows} == status
    ok = [r for r in rows if r["status"] == "succeeded"]
    assert all(r["label"] == "long" and r["words"] == "5" for r in ok)


@pytest.mark.slow
@pytest.mark.parametrize("kill_point", [
    ("before any run finished", "select count(*) from flow_runs", 1),
    ("mid-batch", "select count(*) from flow_runs where status != 'running'", 40),
    ("after every run finished", "select count(*) from flow_runs where status != 'running'",
     N_DOCS),
])
def test_sigkill_then_resume_gives_every_document_exactly_once(tmp_path, kill_point, store_url):
    _name, sql, threshold = kill_point
    make_inputs(tmp_path / "in")
    db, out = store_url, tmp_path / "results.csv"
    proc = start(tmp_path, db, out)
    wait_for(db, sql, threshold, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # resume by re-running the same command with --resume
    again = start(tmp_path, db, out, "--resume")
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 1, stderr  # the empty documents fail, by design
    assert "resuming batch" in stderr
    check_exactly_once(db, out)
    assert db_rows(db, "select count(*) from batches") == [(1,)]
    # finished steps were not run again: one succeeded 'read' per succeeded document
    reads = db_rows(db, "select flow_run_id, count(*) from task_runs where step = 'read' "
                        "and status = 'succeeded' group by flow_run_id having count(*) > 1")
    assert reads == []


def test_resume_by_batch_id_and_retry_failed_documents(tmp_path, store_url):
    make_inputs(tmp_path / "in")
    db, out = store_url, tmp_path / "results.csv"
    proc = start(tmp_path, db, out)
    proc.communicate(timeout=120)
    assert proc.returncode == 1
    ((batch,),) = db_rows(db, "select id from batches")
    # a resume of a finished batch reports its failures as they were (issue 13.10: they
    # printed as "[None] step 'None': None")
    resumed = run_cli("resume", batch, "--plugin", TOYS, "--db", db, "-q")
    assert resumed.returncode == 1 and "None" not in resumed.stderr
    assert resumed.stderr.count("[corrupt] step 'read':") == 3
    # fix the empty documents, then retry the failed ones inside the same batch
    for p in (tmp_path / "in").iterdir():
        if p.stat().st_size == 0:
            p.write_text("now it has five words")
    retry = run_cli("runs", "retry", batch, "--plugin", TOYS, "--db", db,
                    "--out", str(out), "-q")
    assert retry.returncode == 0, retry.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == N_DOCS and {r["status"] for r in rows} == {"succeeded"}
    assert len(db_rows(db, "select id from flow_runs")) == N_DOCS
    doc7 = str(tmp_path / 'in' / 'doc007.txt')
    attempts = db_rows(db, f"select attempt from flow_runs where document = '{doc7}'")
    assert attempts == [(2,)]
    again = run_cli("resume", batch, "--plugin", TOYS, "--db", db, "-q")
    assert again.returncode == 0  # nothing left to do: every document finished


def test_retry_one_failed_run_of_a_batch(tmp_path):
    make_inputs(tmp_path / "in")
    db, out = f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "results.csv"
    proc = start(tmp_path, db, out)
    proc.communicate(timeout=120)
    assert proc.returncode == 1
    ((batch,),) = db_rows(db, "select id from batches")
    failed = db_rows(db, "select id, document from flow_runs where status = 'failed' order by document")
    assert len(failed) == 3
    for p in (tmp_path / "in").iterdir():  # fix every empty document ...
        if p.stat().st_size == 0:
            p.write_text("now it has five words")
    (chosen, chosen_doc), others = failed[0], failed[1:]
    retry = run_cli("runs", "retry", batch, "--run", chosen, "--plugin", TOYS, "--db", db,
                    "--out", str(out), "-q")
    assert retry.returncode == 1, retry.stderr  # ... but retry one: the other two still failed
    assert db_rows(db, f"select status, attempt from flow_runs where id = '{chosen}'") == [("succeeded", 2)]
    for run_id, _doc in others:
        assert db_rows(db, f"select status, attempt from flow_runs where id = '{run_id}'") == [("failed", 1)]
    rows = {r["document"]: r["status"] for r in csv.DictReader(out.open())}
    assert len(rows) == N_DOCS and rows[chosen_doc] == "succeeded"
    assert sorted(d for d, st in rows.items() if st == "failed") == [d for _r, d in others]

    succeeded = db_rows(db, "select id from flow_runs where status = 'succeeded' limit 1")[0][0]
    for bad in (succeeded, "no-such-run"):
        refused = run_cli("runs", "retry", batch, "--run", bad, "--plugin", TOYS, "--db", db)
        assert refused.returncode == 2 and "--run" in refused.stderr


def test_two_runs_at_once_on_one_sqlite_file(tmp_path):
    """Two `docpipe run` processes writing to the same SQLite database at the same time."""
    make_inputs(tmp_path / "in")
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    a = start(tmp_path, db, tmp_path / "a.csv")
    b = start(tmp_path, db, tmp_path / "b.csv")
    for proc in (a, b):
        _out, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 1, stderr
    assert db_rows(db, "select count(*) from batches") == [(2,)]
    assert db_rows(db, "select count(*) from flow_runs") == [(2 * N_DOCS,)]
    per_batch = db_rows(db, "select batch_id, status, count(*) from flow_runs "
                            "group by batch_id, status order by batch_id, status")
    assert [(st, n) for _b, st, n in per_batch] == [("failed", 3), ("succeeded", N_DOCS - 3)] * 2
    tasks = db_rows(db, "select count(*) from task_runs where status = 'succeeded' and step = 'words'")
    assert tasks == [(2 * (N_DOCS - 3),)]
    assert db_rows(db, "pragma integrity_check") == [("ok",)]
    for name in ("a.csv", "b.csv"):
        assert len(list(csv.DictReader((tmp_path / name).open()))) == N_DOCS


@pytest.mark.slow
def test_resume_keeps_the_items_a_map_had_finished(tmp_path, store_url):
    """Issue 13.6: a map killed part-way used to start again from item 0 on resume."""
    (tmp_path / "in").mkdir()
    doc = tmp_path / "in" / "pages.txt"
    doc.write_text("\n".join(f"page {i}" for i in range(40)))
    flow = write_flow(tmp_path / "map.json", [
        {"id": "read", "block": "toy.read"},
        {"id": "each", "map": "lines", "as": "text", "block": "toy.sleep", "params": {"seconds": 0.1}},
    ], outputs=["slept"])
    out = tmp_path / "r.csv"
    args = [DOCPIPE, "run", str(flow), str(doc), "--plugin", TOYS, "--db", store_url,
            "--out", str(out), "-w", "1", "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(store_url, "select count(*) from task_runs where substr(step, 1, 5) = 'each[' "
                        "and status = 'succeeded'", 12, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = db_rows(store_url, "select count(*) from task_runs where substr(step, 1, 5) = 'each[' "
                                "and status = 'succeeded'")[0][0]
    assert 12 <= before < 40
    again = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    per_item = db_rows(store_url, "select step, count(*) from task_runs where substr(step, 1, 5) = 'each[' "
                                  "and status = 'succeeded' group by step")
    assert len(per_item) == 40 and {n for _, n in per_item} == {1}  # no item ran twice
    (row,) = list(csv.DictReader(out.open()))
    assert row["status"] == "succeeded" and len(json.loads(row["slept"])) == 40
