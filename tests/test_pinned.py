"""Versions pinned (issue 18): a batch resumes on the flow definition, subflows and params it
started with, says what changed on disk since, and refuses other params."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from support import DOCPIPE, TOYS, run_cli

from docpipe.plugins import Registry
from docpipe.service.plans import plan_batch, plan_flow, subflows_of
from docpipe.store import Store

SUB = {"name": "sub", "version": "1", "outputs": ["upper"], "steps": [{"id": "up", "block": "toy.upper"}]}
CHANGED_SUB = {"name": "sub", "version": "2", "outputs": ["upper"],
               "steps": [{"id": "up", "expr": "'CHANGED'", "output": "upper"}]}


def flow(folder: Path, label: str = "'short' if words < 5 else 'long'") -> Path:
    (folder / "sub.json").write_text(json.dumps(SUB))
    path = folder / "flow.json"
    path.write_text(json.dumps({
        "name": "pinned", "version": "1", "outputs": ["upper", "words", "label"],
        "params": {"rounds": 10, "api_token": None},
        "steps": [{"id": "read", "block": "toy.read"},
                  {"id": "slow", "block": "toy.sleep", "params": {"seconds": 0.15}},
                  {"id": "dig", "block": "toy.digest", "params": {"rounds": "${params.rounds}"}},
                  {"id": "words", "block": "toy.words"},
                  {"id": "label", "expr": label, "output": "label"},
                  {"id": "inner", "subflow": "sub.json"}]}))
    return path


def inputs(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        (folder / f"d{i:02d}.txt").write_text(f"document {i} has words")
    return folder


def rows(url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def test_a_resume_runs_on_the_flow_and_subflow_it_started_with(tmp_path):
    """Kill `docpipe run` mid-batch, change the flow file and its subflow, resume: the batch
    finishes on the definitions it started with, and stderr says they changed."""
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path, docs = flow(tmp_path), inputs(tmp_path / "in", 12)
    proc = subprocess.Popen([DOCPIPE, "run", str(path), str(docs), "--plugin", TOYS, "--db", db, "-w", "1", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if rows(db, "select count(*) from flow_runs where status != 'running'")[0][0] >= 2:
                break
        except sa.exc.DBAPIError:
            pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ((batch, subflows),) = rows(db, "select id, subflows from batches")
    assert json.loads(subflows) == {"sub.json": SUB}  # recorded as the batch started
    left = rows(db, "select count(*) from flow_runs where status != 'running'")[0][0]
    assert left < 12, "the batch ended before the kill: nothing to resume"

    (tmp_path / "sub.json").write_text(json.dumps(CHANGED_SUB))
    flow(tmp_path, label="'CHANGED'")  # the flow file changes too (and writes sub.json back: change it again)
    (tmp_path / "sub.json").write_text(json.dumps(CHANGED_SUB))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()  # the recorded subflows are used, not files found from the current folder
    again = run_cli("run", str(path), str(docs), "--plugin", TOYS, "--db", db, "--resume", "-q",
                    "-o", str(tmp_path / "out.jsonl"), cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    assert f"resuming batch {batch}" in again.stderr
    assert f"flow pinned changed since batch {batch} started: resuming on the definition it started with " \
           "(version 1, hash " in again.stderr
    assert f"subflow sub.json of flow pinned changed since batch {batch} started" in again.stderr
    assert rows(db, "select count(*) from batches") == [(1,)]  # never a silent new batch
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(results) == 12
    assert {r["upper"] for r in results} == {f"DOCUMENT {i} HAS WORDS" for i in range(12)}
    assert {r["label"] for r in results} == {"short"}


def test_resume_by_batch_id_says_the_flow_file_changed(tmp_path):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path, docs = flow(tmp_path), inputs(tmp_path / "in", 2)
    first = run_cli("run", str(path), str(docs), "--plugin", TOYS, "--db", db, "-q")
    assert first.returncode == 0, first.stderr
    ((batch,),) = rows(db, "select id from batches")
    same = run_cli("resume", batch, "--plugin", TOYS, "--db", db, "-q")
    assert same.returncode == 0 and "changed" not in same.stderr
    flow(tmp_path, label="'CHANGED'")
    changed = run_cli("resume", batch[:8], "--plugin", TOYS, "--db", db, "-q")
    assert changed.returncode == 0, changed.stderr
    assert f"flow pinned changed since batch {batch} started: resuming on the definition it started with" \
        in changed.stderr


def test_resume_refuses_other_params_key_by_key(tmp_path, store_url):
    path, docs = flow(tmp_path), inputs(tmp_path / "in", 1)
    first = run_cli("run", str(path), str(docs), "--plugin", TOYS, "--db", store_url, "-q",
                    "-p", "rounds=5", "-p", "api_token=s3cret")
    assert first.returncode == 0, first.stderr
    batch = first.stderr.split("(batch ")[1].split(")")[0]
    other = run_cli("resume", batch, "--plugin", TOYS, "--db", store_url, "-q", "-p", "rounds=6",
                    "-p", "api_token=s3cret")
    assert other.returncode == 2, other.stderr
    assert f"batch {batch} started with other params" in other.stderr
    assert "rounds: recorded 5, given 6" in other.stderr
    assert "api_token" not in other.stderr  # secret params are exempt (recorded masked)
    also = run_cli("run", str(path), str(docs), "--plugin", TOYS, "--db", store_url, "-q", "--resume",
                   "-p", "rounds=7", "-p", "api_token=s3cret")
    assert also.returncode == 2 and "rounds: recorded 5, given 7" in also.stderr
    equal = run_cli("resume", batch, "--plugin", TOYS, "--db", store_url, "-q", "-p", "rounds=5",
                    "-p", "api_token=other")
    assert equal.returncode == 0, equal.stderr


def test_subflows_are_recorded_by_path_and_planned_from_the_record(tmp_path, monkeypatch):
    """Nested subflows, one in a sibling folder (allowed with DOCPIPE_SUBFLOW_DIRS): recorded by
    their paths relative to the flow's folder, and a recorded batch plans on those alone."""
    (tmp_path / "flows" / "parts").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "leaf.json").write_text(json.dumps(SUB))
    (tmp_path / "flows" / "parts" / "mid.json").write_text(json.dumps({
        "name": "mid", "version": "1", "outputs": ["upper"],
        "steps": [{"id": "leaf", "subflow": "../../shared/leaf.json"}]}))
    (tmp_path / "flows" / "main.json").write_text(json.dumps({
        "name": "nested", "version": "1", "outputs": ["upper"],
        "steps": [{"id": "read", "block": "toy.read"}, {"id": "mid", "subflow": "parts/mid.json"}]}))
    monkeypatch.setenv("DOCPIPE_SUBFLOW_DIRS", str(tmp_path / "shared"))
    registry = Registry(extra=(TOYS,))
    plan = plan_flow(tmp_path / "flows" / "main.json", registry)
    found = subflows_of(plan)
    assert set(found) == {"parts/mid.json", "../shared/leaf.json"}
    with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        flow_id = store.put_flow(plan.name, plan.version, plan.content_hash, plan.definition)
        batch = store.start_batch(flow_id, plan.params, 0)
        store.record_subflows(batch, found)
        assert store.batch(batch)["subflows"] == found
        for f in (tmp_path / "shared" / "leaf.json", tmp_path / "flows" / "parts" / "mid.json"):
            f.unlink()  # gone from disk: the record is enough
        monkeypatch.chdir(tmp_path / "shared")
        again = plan_batch(store, batch, registry)
        leaf = again.node("mid").subplan.node("leaf").subplan
        assert leaf.definition == SUB and [n.id for n in leaf.nodes] == ["up"]
        store.record_subflows(batch, {})
        with pytest.raises(Exception, match="mid.json"):  # without the record: the files on disk
            plan_batch(store, batch, registry)
