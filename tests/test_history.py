"""History commands over real records: runs list filters, flows versions, metrics."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TOYS, run_cli, write_flow


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
