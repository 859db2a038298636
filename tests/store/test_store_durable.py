"""The store's durable-run API on SQLite and PostgreSQL: batch inputs, correlation ids,
resumed runs, task outputs and resume state, flow versions, filters and counts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from docpipe.status import Status
from docpipe.store import RunFinished, RunResumed, RunStarted, Store, TaskRecord
from docpipe.store.schema import task_runs

SUCCEEDED, FAILED = Status.SUCCEEDED, Status.FAILED

T0 = 1_700_000_000.0


#: what resume_state says of a run that has not failed
NO_ERROR = {"error_kind": None, "error": None, "failed_step": None}


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def _task(run_id: str, step: str, attempt: int = 1, status: str = SUCCEEDED, outputs: Any = None,
          started: float = T0) -> TaskRecord:
    """A task record of block ``blk.<step>`` that took 0.1 s."""
    return TaskRecord(run_id, step, f"blk.{step}", attempt, status, started, started + 0.1, "main", outputs=outputs)


def test_start_batch_records_inputs_and_correlation_id(store: Store) -> None:
    definition = {"name": "invoices", "version": "2", "steps": [{"id": "ocr", "block": "ocr.tesseract"}]}
    flow_id = store.put_flow("invoices", "2", "h2", definition)
    docs = [f"in/{i:04d}.pdf" for i in range(700)]
    docs[3] = "in/ünïcödé name.pdf"
    batch_id = store.start_batch(flow_id, {"lang": "de"}, len(docs), ["docpipe", "run"], inputs=docs,
                                 correlation_id="order-17")
    assert store.batch_inputs(batch_id) == docs

    batch = store.batch(batch_id)
    assert batch is not None
    assert batch["id"] == batch_id and batch["flow_id"] == flow_id
    assert (batch["flow"], batch["flow_version"], batch["content_hash"]) == ("invoices", "2", "h2")
    assert batch["definition"] == definition
    assert batch["params"] == {"lang": "de"} and batch["argv"] == ["docpipe", "run"]
    assert (batch["status"], batch["counts"], batch["finished_at"]) == ("running", None, None)
    assert batch["n_inputs"] == 700 and batch["correlation_id"] == "order-17"

    store.finish_batch(batch_id, "interrupted", {"succeeded": 3})
    store.resume_batch(batch_id)
    resumed = store.batch(batch_id)
    assert resumed is not None and (resumed["status"], resumed["finished_at"]) == ("running", None)
    store.finish_batch(batch_id, "succeeded", {"succeeded": 700})
    done = store.batch(batch_id)
    assert done is not None and done["status"] == "succeeded" and done["counts"] == {"succeeded": 700}
    assert done["duration"] is not None

    # the old signature still works: no inputs, no correlation id
    plain = store.start_batch(flow_id, {}, 2)
    assert store.batch_inputs(plain) == []
    found = store.batch(plain)
    assert found is not None and found["correlation_id"] is None
    assert store.batch("nope") is None and store.batch_inputs("nope") == []
    with pytest.raises(ValueError, match="n_inputs is 3 but 2 inputs"):
        store.start_batch(flow_id, {}, 3, inputs=["a", "b"])
    with pytest.raises(KeyError):
        store.resume_batch("nope")


def test_correlation_ids_time_windows_and_counts(store: Store) -> None:
    f1 = store.put_flow("one", "1", "h", {})
    f2 = store.put_flow("two", "1", "h", {})
    b1 = store.start_batch(f1, {}, 6, correlation_id="batch-corr")
    b2 = store.start_batch(f2, {}, 1)
    w = store.writer
    for i in range(6):
        w.flow_run_started(RunStarted(f"r{i}", b1, f1, f"{i}.pdf", T0 + i, "even" if i % 2 == 0 else "odd"))
        if i < 4:
            w.flow_run_finished(RunFinished(f"r{i}", SUCCEEDED if i % 3 else FAILED, T0 + i + 0.5, outputs={}))
    w.flow_run_started(RunStarted("x", b2, f2, "x.pdf", T0 + 10))  # no correlation id

    assert [r["id"] for r in store.list_runs(correlation_id="even")] == ["r4", "r2", "r0"]
    assert [r["correlation_id"] for r in store.list_runs(batch_id=b1)] == ["odd", "even"] * 3
    assert [r["id"] for r in store.list_runs(since=T0 + 2, until=T0 + 5)] == ["r4", "r3", "r2"]
    assert [r["id"] for r in store.list_runs(since=T0 + 5)] == ["x", "r5"]
    assert [r["id"] for r in store.list_runs(until=T0 + 1)] == ["r0"]
    assert [r["id"] for r in store.list_runs(correlation_id="odd", status=SUCCEEDED)] == ["r1"]
    assert store.list_runs(correlation_id="missing") == []

    assert store.count_runs() == {SUCCEEDED: 2, FAILED: 2, "running": 3}
    assert store.count_runs(flow="one") == {SUCCEEDED: 2, FAILED: 2, "running": 2}
    assert store.count_runs(flow="two") == {"running": 1}
    assert store.count_runs(batch_id=b1, correlation_id="even") == {FAILED: 1, SUCCEEDED: 1, "running": 1}
    assert store.count_runs(since=T0 + 3, until=T0 + 10) == {FAILED: 1, "running": 2}
    assert store.count_runs(status=FAILED, flow="one") == {FAILED: 2}
    assert store.count_runs(flow="none") == {}


def test_resumed_runs_count_attempts_in_report_order(store: Store) -> None:
    flow_id = store.put_flow("f", "1", "h", {})
    batch_id = store.start_batch(flow_id, {}, 2)
    w = store.writer
    w.flow_run_started(RunStarted("a", batch_id, flow_id, "a.pdf", T0))
    w.flow_run_started(RunStarted("b", batch_id, flow_id, "b.pdf", T0))
    w.flow_run_finished(RunFinished("a", FAILED, T0 + 1, error_kind="timeout", error="too slow",
                                    outputs={"partial": 1}))
    w.flush()
    (a,) = store.list_runs(status=FAILED)
    assert (a["attempt"], a["error_kind"]) == (1, "timeout")

    w.flow_run_resumed(RunResumed("a", T0 + 100))  # a later process picks it up
    w.flow_run_resumed(RunResumed("b", T0 + 100))  # died while running: never finished
    w.flush()
    run = store.get_run("a")
    assert run is not None
    assert (run["status"], run["attempt"], run["started_at"]) == ("running", 2, T0 + 100)
    assert (run["finished_at"], run["error_kind"], run["error"], run["outputs"]) == (None, None, None, None)

    # finished, resumed and finished again before the writer wakes: applied in that order
    w.flow_run_finished(RunFinished("a", FAILED, T0 + 101, error_kind="block", error="boom", outputs={}))
    w.flow_run_resumed(RunResumed("a", T0 + 102))
    w.flow_run_finished(RunFinished("a", SUCCEEDED, T0 + 103, outputs={"k": "v"}))
    w.flow_run_finished(RunFinished("b", SUCCEEDED, T0 + 104, outputs={}))
    runs = {r["id"]: r for r in store.batch_outputs(batch_id)}
    assert (runs["a"]["status"], runs["a"]["attempt"], runs["a"]["outputs"]) == (SUCCEEDED, 3, {"k": "v"})
    assert runs["a"]["duration"] == pytest.approx(1.0)
    assert (runs["b"]["status"], runs["b"]["attempt"]) == (SUCCEEDED, 2)
    assert store.count_runs(batch_id=batch_id) == {SUCCEEDED: 2}


def test_task_outputs_and_resume_state(store: Store) -> None:
    flow_id = store.put_flow("f", "1", "h", {})
    docs = ["a.pdf", "b.pdf", "c.pdf", "d.pdf"]
    batch_id = store.start_batch(flow_id, {}, 4, inputs=docs)
    other = store.start_batch(flow_id, {}, 1)
    w = store.writer
    for doc in docs[:3]:
        w.flow_run_started(RunStarted(f"run-{doc}", batch_id, flow_id, doc, T0))
    w.flow_run_started(RunStarted("run-other", other, flow_id, "a.pdf", T0))
    # a.pdf: ocr retried once, then classify; a skipped step and an old 11-field record
    w.task_run(_task("run-a.pdf", "ocr", 1, "retrying", {"text": "wrong"}))
    w.task_run(_task("run-a.pdf", "ocr", 2, SUCCEEDED, {"text": "hello", "pages": [1, 2]}))
    w.task_run(_task("run-a.pdf", "classify", 1, SUCCEEDED, {"doc_class": "invoice", "score": 0.9}))
    w.task_run(_task("run-a.pdf", "translate", 1, "skipped", None))
    w.task_run(_task("run-a.pdf", "legacy", 1))  # succeeded, but recorded without outputs
    w.task_run(_task("run-a.pdf", "sink", 1, SUCCEEDED, {}))  # wrote nothing: done all the same
    w.task_run(_task("run-a.pdf", "pages[0]", 1, SUCCEEDED, {"lang": "en"}))
    w.flow_run_finished(RunFinished("run-a.pdf", SUCCEEDED, T0 + 1, outputs={"doc_class": "invoice"}))
    # b.pdf: ocr ran, then the process died; after a resume ocr ran again (a later record wins)
    w.task_run(_task("run-b.pdf", "ocr", 1, SUCCEEDED, {"text": "first"}))
    w.task_run(_task("run-b.pdf", "classify", 1, FAILED, None))
    w.flow_run_resumed(RunResumed("run-b.pdf", T0 + 50))
    w.task_run(_task("run-b.pdf", "ocr", 1, SUCCEEDED, {"text": "second"}, started=T0 + 50))
    # c.pdf: started, nothing finished; d.pdf: never started; run-other: another batch
    w.task_run(_task("run-other", "ocr", 1, SUCCEEDED, {"text": "elsewhere"}))

    state = store.resume_state(batch_id)
    assert set(state) == {"a.pdf", "b.pdf", "c.pdf"}
    assert state["a.pdf"] == {
        "run_id": "run-a.pdf",
        "status": SUCCEEDED,
        "attempt": 1,
        **NO_ERROR,
        "steps": {
            "ocr": {"text": "hello", "pages": [1, 2]},
            "classify": {"doc_class": "invoice", "score": 0.9},
            "sink": {},
            "pages[0]": {"lang": "en"},
        },
    }
    assert state["b.pdf"] == {"run_id": "run-b.pdf", "status": "running", "attempt": 2,
                              "steps": {"ocr": {"text": "second"}}, **NO_ERROR}
    assert state["c.pdf"] == {"run_id": "run-c.pdf", "status": "running", "attempt": 1, "steps": {},
                              **NO_ERROR}
    assert store.resume_state("nope") == {}
    # a resume reads the steps of the runs it continues only (the same steps, by chunks of ids)
    picked = store.resume_state(batch_id, steps_for=lambda doc, entry: entry["status"] == "running")
    assert picked["a.pdf"] == {**state["a.pdf"], "steps": {}}
    assert (picked["b.pdf"], picked["c.pdf"]) == (state["b.pdf"], state["c.pdf"])

    run = store.get_run("run-a.pdf")
    assert run is not None
    by_step = {(t["step"], t["attempt"]): t["outputs"] for t in run["tasks"]}
    assert by_step[("ocr", 1)] == {"text": "wrong"} and by_step[("ocr", 2)]["text"] == "hello"
    assert by_step[("legacy", 1)] is None and by_step[("translate", 1)] is None


def test_failed_documents(store: Store) -> None:
    flow_id = store.put_flow("f", "1", "h", {})
    batch_id = store.start_batch(flow_id, {}, 5)
    w = store.writer
    statuses = [FAILED, SUCCEEDED, FAILED, "running", FAILED]
    for i, status in enumerate(statuses):
        w.flow_run_started(RunStarted(f"r{i}", batch_id, flow_id, f"{i}.pdf" if i != 4 else "0.pdf", T0 + i))
        if status != "running":
            w.flow_run_finished(RunFinished(f"r{i}", status, T0 + i + 1, error_kind="corrupt", error="bad", outputs={}))
    assert store.failed_documents(batch_id) == ["0.pdf", "2.pdf"]  # input order, each once
    assert store.failed_documents("nope") == []


def test_flow_versions(store: Store) -> None:
    assert store.list_flows() == [] and store.get_flow("invoices") is None
    v1 = store.put_flow("invoices", "1.0", "h1", {"version": "1.0"})
    v1_edit = store.put_flow("invoices", "1.0", "h1b", {"version": "1.0", "edited": True})
    v2 = store.put_flow("invoices", "2.0", "h2", {"version": "2.0"})
    other = store.put_flow("receipts", "1.0", "r1", {"r": 1})
    batch_id = store.start_batch(v1, {}, 3)
    for i in range(3):
        store.writer.flow_run_started(RunStarted(f"r{i}", batch_id, v1 if i else v2, f"{i}.pdf", T0))

    flows = store.list_flows()
    assert [(f["name"], f["version"], f["content_hash"], f["n_runs"]) for f in flows] == [
        ("invoices", "1.0", "h1", 2),
        ("invoices", "1.0", "h1b", 0),
        ("invoices", "2.0", "h2", 1),
        ("receipts", "1.0", "r1", 0),
    ]
    assert [f["id"] for f in flows] == [v1, v1_edit, v2, other]
    assert all(isinstance(f["created_at"], float) for f in flows)

    latest = store.get_flow("invoices")
    assert latest is not None
    assert (latest["id"], latest["version"], latest["definition"]) == (v2, "2.0", {"version": "2.0"})
    same_version = store.get_flow("invoices", "1.0")
    assert same_version is not None and same_version["id"] == v1_edit  # the newest of that version
    exact = store.get_flow("invoices", "1.0", "h1")
    assert exact is not None and exact["definition"] == {"version": "1.0"}
    by_hash = store.get_flow("invoices", content_hash="h2")
    assert by_hash is not None and by_hash["id"] == v2
    assert store.get_flow("invoices", "3.0") is None
    assert store.put_flow("invoices", "1.0", "h1", {"ignored": True}) == v1  # stored once


def test_unencodable_task_outputs_fail_only_that_task(store: Store) -> None:
    flow_id = store.put_flow("f", "1", "h", {})
    batch_id = store.start_batch(flow_id, {}, 1)
    store.writer.flow_run_started(RunStarted("r", batch_id, flow_id, "d.pdf", T0))
    store.writer.task_run(_task("r", "bad", outputs={("tuple", "key"): 1}))
    store.writer.task_run(_task("r", "good", outputs={"k": 1}))
    with pytest.raises(ValueError, match="outputs of task run 'r' step 'bad' cannot be stored"):
        store.writer.flush()
    state = store.resume_state(batch_id)
    assert state["d.pdf"]["steps"] == {"good": {"k": 1}}  # the bad step will run again
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(task_runs.c.step, task_runs.c.outputs).order_by(task_runs.c.id)).all()
    assert [(step, None if text is None else json.loads(text)) for step, text in rows] == [
        ("bad", None),
        ("good", {"k": 1}),
    ]


def test_many_resumes_in_one_write(store: Store) -> None:
    """More resumed runs than one bulk statement holds, mixed with finishes, in report order."""
    flow_id = store.put_flow("f", "1", "h", {})
    batch_id = store.start_batch(flow_id, {}, 300)
    w = store.writer
    for i in range(300):
        w.flow_run_started(RunStarted(f"r{i}", batch_id, flow_id, f"{i}.pdf", T0))
    w.flush()
    for i in range(300):
        w.flow_run_resumed(RunResumed(f"r{i}", T0 + 10))
    for i in range(0, 300, 3):
        w.flow_run_finished(RunFinished(f"r{i}", SUCCEEDED, T0 + 11, outputs={"i": i}))
    for i in range(0, 300, 3):
        w.flow_run_resumed(RunResumed(f"r{i}", T0 + 12))
    runs = {r["id"]: r for r in store.batch_outputs(batch_id)}
    assert {runs[f"r{i}"]["attempt"] for i in range(0, 300, 3)} == {3}
    assert {runs[f"r{i}"]["attempt"] for i in range(1, 300, 3)} == {2}
    assert {r["status"] for r in runs.values()} == {"running"}
    assert {r["started_at"] for r in runs.values()} == {T0 + 10, T0 + 12}
    assert store.count_runs(batch_id=batch_id) == {"running": 300}
