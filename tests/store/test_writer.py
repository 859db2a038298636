"""The record writer's rounds: what it does with records reported between two writes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from docpipe.status import ErrorKind, Status
from docpipe.store import RecordWriter, RunResumed, Store
from docpipe.store.records import run_finished, run_started

T0 = 1_700_000_000.0


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


@pytest.fixture
def w(store: Store) -> Iterator[RecordWriter]:
    """A writer that writes only when flushed: everything reported before is one round."""
    writer = RecordWriter(store.engine, interval=3600, backlog=1_000_000, blobs=store.blobs)
    yield writer
    writer.close()


def test_runs_that_start_and_end_in_one_round_keep_their_order_and_end(store: Store, w: RecordWriter) -> None:
    flow_id = store.put_flow("f", "1", "h", {})
    batch_id = store.start_batch(flow_id, {}, 3)
    for doc in ("a", "b", "c"):
        w.flow_run_started(run_started(doc, batch_id, flow_id, f"{doc}.pdf", T0, f"corr-{doc}"))
    w.flow_run_finished(run_finished("b", Status.FAILED, T0 + 1, ErrorKind.CORRUPT, "bad xref", "ocr", {"k": 2}))
    w.flow_run_finished(run_finished("a", Status.SUCCEEDED, T0 + 2, None, None, None, {"k": 1}))
    w.flow_run_finished(run_finished("a", Status.FAILED, T0 + 3, ErrorKind.TIMEOUT, "late", "sink", {}))
    w.flush()
    runs = [(r["document"], r["status"], r["error_kind"], r["failed_step"], r["outputs"], r["attempt"],
             r["finished_at"], r["correlation_id"]) for r in store.batch_outputs(batch_id)]
    assert runs == [
        ("a.pdf", "failed", "timeout", "sink", {}, 1, T0 + 3, "corr-a"),  # the later end wins
        ("b.pdf", "failed", "corrupt", "ocr", {"k": 2}, 1, T0 + 1, "corr-b"),
        ("c.pdf", "running", None, None, None, 1, None, "corr-c"),
    ]


def test_a_run_resumed_in_the_round_it_started_applies_its_records_in_order(store: Store, w: RecordWriter) -> None:
    flow_id = store.put_flow("f", "1", "h", {})
    batch_id = store.start_batch(flow_id, {}, 3)
    w.flow_run_started(run_started("a", batch_id, flow_id, "a.pdf", T0, None))
    w.flow_run_started(run_started("b", batch_id, flow_id, "b.pdf", T0, None))
    w.flow_run_started(run_started("c", batch_id, flow_id, "c.pdf", T0, None))
    w.flow_run_resumed(RunResumed("c", T0 + 2))
    w.flow_run_finished(run_finished("c", Status.SUCCEEDED, T0 + 3, None, None, None, {"c": 3}))
    w.flow_run_finished(run_finished("a", Status.FAILED, T0 + 1, ErrorKind.BLOCK_ERROR, "boom", "ocr", {}))
    w.flow_run_resumed(RunResumed("a", T0 + 5))
    w.flow_run_finished(run_finished("b", Status.SUCCEEDED, T0 + 6, None, None, None, {"b": 1}))
    w.flow_run_resumed(RunResumed("b", T0 + 7))
    w.flow_run_finished(run_finished("a", Status.SUCCEEDED, T0 + 8, None, None, None, {"a": 2}))
    w.flush()
    runs = {r["id"]: (r["status"], r["attempt"], r["started_at"], r["error"], r["outputs"])
            for r in store.batch_outputs(batch_id)}
    assert runs == {"a": ("succeeded", 2, T0 + 5, None, {"a": 2}), "b": ("running", 2, T0 + 7, None, None),
                    "c": ("succeeded", 2, T0 + 2, None, {"c": 3})}
