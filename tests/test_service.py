"""The service layer on its own, with real runs of the toy blocks: what the CLI and the
server do, without either face (no click, no HTTP)."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest
from support import write_flow

from docpipe import service
from docpipe.errors import FlowError
from docpipe.flow import redact_definition
from docpipe.inputs import InputError
from docpipe.status import Status
from docpipe.store import Store

READ_UPPER = [{"id": "read", "block": "toy.read"}, {"id": "up", "block": "toy.upper"}]


@pytest.fixture
def store(tmp_path: Path):
    with Store(f"sqlite:///{tmp_path / 'store.db'}") as s:
        yield s


@pytest.fixture
def inputs(tmp_path: Path) -> list[str]:
    """Two documents, the second empty (``toy.read`` fails it as corrupt)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("one two three")
    (folder / "b.txt").write_text("")
    return [str(folder / "a.txt"), str(folder / "b.txt")]


def _run(store, registry, tmp_path, docs, **options):
    plan = service.plan_flow(write_flow(tmp_path / "f.json", READ_UPPER, outputs=["upper"]), registry)
    return service.run_batch(store, service.Batch(plan, docs), service.RunOptions(workers=1, **options))


def test_a_flow_file_is_planned_with_its_params_or_refused_with_every_issue(tmp_path, registry):
    flow = write_flow(tmp_path / "f.json", READ_UPPER, params={"n": 1})
    plan = service.plan_flow(flow, registry, {"n": 5})
    assert (plan.name, [n.id for n in plan.nodes], plan.params["n"]) == ("t", ["read", "up"], 5)
    bad = write_flow(tmp_path / "bad.json", [{"id": "x", "block": "toy.nope"}, {"id": "u", "block": "toy.upper"}])
    with pytest.raises(FlowError) as caught:
        service.plan_flow(bad, registry)
    assert len(caught.value.issues) == 2 and caught.value.exit_code == 2


def test_a_recorded_flow_needs_its_secrets_again(tmp_path, registry):
    plan = service.plan_flow(write_flow(tmp_path / "f.json", READ_UPPER, params={"api_token": "s3cret"}), registry)
    recorded = redact_definition(plan.definition)
    with pytest.raises(service.SecretsNeeded) as caught:
        service.plan_definition(recorded, registry)
    assert caught.value.names == ["api_token"] and "s3cret" not in str(caught.value)
    assert service.plan_definition(recorded, registry, {"api_token": "again"}).params["api_token"] == "again"


def test_documents_are_absolute_each_once_and_what_is_not_a_file_is_warned_of(tmp_path, monkeypatch):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.txt").write_text("a")
    (tmp_path / "in" / "sub" / "b.txt").write_text("b")
    (tmp_path / "in" / ".hidden").write_text("h")
    os.mkfifo(tmp_path / "in" / "pipe")
    monkeypatch.chdir(tmp_path)
    warned: list[tuple[str, str]] = []
    found = service.find_documents(["in", "in/a.txt"], lambda p, why: warned.append((p, why)))
    assert found == [str(tmp_path / "in" / "a.txt"), str(tmp_path / "in" / "sub" / "b.txt")]
    assert [Path(p).name for p, _ in warned] == ["pipe"] and "named pipe" in warned[0][1]
    with pytest.raises(InputError, match="does not exist"):
        service.find_documents(["nothere"], lambda *_: None)


def test_a_batch_runs_records_and_writes_its_results_file(tmp_path, registry, store, inputs):
    out = tmp_path / "results" / "r.csv"
    seen: list[str] = []
    plan = service.plan_flow(write_flow(tmp_path / "f.json", READ_UPPER, outputs=["upper"]), registry)
    batch = service.Batch(plan, inputs, correlation_id="ticket-7", argv=["docpipe", "run", "-p", "password=x"])
    assert batch.size(store) == 2
    done = service.run_batch(store, batch, service.RunOptions(out=str(out), workers=1),
                             on_document=lambda r: seen.append(Path(r.document).name))
    assert sorted(seen) == ["a.txt", "b.txt"]
    assert done.result.counts == {Status.SUCCEEDED: 1, Status.FAILED: 1} and done.out == str(out)
    assert [(Path(r["document"]).name, r["status"]) for r in done.rows] == [("a.txt", "succeeded"), ("b.txt", "failed")]
    rows = list(csv.DictReader(out.open()))
    assert [r["upper"] for r in rows] == ["ONE TWO THREE", ""]
    recorded = store.batch(done.result.batch_id)
    assert recorded["correlation_id"] == "ticket-7" and "password=***" in json.dumps(recorded["argv"])
    assert service.previous_batch(store, plan, inputs) == done.result.batch_id
    assert service.previous_batch(store, plan, inputs[:1]) is None


@pytest.mark.parametrize(("name", "why"), [("r.xlsx", "use a .csv or .jsonl"), ("in/a.txt/r.csv", "is a file")])
def test_a_results_file_that_cannot_be_written_is_refused_before_the_run(tmp_path, registry, store, inputs, name,
                                                                         why):
    with pytest.raises(service.ServiceError, match=why) as caught:
        _run(store, registry, tmp_path, inputs, out=str(tmp_path / name))
    assert caught.value.field == "out" and caught.value.exit_code == 2
    assert store.list_batches() == []  # nothing ran


def test_a_batch_stopped_before_its_documents_started_is_resumed(tmp_path, registry, store, inputs):
    """A batch recorded and then interrupted before any document started (the process
    died): resuming it runs every document, in that same batch."""
    plan = service.plan_flow(write_flow(tmp_path / "f.json", READ_UPPER), registry)
    flow_id = store.put_flow(plan.name, plan.version, plan.content_hash, plan.definition)
    batch_id = store.start_batch(flow_id, plan.params, len(inputs), ["docpipe", "run"], inputs=inputs)
    todo = service.continue_batch(store, batch_id, registry)
    assert (todo.batch_id, todo.retry_failed, todo.size(store)) == (batch_id, False, 2)
    done = service.run_batch(store, todo, service.RunOptions(workers=1))
    assert done.result.batch_id == batch_id and done.result.counts[Status.SUCCEEDED] == 1
    assert len(store.list_runs(batch_id=batch_id)) == 2


def test_one_failed_run_is_retried_in_its_own_run(tmp_path, registry, store, inputs):
    first = _run(store, registry, tmp_path, inputs)
    batch_id = first.result.batch_id
    (ok,) = [r for r in first.result.results if r.status == Status.SUCCEEDED]
    (bad,) = first.result.failed
    with pytest.raises(service.Conflict, match="is succeeded, not failed"):
        service.failed_run(store, ok.run_id)
    with pytest.raises(service.NotFound) as missing:
        service.failed_run(store, "no-such-run")
    assert missing.value.field == "run_id"
    other = _run(store, registry, tmp_path, inputs[1:]).result
    with pytest.raises(service.Conflict, match="is not a run of batch"):
        service.failed_run(store, other.failed[0].run_id, batch_id)
    Path(bad.document).write_text("now it has words")  # the document is fixed
    run = service.failed_run(store, bad.run_id, batch_id)
    todo = service.continue_batch(store, batch_id, registry, retry_failed=True, only={run["document"]})
    again = service.run_batch(store, todo, service.RunOptions(workers=1))
    assert again.result.batch_id == batch_id and not again.result.failed
    retried = store.get_run(bad.run_id)
    assert (retried["status"], retried["attempt"], retried["outputs"]["upper"]) == ("succeeded", 2, "NOW IT HAS WORDS")
    assert len(store.list_runs(batch_id=batch_id)) == 2  # one run per document, still


def test_a_batch_with_secret_params_is_planned_again_only_with_them(tmp_path, registry, store, inputs):
    plan = service.plan_flow(write_flow(tmp_path / "f.json", READ_UPPER, params={"api_token": "s3cret"}),
                             registry)
    done = service.run_batch(store, service.Batch(plan, inputs), service.RunOptions(workers=1))
    with pytest.raises(service.SecretsNeeded) as caught:
        service.continue_batch(store, done.result.batch_id, registry)
    assert caught.value.names == ["api_token"]
    assert service.plan_batch(store, done.result.batch_id, registry, {"api_token": "x"}).params["api_token"] == "x"
    with pytest.raises(service.NotFound) as missing:
        service.plan_batch(store, "no-such-batch", registry)
    assert missing.value.field == "batch_id"


def test_ids_are_found_by_a_unique_prefix(tmp_path, registry, store, inputs):
    result = _run(store, registry, tmp_path, inputs).result
    assert service.full_id(store, result.batch_id[:6], "batch") == result.batch_id
    a, b = (r.run_id for r in result.results)
    common = os.path.commonprefix([a, b])  # run ids start with their time (UUIDv7)
    assert common and service.full_id(store, a[: len(common) + 1], "run") == a
    assert service.full_id(store, a.upper(), "run") == a
    with pytest.raises(service.Ambiguous, match="start of several run ids") as several:
        service.full_id(store, common, "run")
    assert several.value.field == "run_id"
    with pytest.raises(service.NotFound) as none:
        service.full_id(store, "ffff-not-an-id", "run")
    assert none.value.field == "run_id" and "no run ffff-not-an-id in Store(" in str(none.value)
    with pytest.raises(service.NotFound):
        service.full_id(store, "", "batch")


def test_since_takes_durations_and_iso_dates():
    assert abs(service.parse_since("2h") - (time.time() - 7200)) < 5
    assert abs(service.parse_since("1.5 d") - (time.time() - 1.5 * 86400)) < 5
    assert service.parse_since("2026-11-25T08:00") == pytest.approx(
        time.mktime((2026, 11, 25, 8, 0, 0, 0, 0, -1)))
    assert service.parse_since(None) is None
    with pytest.raises(service.ServiceError) as caught:
        service.parse_since("yesterday")
    assert caught.value.field == "since" and "use 30m, 2h, 7d" in str(caught.value)


def test_runs_are_listed_counted_and_shown_with_what_their_steps_wrote(tmp_path, registry, store, inputs):
    result = _run(store, registry, tmp_path, inputs).result
    failed = service.list_runs(store, service.RunQuery(status="failed", batch=result.batch_id[:8]))
    assert [Path(r["document"]).name for r in failed.runs] == ["b.txt"]
    assert failed.counts == {"succeeded": 1, "failed": 1}  # counts ignore the status filter
    assert service.list_runs(store, service.RunQuery(since="2099-01-01")).runs == []
    with pytest.raises(service.ServiceError) as caught:
        service.list_runs(store, service.RunQuery(since="soon"))
    assert caught.value.field == "since"
    (ok,) = [r for r in result.results if r.status == Status.SUCCEEDED]
    run = service.show_run(store, ok.run_id)
    assert run["id"] == ok.run_id and 0 <= run["duration"] <= run["in_flight"]
    assert service.output_value(run, "upper") == "ONE TWO THREE"  # a flow output
    assert service.output_value(run, "lines") == ["one two three"]  # what a step wrote besides
    assert service.step_outputs(run)["lines"] == ("read", ["one two three"])
    with pytest.raises(service.NotFound) as missing:
        service.output_value(run, "nope")
    assert missing.value.field == "output" and "it has: lines, text, upper" in str(missing.value)


def test_own_duration_counts_overlapping_steps_once_and_earlier_attempts_not_at_all():
    run = {"started_at": 10.0, "finished_at": 20.0, "tasks": [
        {"started_at": 5.0, "finished_at": 9.0},  # before this attempt (a resume)
        {"started_at": 10.0, "finished_at": 12.0},
        {"started_at": 11.0, "finished_at": 13.0},  # overlaps the one before
        {"started_at": 15.0, "finished_at": 16.0},
        {"started_at": 16.5, "finished_at": None},
    ]}
    assert service.own_duration(run) == pytest.approx(4.0)
    assert service.own_duration({**run, "tasks": []}) == pytest.approx(10.0)
    assert service.own_duration({**run, "finished_at": None}) is None
