"""The run-record store on real databases, no mocks: SQLite files and a private PostgreSQL server.

Tests taking ``store_url`` (tests/conftest.py) run once per database; the
PostgreSQL one is started by tests/pg.py (or ``DOCPIPE_TEST_PG_URL`` names one).
"""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from docpipe.store import DEFAULT_URL, RunFinished, RunStarted, Store, TaskRecord, new_id
from docpipe.store.schema import flows, task_runs

T0 = 1_700_000_000.0


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _task(run_id: str, step: str, started: float, **kw: Any) -> TaskRecord:
    """A task-run record without outputs."""
    return TaskRecord(
        run_id,
        step,
        kw.get("block", f"blk.{step}"),
        kw.get("attempt", 1),
        kw.get("status", "ok"),
        started,
        started + kw.get("took", 0.5),
        kw.get("worker", "main"),
        error_kind=kw.get("error_kind"),
        error=kw.get("error"),
        traceback=kw.get("traceback"),
    )


@pytest.fixture
def store(store_url: str) -> Any:
    s = Store(store_url)
    yield s
    s.close()


def test_put_flow_is_idempotent_and_versioned(store: Store) -> None:
    definition = {"name": "invoices", "steps": [{"id": "ocr", "block": "ocr.tesseract"}]}
    first = store.put_flow("invoices", "1.0", "h1", definition)
    assert store.put_flow("invoices", "1.0", "h1", definition) == first
    edited = store.put_flow("invoices", "1.0", "h2", definition)
    bumped = store.put_flow("invoices", "1.1", "h1", definition)
    other = store.put_flow("receipts", "1.0", "h1", definition)
    assert len({first, edited, bumped, other}) == 4
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(flows).order_by(flows.c.id)).mappings().all()
    assert [(r["name"], r["version"], r["content_hash"]) for r in rows] == [
        ("invoices", "1.0", "h1"),
        ("invoices", "1.0", "h2"),
        ("invoices", "1.1", "h1"),
        ("receipts", "1.0", "h1"),
    ]
    assert all(r["created_at"] > 0 for r in rows)
    assert json.loads(rows[0]["definition"]) == definition


def test_batch_runs_and_tasks_round_trip(store: Store) -> None:
    flow_id = store.put_flow("invoices", "2.0", "abc", {"steps": []})
    batch_id = store.start_batch(flow_id, {"lang": "en"}, 3, argv=["docpipe", "run", "x"])
    assert len(batch_id) == 32
    w = store.writer
    w.flow_run_started(RunStarted("run-a", batch_id, flow_id, "a.pdf", T0))
    w.flow_run_started(RunStarted("run-b", batch_id, flow_id, "b.pdf", T0 + 1))
    # Tasks reported out of start order; get_run orders them by started_at.
    w.task_run(_task("run-a", "classify", T0 + 0.6, worker="pid:1234"))
    w.task_run(_task("run-a", "ocr", T0 + 0.1, worker="thread-3"))
    w.task_run(
        _task(
            "run-b",
            "ocr",
            T0 + 1.1,
            status="failed",
            error_kind="corrupt",
            error="bad xref",
            traceback="Traceback ...",
        )
    )
    # run-a starts and finishes within the same flush: insert before update.
    w.flow_run_finished(RunFinished("run-a", "ok", T0 + 2, outputs={"doc_class": "invoice", "at": Path("x")}))
    w.flush()
    # run-b finishes in a later flush; run-c is still running.
    w.flow_run_finished(RunFinished("run-b", "failed", T0 + 3, error_kind="corrupt", error="bad xref",
                                    failed_step="ocr", outputs={}))
    w.flow_run_started(RunStarted("run-c", batch_id, flow_id, "c.pdf", T0 + 4))
    store.finish_batch(batch_id, "failed", {"ok": 1, "failed": 1, "running": 1})

    runs = store.list_runs()
    assert [r["id"] for r in runs] == ["run-c", "run-b", "run-a"]
    a = runs[2]
    assert a == {
        "id": "run-a",
        "batch_id": batch_id,
        "flow": "invoices",
        "flow_version": "2.0",
        "document": "a.pdf",
        "status": "ok",
        "error_kind": None,
        "error": None,
        "failed_step": None,
        "started_at": T0,
        "finished_at": T0 + 2,
        "correlation_id": None,
        "attempt": 1,
        "duration": 2.0,
    }
    assert runs[0]["status"] == "running" and runs[0]["duration"] is None
    assert (runs[1]["error_kind"], runs[1]["failed_step"]) == ("corrupt", "ocr")

    run = store.get_run("run-a")
    assert run is not None
    assert run["outputs"] == {"doc_class": "invoice", "at": "x"}
    assert run["flow_id"] == flow_id
    assert [t["step"] for t in run["tasks"]] == ["ocr", "classify"]
    assert run["tasks"][0] == {
        "step": "ocr",
        "block": "blk.ocr",
        "attempt": 1,
        "status": "ok",
        "started_at": T0 + 0.1,
        "finished_at": T0 + 0.6,
        "duration": pytest.approx(0.5),
        "worker": "thread-3",
        "error_kind": None,
        "error": None,
        "traceback": None,
        "outputs": None,
        "provenance": None,
    }
    failed = store.get_run("run-b")
    assert failed is not None
    assert failed["tasks"][0]["traceback"] == "Traceback ..."
    assert (failed["status"], failed["error_kind"], failed["error"]) == (
        "failed",
        "corrupt",
        "bad xref",
    )
    assert store.get_run("nope") is None

    outputs = store.batch_outputs(batch_id)
    assert [(o["document"], o["status"]) for o in outputs] == [
        ("a.pdf", "ok"),
        ("b.pdf", "failed"),
        ("c.pdf", "running"),
    ]
    assert outputs[0]["outputs"] == {"doc_class": "invoice", "at": "x"}
    assert outputs[2]["outputs"] is None

    (batch,) = store.list_batches()
    assert batch["id"] == batch_id and batch["status"] == "failed"
    assert batch["params"] == {"lang": "en"}
    assert batch["argv"] == ["docpipe", "run", "x"]
    assert batch["counts"] == {"ok": 1, "failed": 1, "running": 1}
    assert (batch["flow"], batch["flow_version"], batch["n_inputs"]) == ("invoices", "2.0", 3)
    assert batch["duration"] is not None and batch["duration"] >= 0


def test_list_runs_filters_and_pages(store: Store) -> None:
    f1 = store.put_flow("one", "1", "h", {})
    f2 = store.put_flow("two", "1", "h", {})
    b1 = store.start_batch(f1, {}, 4)
    b2 = store.start_batch(f2, {}, 1)
    for i in range(4):
        store.writer.flow_run_started(RunStarted(f"r{i}", b1, f1, f"{i}.pdf", T0 + i))
        status = "ok" if i % 2 else "failed"
        store.writer.flow_run_finished(RunFinished(f"r{i}", status, T0 + i + 0.5, outputs={"i": i}))
    store.writer.flow_run_started(RunStarted("x", b2, f2, "x.pdf", T0 + 10))

    assert [r["id"] for r in store.list_runs(status="ok")] == ["r3", "r1"]
    assert [r["id"] for r in store.list_runs(status="failed")] == ["r2", "r0"]
    assert [r["id"] for r in store.list_runs(status="running")] == ["x"]
    assert [r["id"] for r in store.list_runs(flow="two")] == ["x"]
    assert [r["id"] for r in store.list_runs(batch_id=b1, limit=2, offset=1)] == ["r2", "r1"]
    assert store.list_runs(flow="two", status="ok") == []
    assert [b["id"] for b in store.list_batches(limit=1)] in ([b1], [b2])


def test_flush_makes_records_visible_to_another_store(store_url: str) -> None:
    writer_store, reader_store = Store(store_url), Store(store_url)
    try:
        flow_id = writer_store.put_flow("f", "1", "h", {})
        batch_id = writer_store.start_batch(flow_id, {}, 1)
        writer_store.writer.flow_run_started(RunStarted("r", batch_id, flow_id, "d.pdf", T0))
        writer_store.writer.task_run(_task("r", "ocr", T0))
        writer_store.writer.flow_run_finished(RunFinished("r", "ok", T0 + 1, outputs={"k": [1, 2]}))
        writer_store.writer.flush()
        run = reader_store.get_run("r")
        assert run is not None
        assert run["status"] == "ok" and run["outputs"] == {"k": [1, 2]}
        assert len(run["tasks"]) == 1
    finally:
        writer_store.close()
        reader_store.close()


def test_many_records_are_written_in_order(store: Store) -> None:
    """More rows than one bulk statement holds, with an odd remainder."""
    flow_id = store.put_flow("f", "1", "h", {})
    batch_id = store.start_batch(flow_id, {}, 777)
    for i in range(777):
        store.writer.flow_run_started(RunStarted(f"r{i}", batch_id, flow_id, f"{i}.pdf", T0 + i))
        store.writer.task_run(_task(f"r{i}", "s", T0 + i))
        store.writer.flow_run_finished(RunFinished(f"r{i}", "ok", T0 + i + 1, outputs={"i": i}))
    outputs = store.batch_outputs(batch_id)
    assert [o["document"] for o in outputs] == [f"{i}.pdf" for i in range(777)]
    assert [o["outputs"] for o in outputs] == [{"i": i} for i in range(777)]
    with store.engine.connect() as conn:
        ids = conn.execute(sa.select(task_runs.c.flow_run_id).order_by(task_runs.c.id)).scalars()
        assert list(ids) == [f"r{i}" for i in range(777)]


def test_writer_error_surfaces_from_flush_and_close(store_url: str) -> None:
    store = Store(store_url)
    flow_id = store.put_flow("f", "1", "h", {})
    batch_id = store.start_batch(flow_id, {}, 2)
    store.writer.flow_run_started(RunStarted("bad", batch_id, flow_id, "bad.pdf", T0))
    store.writer.task_run(TaskRecord("bad", "ocr", "b", 1, "ok", object(), None, None))  # type: ignore[arg-type]
    with pytest.raises(sa.exc.DBAPIError) as caught:
        store.writer.flush()
    assert "2 run records could not be written" in "\n".join(caught.value.__notes__)
    store.writer.flush()  # reported once; the writer keeps going
    store.writer.flow_run_started(RunStarted("good", batch_id, flow_id, "good.pdf", T0))
    assert [r["id"] for r in store.list_runs()] == ["good"]
    store.writer.task_run(TaskRecord("good", "ocr", "b", "not-an-int", "ok", object(), None, None))  # type: ignore[arg-type]
    with pytest.raises(sa.exc.DBAPIError):
        store.close()
    store.close()  # idempotent once reported


def test_unencodable_outputs_fail_only_that_run(store: Store) -> None:
    flow_id = store.put_flow("f", "1", "h", {})
    batch_id = store.start_batch(flow_id, {}, 2)
    for run_id in ("odd", "fine"):
        store.writer.flow_run_started(RunStarted(run_id, batch_id, flow_id, f"{run_id}.pdf", T0))
    store.writer.flow_run_finished(RunFinished("odd", "ok", T0 + 1, outputs={("tuple", "key"): 1}))
    store.writer.flow_run_finished(RunFinished("fine", "ok", T0 + 1, outputs={"k": 1}))
    with pytest.raises(ValueError, match="outputs of flow run 'odd' cannot be stored"):
        store.writer.flush()
    outputs = {o["id"]: (o["status"], o["outputs"]) for o in store.batch_outputs(batch_id)}
    assert outputs == {"odd": ("ok", None), "fine": ("ok", {"k": 1})}


def test_new_id_is_a_time_ordered_uuid() -> None:
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    assert len(first) == 32 and first < second
    assert uuid.UUID(first).version == 7


def test_default_url_env_and_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOCPIPE_DB", raising=False)
    with Store() as default:
        assert default.url == DEFAULT_URL
    assert (tmp_path / ".docpipe" / "docpipe.db").is_file()
    monkeypatch.setenv("DOCPIPE_DB", _url(tmp_path / "nested" / "dir" / "env.db"))
    with Store() as from_env:
        assert from_env.url.endswith("env.db")
        with from_env.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert (tmp_path / "nested" / "dir" / "env.db").is_file()
    with Store("sqlite://") as memory:
        flow_id = memory.put_flow("f", "1", "h", {})
        batch_id = memory.start_batch(flow_id, {}, 1)
        memory.writer.flow_run_started(RunStarted("r", batch_id, flow_id, "d", T0))
        assert [r["id"] for r in memory.list_runs()] == ["r"]


def _write_from_process(url: str, name: str, n_runs: int, n_tasks: int) -> None:
    """Child process body: one Store writing ``n_runs`` runs of ``n_tasks`` tasks each."""
    store = Store(url)
    flow_id = store.put_flow("shared", "1", "h", {"steps": []})
    batch_id = store.start_batch(flow_id, {"who": name}, n_runs)
    w = store.writer
    for i in range(n_runs):
        run_id = f"{name}-{i}"
        now = time.time()
        w.flow_run_started(RunStarted(run_id, batch_id, flow_id, f"{i}.pdf", now))
        for j in range(n_tasks):
            w.task_run(_task(run_id, f"s{j}", now, worker=name))
        w.flow_run_finished(RunFinished(run_id, "ok", time.time(), outputs={"i": i}))
        if i % 50 == 0:
            time.sleep(0.01)  # let the two writers interleave
    store.finish_batch(batch_id, "ok", {"ok": n_runs})
    store.close()


def test_two_processes_write_one_database_concurrently(store_url: str) -> None:
    url = store_url
    n_runs, n_tasks = 500, 4
    ctx = multiprocessing.get_context("fork")  # separate processes, without re-importing everything
    procs = [ctx.Process(target=_write_from_process, args=(url, name, n_runs, n_tasks)) for name in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Store(url) as store:
        batches = store.list_batches()
        assert sorted(b["params"]["who"] for b in batches) == ["p1", "p2"]
        assert {b["status"] for b in batches} == {"ok"}
        assert len({b["flow_id"] for b in batches}) == 1  # put_flow raced, one row
        runs = store.list_runs(limit=10_000)
        assert len(runs) == 2 * n_runs
        assert {r["status"] for r in runs} == {"ok"}
        with store.engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(task_runs)).scalar()
        assert count == 2 * n_runs * n_tasks
        for b in batches:
            outputs = store.batch_outputs(b["id"])
            assert [o["outputs"] for o in outputs] == [{"i": i} for i in range(n_runs)]
