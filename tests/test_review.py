"""Review steps: a run waits durably for a person; the answer continues it (docs/review.md).

Real runs with the toy blocks and the real `docpipe` command, on SQLite and, where the
database decides a race, on the real PostgreSQL server the tests start."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from support import DOCPIPE, TOYS, run_cli, write_flow

from docpipe import service
from docpipe.engine import Engine
from docpipe.errors import FlowError
from docpipe.flow import Flow
from docpipe.planner import build_plan, flow_graph
from docpipe.status import Status
from docpipe.store import Store

#: a document's class is in its text; "maybe" makes the score low, and the run wait
STEPS: list[dict[str, Any]] = [
    {"id": "read", "block": "toy.read"},
    {"id": "classify", "expr": "'invoice' if 'invoice' in text else 'letter'", "output": "doc_class"},
    {"id": "score", "expr": "0.3 if 'maybe' in text else 0.9", "output": "doc_class_score"},
    {"id": "top", "expr": "[{'label': doc_class, 'label2': 1}, {'label': 'contract'}]", "output": "doc_class_top"},
    {"id": "check", "review": {"kind": "choose", "key": "doc_class", "choices": ["invoice", "letter"],
                               "choices_from": "doc_class_top", "prompt": "Document type?"},
     "when": "params.review_below != None and doc_class_score < params.review_below"},
    {"id": "tag", "expr": "doc_class + '/' + str(doc_class_reviewed_by)", "output": "tag"},
]
OUTPUTS = ["doc_class", "doc_class_reviewed_by", "doc_class_reviewed_at", "tag"]
TEXTS = {"a": "invoice for sure", "b": "invoice maybe", "c": "letter for sure", "d": "letter maybe"}


def flow_file(tmp_path: Path, steps: list[dict[str, Any]] = STEPS) -> Path:
    return write_flow(tmp_path / "flow.json", steps, params={"review_below": 0.5}, outputs=OUTPUTS)


def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / f"{name}.txt").write_text(text)
    return folder


def run_batch(tmp_path: Path, db: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", str(flow_file(tmp_path)), str(inputs(tmp_path)), "--plugin", TOYS, "--db", db,
                   "-q", "-w", "1", "--out", str(tmp_path / "out.csv"), *extra)


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {Path(r["document"]).stem: r for r in csv.DictReader(f)}


# --- the step kind --------------------------------------------------------------------------


def test_review_step_plans_and_is_drawn_as_a_step(registry):
    plan = build_plan({"name": "t", "version": "1", "steps": STEPS, "params": {"review_below": 0.5}}, registry)
    check, tag = plan.node("check"), plan.node("tag")
    assert check.kind == "review"
    assert {plan.nodes[d].id for d in check.deps} == {"classify", "score", "top"}  # after what it reads
    assert plan.node("check").idx in tag.deps  # a reader of the key waits for the answer
    graph = flow_graph({"name": "t", "version": "1", "steps": STEPS, "params": {"review_below": 0.5}}, registry)
    node = graph.node("check")
    assert node.kind == "review" and node.review is not None and node.review.keys == ("doc_class",)
    assert set(node.writes) == {"doc_class", "doc_class_reviewed_by", "doc_class_reviewed_at"}


def test_the_sdk_writes_review_steps_the_schema_accepts():
    flow = (Flow("t").step("read", "toy.read")
            .review("ok", "approve", "looks_right", show=["text"], prompt="Right?")
            .review("fix", "edit", keys=["text"]))
    again = Flow.from_dict(json.loads(flow.to_json()))
    assert again.to_dict()["steps"][1] == {"id": "ok", "review": {"kind": "approve", "key": "looks_right",
                                                                   "prompt": "Right?", "show": ["text"]}}
    with pytest.raises(FlowError, match="keys"):  # edit needs keys, not key
        Flow.from_dict({"name": "t", "version": "1", "steps": [{"id": "x", "review": {"kind": "edit", "key": "a"}}]})


@pytest.mark.parametrize(("review", "message"), [
    ({"kind": "edit", "keys": ["summary"]}, "reviews 'summary', which no earlier step writes"),
    ({"kind": "choose", "key": "text", "choices": ["a"]}, None),
])
def test_a_review_must_follow_the_step_that_wrote_its_key(registry, review, message):
    steps = [{"id": "read", "block": "toy.read"}, {"id": "check", "review": review}]
    definition = {"name": "t", "version": "1", "steps": steps}
    if message is None:
        build_plan(definition, registry)
        return
    with pytest.raises(FlowError) as caught:
        build_plan(definition, registry)
    assert [(i.step, i.key) for i in caught.value.issues] == [("check", "summary")]
    assert message in str(caught.value)


def test_a_review_ordered_before_its_writer_or_reviewed_twice_is_an_error(registry):
    before = [{"id": "read", "block": "toy.read", "after": ["check"]},
              {"id": "check", "review": {"kind": "edit", "keys": ["text"]}}]
    with pytest.raises(FlowError, match="cycle"):
        build_plan({"name": "t", "version": "1", "steps": before}, registry)
    twice = [{"id": "read", "block": "toy.read"}, {"id": "one", "review": {"kind": "edit", "keys": ["text"]}},
             {"id": "two", "review": {"kind": "edit", "keys": ["text"]}}]
    with pytest.raises(FlowError, match="also reviewed by step 'one'"):
        build_plan({"name": "t", "version": "1", "steps": twice}, registry)


def test_a_null_threshold_never_waits_and_starts_no_question(tmp_path):
    flow = json.loads(flow_file(tmp_path).read_text())
    flow["params"]["review_below"] = None
    (tmp_path / "off.json").write_text(json.dumps(flow))
    db = f"sqlite:///{tmp_path / 's.db'}"
    proc = run_cli("run", str(tmp_path / "off.json"), str(inputs(tmp_path)), "--plugin", TOYS, "--db", db, "-q")
    assert proc.returncode == 0, proc.stderr
    with Store(db) as store:
        assert store.reviews.tasks() == []


# --- waiting, answering, continuing ---------------------------------------------------------


def test_two_of_four_wait_then_answers_continue_them(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    proc = run_batch(tmp_path, db)
    assert proc.returncode == 4, proc.stderr
    assert "2 succeeded, 0 failed, 2 waiting for review" in proc.stderr
    first = rows(tmp_path / "out.csv")
    assert {k: r["status"] for k, r in first.items()} == {"a": "succeeded", "b": "waiting", "c": "succeeded",
                                                          "d": "waiting"}
    assert first["b"]["doc_class"] == "invoice" and first["b"]["tag"] == ""  # the model's value, not yet on
    with Store(db) as store:
        batch_id = store.list_batches()[0]["id"]
        assert store.batch(batch_id)["status"] == Status.WAITING
        tasks = service.list_tasks(store)
        assert [Path(t["document"]).stem for t in tasks] == ["b", "d"]
        summary = store.reviews.waiting_summary()  # the queue page's heading, one grouped query
        assert (summary["by_kind"], summary["oldest"]) == ({"choose": 2}, tasks[0]["created_at"])
        assert list(summary["by_flow"].values()) == [2]
        b = tasks[0]
        assert b["choices"] == ["invoice", "letter", "contract"]
        assert b["proposal"]["doc_class"] == "invoice" and b["proposal"]["doc_class_score"] == 0.3
        assert b["prompt"] == "Document type?" and b["kind"] == "choose"
        run = store.get_run(b["flow_run_id"])
        assert run["status"] == Status.WAITING
        assert [t["status"] for t in run["tasks"] if t["step"] == "check"] == ["waiting"]
        service.answer(store, b["id"], "ann", "letter")
    resumed = run_cli("resume", batch_id, "--plugin", TOYS, "--db", db, "-q", "--out", str(tmp_path / "out.csv"))
    assert resumed.returncode == 4, resumed.stderr  # d still waits
    after = rows(tmp_path / "out.csv")
    assert after["b"]["status"] == "succeeded" and after["b"]["doc_class"] == "letter"
    assert after["b"]["doc_class_reviewed_by"] == "ann" and float(after["b"]["doc_class_reviewed_at"]) > 0
    assert after["b"]["tag"] == "letter/ann"
    assert after["d"]["status"] == "waiting"
    assert after["a"]["tag"] == "invoice/None"  # never reviewed
    with Store(db) as store:
        recorded = store.reviews.get(b["id"])
        assert recorded["proposal"]["doc_class"] == "invoice"  # the model's value stays with the task
        assert recorded["answer"] == {"doc_class": "letter"} and recorded["answered_by"] == "ann"
        assert store.get_run(b["flow_run_id"])["attempt"] == 2


def test_claims_race_and_one_reviewer_wins(store_url, tmp_path):
    store = Store(store_url)
    try:
        task_id = waiting_task(store, tmp_path)
        winners: list[str] = []
        barrier = threading.Barrier(8)

        def claim(name: str) -> None:
            own = Store(store_url)  # each reviewer its own connection, as two servers would
            try:
                barrier.wait()
                if own.reviews.claim(task_id, name, 60):
                    winners.append(name)
            finally:
                own.close()

        threads = [threading.Thread(target=claim, args=(f"r{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        task = service.get_task(store, task_id)
        assert task["status"] == "claimed" and task["lease_owner"] == winners[0]
        loser = "r0" if winners[0] != "r0" else "r1"
        with pytest.raises(service.Conflict, match=f"claimed by {winners[0]}"):
            service.answer(store, task_id, loser, "letter")
    finally:
        store.close()


def test_an_expired_lease_returns_the_task_to_the_queue(tmp_path):
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        task_id = waiting_task(store, tmp_path)
        t0 = time.time()
        assert store.reviews.claim(task_id, "ann", 60, now=t0)
        assert not store.reviews.claim(task_id, "bob", 60, now=t0 + 59)
        assert store.reviews.tasks(status="waiting", now=t0 + 59) == []
        assert [t["id"] for t in store.reviews.tasks(status="waiting", now=t0 + 61)] == [task_id]
        assert store.reviews.count(now=t0 + 61) == {"waiting": 1}
        assert store.reviews.waiting_summary(now=t0 + 59)["by_kind"] == {}  # held: not waiting
        assert store.reviews.waiting_summary(now=t0 + 61)["by_kind"] == {"choose": 1}
        assert store.reviews.claim(task_id, "bob", 60, now=t0 + 61)
        assert not store.reviews.release(task_id, "ann")
        assert store.reviews.release(task_id, "bob")
        assert service.get_task(store, task_id)["status"] == "waiting"


def test_answers_are_checked_idempotent_and_never_overwritten(tmp_path):
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        task_id = waiting_task(store, tmp_path)
        with pytest.raises(service.ServiceError, match="choose one of"):
            service.answer(store, task_id, "ann", "poem")
        with pytest.raises(service.ServiceError, match="reviewer"):
            service.answer(store, task_id, " ", "letter")
        service.claim(store, task_id, "ann")
        task, new = service.answer(store, task_id, "ann", "letter")
        assert new and task["status"] == "answered" and task["answer"] == {"doc_class": "letter"}
        again, new = service.answer(store, task_id, "ann", {"doc_class": "letter"})  # a double submit
        assert not new and again["answered_at"] == task["answered_at"]
        with pytest.raises(service.Conflict, match="answered by ann"):
            service.answer(store, task_id, "bob", "invoice")
        steps = [t for t in store.get_run(task["flow_run_id"])["tasks"] if t["step"] == "check"]
        assert [t["status"] for t in steps] == ["waiting", "succeeded"]  # one answer recorded


def test_edit_and_approve_answers():
    edit = {"kind": "edit", "keys": ["name", "city"], "choices": [], "proposal": {"name": "Bob", "city": "Pariss"}}
    assert service.answer_values(edit, {"city": "Paris"}) == {"name": "Bob", "city": "Paris"}
    with pytest.raises(service.ServiceError, match="not zip"):
        service.answer_values(edit, {"zip": "1"})
    approve = {"kind": "approve", "keys": ["ok"], "choices": [], "proposal": {}}
    assert service.answer_values(approve, "reject") == {"ok": False}
    assert service.answer_values(approve, True) == {"ok": True}
    with pytest.raises(service.ServiceError, match="approve"):
        service.answer_values(approve, "perhaps")


def test_waiting_runs_survive_kill_9_of_the_engine(tmp_path):
    """The first documents wait, then `docpipe run` is killed mid-batch: the waiting runs are
    rows; a resume finishes the others and leaves the unanswered ones waiting."""
    db = f"sqlite:///{tmp_path / 's.db'}"
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(40):
        (folder / f"doc{i:02d}.txt").write_text("invoice maybe" if i < 2 else f"letter {i} for sure")
    steps = [*STEPS[:5], {"id": "slow", "block": "toy.sleep", "params": {"seconds": 0.2}}, STEPS[5]]
    proc = subprocess.Popen([DOCPIPE, "run", str(flow_file(tmp_path, steps)), str(folder), "--plugin", TOYS,
                             "--db", db, "-q", "-w", "1", "--max-in-flight", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            with Store(db) as store:
                if len(store.reviews.tasks()) == 2 and store.count_runs().get("waiting") == 2:
                    break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    with Store(db) as store:
        assert store.count_runs()["waiting"] == 2 and len(store.reviews.tasks()) == 2
        batch_id = store.list_batches()[0]["id"]
    resumed = run_cli("resume", batch_id, "--plugin", TOYS, "--db", db, "-q")
    assert resumed.returncode == 4, resumed.stderr
    with Store(db) as store:
        assert store.count_runs(batch_id=batch_id) == {"succeeded": 38, "waiting": 2}
        assert len(store.reviews.tasks(status=None)) == 2  # asked once each


def test_a_waiting_runs_decrypted_copy_is_removed_and_made_again(tmp_path, registry):
    """A decrypted copy must not outlive the run while it waits: the run's folder goes, and
    the resume decrypts again for the step after the review that reads the copy."""
    source = tmp_path / "secret.pdf"
    pdf = pikepdf.new()
    pdf.add_blank_page()
    pdf.save(source, encryption=pikepdf.Encryption(user="pw", owner="pw-o"))
    steps = [{"id": "decrypt", "block": "pdf.decrypt", "params": {"password": "pw"}},
             {"id": "check", "review": {"kind": "approve", "key": "ok", "show": ["encrypted"]}},
             {"id": "head", "block": "toy.file_head", "inputs": {"path": "pdf_path"}, "after": ["check"]}]
    plan = build_plan({"name": "t", "version": "1", "steps": steps}, registry)
    work = tmp_path / "work"
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        with Engine(store, workers=1, work_dir=work) as engine:
            result = engine.run(plan, [str(source)])
            assert result.results[0].status == Status.WAITING
            assert not list(work.rglob("*.pdf"))  # the decrypted copy went with the run's folder
        task = service.list_tasks(store)[0]
        assert task["proposal"] == {"encrypted": True}
        service.answer(store, task["id"], "ann", "approve")
        with Engine(store, workers=1, work_dir=work) as engine:
            result = engine.resume(plan, result.batch_id)
        done = result.results[0]
        assert done.status == Status.SUCCEEDED, done.error
        assert done.outputs["ok"] is True and done.outputs["file_head"].startswith("%PDF")
        decrypts = [t for t in store.get_run(done.run_id)["tasks"] if t["step"] == "decrypt"]
        assert len(decrypts) == 2  # made again for the step after the review


# --- the CLI --------------------------------------------------------------------------------


def test_cli_list_show_claim_answer_continue(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert run_batch(tmp_path, db).returncode == 4
    listed = run_cli("review", "list", "--db", db, "--json")
    tasks = json.loads(listed.stdout)
    assert [Path(t["document"]).stem for t in tasks] == ["b", "d"]
    b, d = tasks[0]["id"], tasks[1]["id"]
    table = run_cli("review", "list", "--db", db)
    assert b in table.stdout and "doc_class=invoice" in table.stdout
    shown = run_cli("review", "show", b[:20], "--db", db)
    assert "Document type?" in shown.stdout and "invoice, letter, contract" in shown.stdout
    assert run_cli("review", "claim", b, "-r", "ann", "--db", db).returncode == 0
    taken = run_cli("review", "claim", b, "-r", "bob", "--db", db)
    assert taken.returncode == 2 and "claimed by ann" in taken.stderr
    wrong = run_cli("review", "answer", b, "poem", "-r", "ann", "--db", db)
    assert wrong.returncode == 2 and "VALUE" in wrong.stderr and "choose one of" in wrong.stderr
    answered = run_cli("review", "answer", b, "letter", "-r", "ann", "--db", db)
    assert answered.returncode == 0 and "answered" in answered.stdout
    twice = run_cli("review", "answer", b, "letter", "-r", "ann", "--db", db)
    assert twice.returncode == 0 and "already answered" in twice.stdout
    assert run_cli("review", "release", d, "-r", "ann", "--db", db).returncode == 2  # not claimed
    cont = run_cli("review", "continue", "--plugin", TOYS, "--db", db, "-q", "--out", str(tmp_path / "o.csv"))
    assert cont.returncode == 4, cont.stderr  # d still waits
    assert "3 succeeded, 0 failed, 1 waiting for review" in cont.stderr
    assert rows(tmp_path / "o.csv")["b"]["doc_class"] == "letter"
    none_left = run_cli("review", "continue", "--plugin", TOYS, "--db", db, "-q")
    assert none_left.returncode == 0 and "no answered run" in none_left.stdout
    answered_list = json.loads(run_cli("review", "list", "--status", "answered", "--db", db, "--json").stdout)
    assert [t["id"] for t in answered_list] == [b]


def waiting_task(store: Store, tmp_path: Path) -> str:
    """Run the flow over one low-score document on ``store``; the id of its review task."""
    (tmp_path / "one").mkdir(exist_ok=True)
    doc = tmp_path / "one" / "b.txt"
    doc.write_text(TEXTS["b"])
    from docpipe.plugins import Registry

    plan = build_plan({"name": "t", "version": "1", "steps": STEPS, "params": {"review_below": 0.5}},
                      Registry(extra=[TOYS]))
    with Engine(store, workers=1) as engine:
        assert engine.run(plan, [str(doc)]).results[0].status == Status.WAITING
    return str(store.reviews.tasks()[0]["id"])
