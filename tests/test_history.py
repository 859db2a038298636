"""History commands over real records: runs list filters, flows versions, metrics."""

from __future__ import annotations

import json
from pathlib import Path

from support import DOCPIPE, TOYS, run_cli, write_flow


def _run(tmp_path: Path, db: str, *extra: str) -> None:
    inputs = tmp_path / "in"
    if not inputs.exists():
        inputs.mkdir()
        (inputs / "a.txt").write_text("one two three")
        (inputs / "b.txt").write_text("")
    flow = write_flow(tmp_path / "f.json", [
        {"id": "read", "block": "toy.read"},
        {"id": "flaky", "block": "toy.flaky", "params": {"fail_times": 1},
         "retry": {"max_attempts": 2, "delay": 0, "on": ["ConnectionError"]}}])
    run_cli("run", str(flow), str(inputs), "--plugin", TOYS, "--db", db, "-q", *extra)


def test_runs_list_filters_and_correlation_ids(tmp_path):
    db = f"sqlite:///{tmp_path / 'd.db'}"
    _run(tmp_path, db, "--correlation-id", "ticket-1")
    listing = json.loads(run_cli("runs", "list", "--json", "--correlation-id", "ticket-1",
                                 "--db", db).stdout)
    assert sorted(Path(r["document"]).name for r in listing) == ["a.txt", "b.txt"]
    assert json.loads(run_cli("runs", "list", "--json", "--correlation-id", "nope",
                              "--db", db).stdout) == []
    failed = json.loads(run_cli("runs", "list", "--json", "--status", "failed", "--db", db).stdout)
    assert [Path(r["document"]).name for r in failed] == ["b.txt"]
    assert json.loads(run_cli("runs", "list", "--json", "--since", "1h", "--db", db).stdout)
    future = run_cli("runs", "list", "--json", "--since", "2099-01-01", "--db", db)
    assert json.loads(future.stdout) == []
    table = run_cli("runs", "list", "--db", db)
    assert "failed: 1" in table.stdout and "succeeded: 1" in table.stdout


def test_flow_versions_are_recorded_and_shown(tmp_path):
    db = f"sqlite:///{tmp_path / 'd.db'}"
    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"}])
    assert run_cli("flows", "push", str(flow), "--plugin", TOYS, "--db", db).returncode == 0
    write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"},
                                     {"id": "up", "block": "toy.upper"}], version="2")
    assert run_cli("flows", "push", str(flow), "--plugin", TOYS, "--db", db).returncode == 0
    listing = run_cli("flows", "list", "--db", db).stdout
    assert listing.count(" t ") + listing.count("│ t ") >= 2
    shown = json.loads(run_cli("flows", "show", "t", "--version", "1", "--db", db).stdout)
    assert [s["id"] for s in shown["steps"]] == ["read"]
    latest = json.loads(run_cli("flows", "show", "t", "--db", db).stdout)
    assert [s["id"] for s in latest["steps"]] == ["read", "up"]


def test_metrics_are_prometheus_text_from_the_records(tmp_path):
    db = f"sqlite:///{tmp_path / 'd.db'}"
    _run(tmp_path, db)
    proc = run_cli("metrics", "--db", db)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert 'docpipe_flow_runs_total{flow="t",status="succeeded"} 1.0' in text
    assert 'docpipe_flow_runs_total{flow="t",status="failed"} 1.0' in text
    assert 'docpipe_task_retries_total{block="toy.flaky"} 1.0' in text
    assert 'docpipe_task_failures_total{block="toy.read",error_kind="corrupt"} 1.0' in text
    assert 'docpipe_task_duration_seconds_count{block="toy.read"} 2.0' in text
    assert "docpipe_flow_runs_in_flight 0.0" in text


def _ids(db: str, **where: str) -> list[dict]:
    args = [a for k, v in where.items() for a in (f"--{k}", v)]
    return json.loads(run_cli("runs", "list", "--json", "--db", db, *args).stdout)


def test_runs_show_prints_outputs_as_json_and_takes_a_unique_prefix(tmp_path):
    db = f"sqlite:///{tmp_path / 'd.db'}"
    _run(tmp_path, db)
    (ok,) = _ids(db, status="succeeded")
    show = run_cli("runs", "show", ok["id"][:20], "--db", db)
    assert show.returncode == 0, show.stderr
    assert f"run {ok['id']}" in show.stdout
    assert "outputs:" in show.stdout and "text: one two three" in show.stdout
    assert "lines (read):" in show.stdout  # what a step wrote that is no flow output
    as_json = json.loads(run_cli("runs", "show", ok["id"][:20], "--json", "--db", db).stdout)
    assert as_json["id"] == ok["id"] and as_json["outputs"]["text"] == "one two three"
    assert [t["step"] for t in as_json["tasks"]][:1] == ["read"]
    assert as_json["tasks"][0]["outputs"]["lines"] == ["one two three"]
    text = run_cli("runs", "show", ok["id"][:20], "--output", "text", "--db", db)
    assert text.stdout == "one two three\n"
    missing = run_cli("runs", "show", ok["id"], "--output", "nope", "--db", db)
    assert missing.returncode == 2 and "has no output 'nope'" in missing.stderr
    ambiguous = run_cli("runs", "show", ok["id"][:4], "--db", db)  # both runs start alike
    assert ambiguous.returncode == 2 and "start of several run ids" in ambiguous.stderr
    none = run_cli("runs", "show", "ffff", "--db", db)
    assert none.returncode == 2 and "no run ffff" in none.stderr


def test_batch_ids_take_a_unique_prefix_too(tmp_path):
    db = f"sqlite:///{tmp_path / 'd.db'}"
    _run(tmp_path, db)
    batch = _ids(db)[0]["batch_id"]
    assert len(_ids(db, batch=batch[:8])) == 2
    retried = run_cli("runs", "retry", batch[:8], "--plugin", TOYS, "--db", db, "-q")
    assert retried.returncode == 1 and f"(batch {batch})" in retried.stderr  # b.txt is still empty
    resumed = run_cli("resume", batch[:8], "--plugin", TOYS, "--db", db, "-q")
    assert resumed.returncode == 1 and f"(batch {batch})" in resumed.stderr


def test_each_document_shows_its_own_duration_not_its_batchs(tmp_path):
    """Every document is admitted when the batch starts; one worker takes them in turn, so
    the last one finishes after all of them. Its duration is its own steps' time."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        (inputs / f"d{i}.txt").write_text(f"words {i}")
    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"},
                                            {"id": "z", "block": "toy.sleep", "params": {"seconds": 0.4}}])
    db = f"sqlite:///{tmp_path / 'd.db'}"
    assert run_cli("run", str(flow), str(inputs), "--plugin", TOYS, "--db", db, "-q", "-w", "1").returncode == 0
    rows = _ids(db)
    assert max(r["in_flight"] for r in rows) > 1.1  # admitted together, waited in turn
    assert all(0.35 < r["duration"] < 0.9 for r in rows), rows


def test_output_off_a_terminal_is_not_wrapped(tmp_path):
    import os
    import subprocess


    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "in"
    deep.mkdir(parents=True)
    (deep / "empty.txt").write_text("")
    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"}])
    db = f"sqlite:///{tmp_path / 'd.db'}"
    run_cli("run", str(flow), str(deep), "--plugin", TOYS, "--db", db, "-q")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # a pipe, as in cron or CI
    listing = subprocess.run([DOCPIPE, "runs", "list", "--db", db], env=env, capture_output=True,
                             text=True, timeout=60).stdout
    (run,) = _ids(db)
    (row,) = [line for line in listing.splitlines() if run["id"] in line]
    assert str(deep / "empty.txt") in row and "empty file" in row and len(row) > 200
