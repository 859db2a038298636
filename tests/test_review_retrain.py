"""Corrections become training data (docs/review.md, "Retraining with reviews"): a run's
low-confidence classes wait for a person, the answers are exported, the default classifier
is retrained with them, and the same documents come out right with a higher score.

Real documents (the repository's samples), the real blocks and model, the real `docpipe`
command and the real build script (``--quick``: the known depth, no cross-validation)."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, TOYS, run_cli, write_flow

from docpipe import service
from docpipe.store import Store

LABELS = ["contract", "cv", "email", "form", "invoice", "letter", "manual", "other", "policy", "receipt",
          "scientific_article"]
#: what each sample is, read by a person (models/doctype/MODEL_CARD.md, "On the repository's
#: samples"); the shipped model says letter 0.39, other 0.36, manual 0.79 (wrong)
TRUTH = {"lettre_fr": "letter", "report_de": "other", "security_policy": "policy"}
#: the front of flows/idp.json: text, OCR of the pages that need it, class, review
STEPS = [
    {"id": "decrypt", "block": "pdf.decrypt"},
    {"id": "text", "block": "pdf.text", "inputs": {"path": "pdf_path"}},
    {"id": "ocr", "map": "needs_ocr_pages", "as": "page", "block": "ocr.tesseract", "inputs": {"path": "pdf_path"}},
    {"id": "merge", "block": "ocr.merge"},
    {"id": "classify", "block": "hf.classify", "params": {"model": "${params.model}"}},
    {"id": "check_type", "review": {"kind": "choose", "key": "doc_class", "choices": LABELS,
                                    "choices_from": "doc_class_top", "prompt": "Document type?"},
     "when": "params.review_below != None and doc_class_score < params.review_below"},
]


def results(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {Path(r["document"]).stem: r for r in csv.DictReader(f)}


@pytest.mark.slow
def test_reviewed_documents_come_out_right_after_retraining(tmp_path):
    flow = write_flow(tmp_path / "flow.json", STEPS, name="idp_review",
                      params={"review_below": None, "model": None},
                      outputs=["doc_class", "doc_class_score", "doc_class_reviewed_by"])
    docs = tmp_path / "in"
    docs.mkdir()
    for name in TRUTH:
        (docs / f"{name}.pdf").write_bytes((ROOT / "samples" / f"{name}.pdf").read_bytes())
    db = f"sqlite:///{tmp_path / 's.db'}"

    # 1. the shipped model is unsure (or wrong) on all three: they wait for review
    proc = run_cli("run", str(flow), str(docs), "-p", "review_below=0.8", "--db", db, "-q", "-w", "1",
                   "--out", str(tmp_path / "before.csv"), timeout=300)
    assert proc.returncode == 4, proc.stderr
    before = results(tmp_path / "before.csv")
    assert {k: r["status"] for k, r in before.items()} == dict.fromkeys(TRUTH, "waiting")

    # 2. a person answers each with its real type
    with Store(db) as store:
        tasks = service.list_tasks(store, flow="idp_review", kind="choose")
        assert len(tasks) == 3
        for task in tasks:
            service.answer(store, task["id"], "ann", TRUTH[Path(task["document"]).stem])

    # 3. export: one line per answer, with the text hf.classify read
    reviews = tmp_path / "reviews.jsonl"
    proc = run_cli("review", "export", "--flow", "idp_review", "--kind", "choose", "--key", "doc_class",
                   "--db", db, "-o", str(reviews))
    assert proc.returncode == 0, proc.stderr
    assert "exported 3 reviewed example(s)" in proc.stderr
    examples = {Path(e["document"]).stem: e for e in map(json.loads, reviews.read_text().splitlines())}
    assert set(examples) == set(TRUTH)
    for name, e in examples.items():
        assert e["human_label"] == TRUTH[name] and e["reviewer"] == "ann"
        assert e["model_label"] == before[name]["doc_class"]
        assert e["model_score"] == pytest.approx(float(before[name]["doc_class_score"]))
        assert len(e["text"]) > 200  # the document's text layer, not a stub
    assert "Lyon" in examples["lettre_fr"]["text"] and "Quartalsbericht" in examples["report_de"]["text"]

    # 4. retrain into a temporary folder (never models/doctype)
    model = tmp_path / "model"
    build = subprocess.run([sys.executable, str(ROOT / "models" / "build_doctype.py"), "--quick",
                            "--with-reviews", str(reviews), "--out", str(model)],
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr + build.stdout
    assert "held-out accuracy" in build.stdout and " -> " in build.stdout
    metrics = json.loads((model / "metrics.json").read_text())
    trained = metrics["reviews"]
    assert trained["path"] == str(reviews) and trained["count"] == 3 and trained["used"] == 3
    assert trained["sha256"] == hashlib.sha256(reviews.read_bytes()).hexdigest()
    ba = trained["before_after"]
    assert set(ba["before"]) == set(ba["after"]) == {"accuracy", "ece"}
    # one or two held-out texts either way is what three more training texts can move
    assert abs(ba["after"]["accuracy"] - ba["before"]["accuracy"]) <= 0.05

    # 5. the same documents, classified by the retrained model: right, and surer than before
    proc = run_cli("run", str(flow), str(docs), "-p", f"model={model}", "--db", db, "-q", "-w", "1",
                   "--out", str(tmp_path / "after.csv"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    after = results(tmp_path / "after.csv")
    for name, truth in TRUTH.items():
        assert after[name]["doc_class"] == truth, (name, after[name])
        assert float(after[name]["doc_class_score"]) > float(before[name]["doc_class_score"]), name

    # 6. `docpipe models list` says which reviews the model was trained with
    listed = run_cli("models", "list", "--path", str(model), "--json")
    assert listed.returncode == 0, listed.stderr
    found = [m for m in json.loads(listed.stdout)["models"] if m["path"] == str(model.resolve())]
    assert found and found[0]["reviews"]["sha256"] == trained["sha256"]
    text = run_cli("models", "list", "--path", str(model)).stdout
    assert f"trained with reviews: {reviews} (3 of 3 examples" in text


def test_export_skips_and_counts_tasks_whose_text_was_not_recorded(tmp_path):
    """The toy flow's classifier reads `text`: with the default --text-key full_text there is
    nothing to export (said on stderr); with --text-key text there is."""
    steps = [
        {"id": "read", "block": "toy.read"},
        {"id": "classify", "expr": "'invoice' if 'invoice' in text else 'letter'", "output": "doc_class"},
        {"id": "check", "review": {"kind": "choose", "key": "doc_class", "choices": ["invoice", "letter"]}},
    ]
    flow = write_flow(tmp_path / "flow.json", steps, outputs=["doc_class"])
    docs = tmp_path / "in"
    docs.mkdir()
    (docs / "a.txt").write_text("an invoice, or a letter about one")
    (docs / "b.txt").write_text("dear sir")
    db = f"sqlite:///{tmp_path / 's.db'}"
    proc = run_cli("run", str(flow), str(docs), "--plugin", TOYS, "--db", db, "-q", "-w", "1")
    assert proc.returncode == 4, proc.stderr
    with Store(db) as store:
        task = next(t for t in service.list_tasks(store) if t["document"].endswith("a.txt"))
        service.answer(store, task["id"], "bob", "letter")  # b stays unanswered: not exported

    missing = run_cli("review", "export", "--flow", "t", "--db", db)
    assert missing.returncode == 0, missing.stderr
    assert missing.stdout == ""
    assert f"skipped task {task['id']}" in missing.stderr and "recorded no 'full_text'" in missing.stderr
    assert "exported 0 reviewed example(s)" in missing.stderr and "skipped 1 without text" in missing.stderr

    found = run_cli("review", "export", "--flow", "t", "--text-key", "text", "--db", db)
    assert found.returncode == 0, found.stderr
    [line] = found.stdout.splitlines()
    example = json.loads(line)
    assert example["text"] == "an invoice, or a letter about one"
    assert (example["model_label"], example["human_label"], example["reviewer"]) == ("invoice", "letter", "bob")
    assert example["task_id"] == task["id"] and example["run_id"] == task["flow_run_id"]
    assert run_cli("review", "export", "--flow", "other", "--db", db).stdout == ""
