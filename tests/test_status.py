"""The one vocabulary: what the engine and the store record is a Status or an ErrorKind."""

from __future__ import annotations

import json

import sqlalchemy as sa

from docpipe.engine import Engine
from docpipe.errors import DocumentError
from docpipe.status import ErrorKind, Status
from docpipe.store import Store
from docpipe.store.schema import batches, flow_runs, task_runs


def test_members_are_their_strings():
    assert Status.FAILED == "failed" and json.dumps({Status.SUCCEEDED: Status.RUNNING}) == '{"succeeded": "running"}'
    kinds = {c.kind for c in _subclasses(DocumentError) if c.__module__ == "docpipe.errors"} | {DocumentError.kind}
    assert kinds == set(ErrorKind)


def _subclasses(cls: type) -> set[type]:
    return {s for c in cls.__subclasses__() for s in {c} | _subclasses(c)}


def test_a_toy_flow_records_only_statuses_and_kinds(plan, docs, tmp_path):
    p = plan([
        {"id": "read", "block": "toy.read"},
        {"id": "words", "block": "toy.words"},
        {"id": "up", "block": "toy.upper", "when": "words > 1"},
        {"id": "check", "block": "toy.fragile"},
    ])
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        with Engine(store, workers=1) as engine:
            result = engine.run(p, docs("one two", "one", "boom here", ""))
        with store.engine.connect() as conn:
            run_rows = conn.execute(sa.select(flow_runs.c.status, flow_runs.c.error_kind)).all()
            task_rows = conn.execute(sa.select(task_runs.c.status, task_runs.c.error_kind)).all()
            batch_status = conn.execute(sa.select(batches.c.status)).scalar_one()
    finally:
        store.close()
    statuses = {r.status for r in run_rows} | {t.status for t in task_rows} | {batch_status}
    kinds = {r.error_kind for r in run_rows} | {t.error_kind for t in task_rows}
    assert statuses <= set(Status)
    assert kinds - {None} <= set(ErrorKind)
    assert {"succeeded", "failed", "skipped"} <= statuses
    assert {"block_error", "corrupt"} <= kinds
    assert {r.status for r in result.results} == {"succeeded", "failed"}


def test_the_cli_takes_statuses_as_strings(tmp_path):
    from click.testing import CliRunner

    from docpipe.cli import main

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    ok = CliRunner().invoke(main, ["runs", "list", "--status", "failed"], env={"DOCPIPE_DB": db})
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(main, ["runs", "list", "--status", "FAILED"], env={"DOCPIPE_DB": db})
    assert bad.exit_code == 2
