"""Run records as the engine builds them and as the writer reads them: one shape per kind,
cheap for the garbage collector, written as the named tuples say."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from docpipe.status import ErrorKind, Status
from docpipe.store import RunFinished, RunResumed, RunStarted, Store, TaskRecord, writer
from docpipe.store.records import encode_outputs, run_finished, run_started, task_succeeded

T0 = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'store.db'}", blob_threshold=64)
    yield s
    s.close()


def test_the_writer_reads_the_fields_where_the_named_tuples_put_them() -> None:
    task, finished = TaskRecord._fields, RunFinished._fields
    assert task.index("flow_run_id") == writer._TASK_RUN_ID
    assert task.index("step") == writer._TASK_STEP
    assert task.index("error") == writer._TASK_ERROR
    assert task.index("traceback") == writer._TASK_TRACEBACK
    assert task.index("outputs") == writer._TASK_OUTPUTS == len(task) - 1
    assert finished.index("id") == writer._FINISH_RUN_ID
    assert finished.index("error") == writer._FINISH_ERROR
    assert finished.index("outputs") == writer._FINISH_OUTPUTS == len(finished) - 1


def test_builders_make_the_named_records_as_plain_tuples_with_outputs_encoded() -> None:
    outputs = {"text": "héllo", "pages": [1, 2], "at": Path("x.pdf")}
    text = json.dumps(outputs, default=str)
    built = task_succeeded("r", "ocr", "ocr.tesseract", 2, T0, T0 + 1, "pid:7", outputs)
    assert built == TaskRecord("r", "ocr", "ocr.tesseract", 2, Status.SUCCEEDED, T0, T0 + 1, "pid:7", outputs=text)
    assert type(built) is tuple and type(built[4]) is str  # a Status binds ~1 µs slower
    started = run_started("r", "b", 3, "a.pdf", T0, "order-1")
    assert started == RunStarted("r", "b", 3, "a.pdf", T0, "order-1") and type(started) is tuple
    finished = run_finished("r", Status.FAILED, T0 + 2, ErrorKind.CORRUPT, "bad xref", "ocr", outputs)
    assert finished == RunFinished("r", "failed", T0 + 2, "corrupt", "bad xref", "ocr", text)
    assert type(finished) is tuple and type(finished[1]) is str


def test_built_records_are_left_alone_by_the_garbage_collector() -> None:
    """The records the engine builds per task and per document hold only atomic values, so
    the collector untracks them at its first pass instead of promoting thousands of them."""
    built = [
        task_succeeded("r", "ocr", "b", 1, T0, T0, "main", {"k": ["v", 1]}),
        run_started("r", "b", 1, "a.pdf", T0, None),
        run_finished("r", Status.SUCCEEDED, T0, None, None, None, {"k": {"nested": True}}),
    ]
    named = TaskRecord("r", "ocr", "b", 1, Status.SUCCEEDED, T0, T0, "main", outputs="{}")
    gc.collect()
    assert [gc.is_tracked(rec) for rec in built] == [False, False, False]
    assert gc.is_tracked(named)  # why the hot kinds have builders


@pytest.mark.parametrize(
    ("outputs", "encoded"),
    [
        (None, None),
        ({}, "{}"),
        ({"n": 1.5, "ok": True, "none": None}, '{"n": 1.5, "ok": true, "none": null}'),
        ('{"already": "text"}', '{"already": "text"}'),
    ],
)
def test_encode_outputs(outputs: Any, encoded: Any) -> None:
    assert encode_outputs(outputs) == encoded


@pytest.mark.parametrize("outputs", [{"pdf": b"%PDF"}, {("tuple", "key"): 1}, {"deep": [bytearray(b"x")]}])
def test_outputs_the_fast_encoder_refuses_stay_a_dict_for_the_writer(outputs: dict[str, Any]) -> None:
    assert encode_outputs(outputs) is outputs
    assert task_succeeded("r", "s", "b", 1, T0, T0, None, outputs)[-1] is outputs


def test_every_kind_is_written_as_built_or_as_named(store: Store) -> None:
    """Builder tuples and named tuples, outputs as text, as a dict, with bytes and too long for a
    row (this store's blob threshold is 64 bytes): the same rows."""
    flow_id = store.put_flow("f", "1", "h", {})
    batch_id = store.start_batch(flow_id, {}, 2, inputs=["a.pdf", "b.pdf"])
    w = store.writer
    w.flow_run_started(run_started("a", batch_id, flow_id, "a.pdf", T0, "corr"))
    w.flow_run_started(RunStarted("b", batch_id, flow_id, "b.pdf", T0))
    long = "x" * 100
    w.task_run(task_succeeded("a", "ocr", "ocr.t", 1, T0, T0 + 1, "main", {"text": "short"}))
    w.task_run(task_succeeded("a", "long", "ocr.t", 1, T0 + 1, T0 + 2, "main", {"text": long}))
    w.task_run(task_succeeded("a", "pdf", "pdf.load", 1, T0 + 2, T0 + 3, "main", {"pdf": b"%PDF-1.7"}))
    w.task_run(TaskRecord("b", "ocr", "ocr.t", 1, Status.RETRYING, T0, T0 + 1, "pid:1",
                          error_kind=ErrorKind.TIMEOUT, error="too slow", traceback="Traceback ..."))
    w.task_run(TaskRecord("b", "ocr", "ocr.t", 2, Status.SUCCEEDED, T0 + 1, T0 + 2, "pid:1", outputs={"text": "b"}))
    w.flow_run_finished(run_finished("a", Status.SUCCEEDED, T0 + 3, None, None, None, {"text": long}))
    w.flow_run_finished(RunFinished("b", Status.FAILED, T0 + 3, ErrorKind.CORRUPT, "bad", "classify", {}))
    w.flush()

    a = store.get_run("a")
    assert a is not None
    assert (a["status"], a["correlation_id"], a["outputs"]) == ("succeeded", "corr", {"text": long})
    assert [(t["step"], t["outputs"]) for t in a["tasks"]] == [
        ("ocr", {"text": "short"}), ("long", {"text": long}), ("pdf", {"pdf": b"%PDF-1.7"})]
    refs = store.get_run("a", resolve_blobs=False)
    assert refs is not None and set(refs["outputs"]["text"]) == {"$blob", "size", "type"}
    b = store.get_run("b")
    assert b is not None
    assert (b["status"], b["error_kind"], b["error"], b["failed_step"]) == ("failed", "corrupt", "bad", "classify")
    assert [(t["status"], t["error_kind"], t["traceback"], t["outputs"]) for t in b["tasks"]] == [
        ("retrying", "timeout", "Traceback ...", None), ("succeeded", None, None, {"text": "b"})]

    w.flow_run_resumed(RunResumed("b", T0 + 10))
    w.flush()
    b = store.get_run("b")
    assert b is not None and (b["status"], b["attempt"], b["outputs"]) == ("running", 2, None)

