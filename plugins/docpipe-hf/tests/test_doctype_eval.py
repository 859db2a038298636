"""The real-document evaluation set of the document-type classifier
(``models/eval/real_docs.jsonl``) and its script (``models/eval_real.py``): the set is
well-formed, sourced and licensed, disjoint from the training data, and the script runs the
real block over it. The figures it prints are reported in the model card, never asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hf_helpers import MODELS, ROOT, build_script, models_script


def eval_script() -> ModuleType:
    return models_script("eval_real")


SETS = [MODELS / "eval" / "real_docs.jsonl", MODELS / "eval" / "frozen_docs.jsonl"]


@pytest.mark.parametrize("path", SETS, ids=lambda p: p.stem)
def test_the_set_is_well_formed_sourced_and_unseen(path: Path) -> None:
    rows = eval_script().load(path)
    labels = {r["label"] for r in build_script().load_rows()}
    assert len(rows) >= 30 and len({r["id"] for r in rows}) == len(rows)
    assert {r["label"] for r in rows} <= labels and "other" in {r["label"] for r in rows}
    for r in rows:
        assert r["source"] and r["licence"] and len(r["text"]) > 0, r["id"]
    # no evaluation document, nor a piece of one, is in the training data
    training = "\n".join(r["text"] for r in build_script().load_rows())
    squeeze = " ".join(training.split())
    for r in rows:
        head = " ".join(r["text"].split())[100:300]
        assert head not in squeeze, f"{r['id']} is in models/data"


def test_training_and_test_documents_come_from_different_sources() -> None:
    """models/data/assemble_real.py: no CTAN package or project gives documents to two of
    the training rows, the frozen set and the first real set; its rows match its lists."""
    spec = importlib.util.spec_from_file_location("assemble_real",
                                                  MODELS / "data" / "assemble_real.py")
    assert spec is not None and spec.loader is not None
    assemble = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(assemble)
    assemble.check_apart()  # raises SystemExit when a source is shared
    for entries, path in ((assemble.TRAIN, assemble.TRAIN_OUT),
                          (assemble.FROZEN, assemble.FROZEN_OUT)):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert [r["label"] for r in rows] == [label for label, *_ in entries], path.name
        assert all(r["source"] and r["licence"] and r["text"].strip() for r in rows), path.name


@pytest.mark.ml
def test_the_script_runs_the_block_and_reports(doctype_model: Path, tmp_path: Path) -> None:
    rows = eval_script().load()
    few = [next(r for r in rows if r["label"] == "invoice"), next(r for r in rows if r["label"] == "other")]
    data = tmp_path / "few.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in few), encoding="utf-8")
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(MODELS / "eval_real.py"), "--data", str(data),
                           "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 documents of the ten types: accuracy" in done.stdout
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert (figures["typed"], figures["out_of_domain"]) == (1, 1)
    assert [d["id"] for d in figures["per_document"]] == [r["id"] for r in few]
    assert 0.0 <= figures["ood_confident_share"] <= 1.0
