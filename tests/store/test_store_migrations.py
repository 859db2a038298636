"""Schema migrations on real SQLite and PostgreSQL: fresh databases, databases made before
migrations existed, a newer docpipe's database, and processes racing to create one."""

from __future__ import annotations

import json
import multiprocessing
import time
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from docpipe.store import RunStarted, Store, StoreSchemaError, migrate, task_succeeded
from docpipe.store.migrate import BASELINE, HEAD, LOCATION, current_revision
from docpipe.store.schema import metadata

T0 = 1_700_000_000.0

# The schema as docpipe created it before migrations (metadata.create_all, no alembic_version),
# frozen here: revision 0001 must keep opening databases made with exactly this.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
v1 = sa.MetaData()
v1_flows = sa.Table(
    "flows", v1,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("content_hash", sa.String(128), nullable=False),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.UniqueConstraint("name", "version", "content_hash", name="uq_flows_name_version_hash"),
)
v1_batches = sa.Table(
    "batches", v1,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("flow_id", BigId, sa.ForeignKey("flows.id"), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("params", sa.Text),
    sa.Column("argv", sa.Text),
    sa.Column("n_inputs", sa.Integer, nullable=False),
    sa.Column("counts", sa.Text),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("finished_at", sa.Double),
)
v1_flow_runs = sa.Table(
    "flow_runs", v1,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.id"), nullable=False),
    sa.Column("flow_id", BigId, sa.ForeignKey("flows.id"), nullable=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("error_kind", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("outputs", sa.Text),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("finished_at", sa.Double),
    sa.Index("ix_flow_runs_status", "status"),
    sa.Index("ix_flow_runs_batch_id", "batch_id"),
    sa.Index("ix_flow_runs_started_at", "started_at"),
)
v1_task_runs = sa.Table(
    "task_runs", v1,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("flow_run_id", sa.String(64), nullable=False),
    sa.Column("step", sa.String(255), nullable=False),
    sa.Column("block", sa.String(255)),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("worker", sa.String(64)),
    sa.Column("error_kind", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("traceback", sa.Text),
    sa.Index("ix_task_runs_flow_run_id", "flow_run_id"),
)


def _schema_diff(url: str) -> list[Any]:
    """What Alembic's autogenerate finds between the database and schema.py (``[]``: the same)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata))
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return current_revision(conn)
    finally:
        engine.dispose()


def test_head_is_the_newest_revision() -> None:
    script = ScriptDirectory(LOCATION)
    assert script.get_current_head() == HEAD
    assert [rev.revision for rev in script.walk_revisions()][-1] == BASELINE


def test_a_new_database_is_created_at_head_and_matches_the_schema(store_url: str) -> None:
    with Store(store_url) as store:
        flow_id = store.put_flow("f", "1", "h", {})
        store.start_batch(flow_id, {}, 1, inputs=["a.pdf"])
    assert _revision(store_url) == HEAD
    assert _schema_diff(store_url) == []
    with Store(store_url) as again:  # opening at head changes nothing
        assert len(again.list_batches()) == 1
    assert _revision(store_url) == HEAD


def test_a_database_from_before_migrations_is_upgraded_and_keeps_its_runs(store_url: str) -> None:
    engine = sa.create_engine(store_url)
    v1.create_all(engine)
    with engine.begin() as conn:  # what the old store wrote for one batch of two runs
        conn.execute(v1_flows.insert().values(id=1, name="invoices", version="1.0", content_hash="h1",
                                              definition=json.dumps({"steps": []}), created_at=T0))
        conn.execute(v1_batches.insert().values(id="b1", flow_id=1, status="failed", params="{}", argv=None,
                                                n_inputs=2, counts=json.dumps({"succeeded": 1, "failed": 1}),
                                                started_at=T0, finished_at=T0 + 5))
        conn.execute(v1_flow_runs.insert().values(
            id="r1", batch_id="b1", flow_id=1, document="a.pdf", status="succeeded",
            outputs=json.dumps({"doc_class": "invoice"}), started_at=T0, finished_at=T0 + 1))
        conn.execute(v1_flow_runs.insert().values(
            id="r2", batch_id="b1", flow_id=1, document="b.pdf", status="failed", error_kind="corrupt",
            error="bad xref", started_at=T0 + 1, finished_at=T0 + 2))
        conn.execute(v1_task_runs.insert().values(
            flow_run_id="r1", step="ocr", block="ocr.tesseract", attempt=1, status="succeeded", started_at=T0,
            finished_at=T0 + 0.5, worker="pid:1"))
        conn.execute(v1_task_runs.insert().values(
            flow_run_id="r2", step="ocr", block="ocr.tesseract", attempt=1, status="failed", started_at=T0 + 1,
            finished_at=T0 + 1.5, error_kind="corrupt", traceback="Traceback"))
        assert not sa.inspect(conn).has_table("alembic_version")
    engine.dispose()

    with Store(store_url) as store:
        runs = store.list_runs()
        assert [(r["id"], r["status"], r["attempt"], r["correlation_id"]) for r in runs] == [
            ("r2", "failed", 1, None),
            ("r1", "succeeded", 1, None),
        ]
        run = store.get_run("r1")
        assert run is not None and run["outputs"] == {"doc_class": "invoice"}
        assert [(t["step"], t["worker"], t["outputs"]) for t in run["tasks"]] == [("ocr", "pid:1", None)]
        batch = store.batch("b1")
        assert batch is not None and batch["counts"] == {"succeeded": 1, "failed": 1}
        assert batch["correlation_id"] is None and store.batch_inputs("b1") == []
        assert store.failed_documents("b1") == ["b.pdf"]
        assert store.resume_state("b1")["a.pdf"]["steps"] == {}  # old records hold no task outputs
        # the new columns are there and written
        new_batch = store.start_batch(1, {}, 1, inputs=["c.pdf"], correlation_id="c-1")
        store.writer.flow_run_started(RunStarted("r3", new_batch, 1, "c.pdf", T0 + 10, "c-1"))
        store.writer.task_run(task_succeeded("r3", "ocr", "ocr.tesseract", 1, T0, T0, "w", {"text": "t"}))
        assert store.resume_state(new_batch)["c.pdf"]["steps"] == {"ocr": {"text": "t"}}
        assert [r["id"] for r in store.list_runs(correlation_id="c-1")] == ["r3"]
    assert _revision(store_url) == HEAD
    assert _schema_diff(store_url) == []  # the upgraded database is the same as a new one
    engine = sa.create_engine(store_url)
    try:
        inspector = sa.inspect(engine)
        assert {"correlation_id", "attempt"} <= {c["name"] for c in inspector.get_columns("flow_runs")}
        assert "outputs" in {c["name"] for c in inspector.get_columns("task_runs")}
        assert "ix_flow_runs_correlation_id" in {i["name"] for i in inspector.get_indexes("flow_runs")}
    finally:
        engine.dispose()


def test_a_newer_docpipes_database_is_refused(store_url: str) -> None:
    Store(store_url).close()
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(StoreSchemaError, match="revision '9999', which this docpipe does not know"):
        Store(store_url)
    assert _revision(store_url) == "9999"  # left as it was


def test_opening_a_store_at_head_runs_no_migration(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the head, opening costs one query: Alembic (imported only in ``_migrate``) is not needed."""
    Store(store_url).close()

    def fail(*args: object) -> None:
        raise AssertionError("migrated a database already at the head")

    monkeypatch.setattr(migrate, "_migrate", fail)
    Store(store_url).close()


def _open_at_once(url: str, barrier: Any, name: str) -> None:
    """Child process body: wait for the others, open the new database, write a batch."""
    barrier.wait(30)
    with Store(url) as store:
        flow_id = store.put_flow("shared", "1", "h", {})
        batch_id = store.start_batch(flow_id, {"who": name}, 1, inputs=[f"{name}.pdf"])
        store.writer.flow_run_started(RunStarted(f"run-{name}", batch_id, flow_id, f"{name}.pdf", time.time()))


def test_processes_opening_a_new_database_at_once_all_succeed(store_url: str) -> None:
    # fork: the children start with everything imported, so they really open the database together
    ctx = multiprocessing.get_context("fork")
    names = ["p1", "p2", "p3"]
    barrier = ctx.Barrier(len(names))
    procs = [ctx.Process(target=_open_at_once, args=(store_url, barrier, name)) for name in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert _revision(store_url) == HEAD
    with Store(store_url) as store:
        assert sorted(b["params"]["who"] for b in store.list_batches()) == names
        assert sorted(r["document"] for r in store.list_runs()) == ["p1.pdf", "p2.pdf", "p3.pdf"]
        assert len(store.list_flows()) == 1
