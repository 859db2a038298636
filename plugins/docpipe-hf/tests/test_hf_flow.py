"""A whole flow over the repository's samples in process pools of 2 workers: ``pdf.text``
hands its text on as ``full_text``, ``hf.classify`` classifies it (int8), an ``expr`` stands
in for language detection and ``hf.translate`` runs only where the language is not English."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hf_helpers import ROOT, SAMPLES

from docpipe.engine import SUCCEEDED
from docpipe.testing import run_flow

DOCS = ["invoice.pdf", "lettre_fr.pdf", "report_de.pdf", "scanned.pdf"]
LANGUAGE = ("'de' if 'Quartalsbericht' in full_text else "
            "('fr' if 'Madame' in full_text else 'en')")


def flow(marian: Path) -> dict[str, Any]:
    return {
        "name": "hf-samples", "version": "1",
        "outputs": ["doc_class", "doc_class_score", "doc_class_top", "language", "translation",
                    "translated_from"],
        "steps": [
            {"id": "text", "block": "pdf.text", "outputs": {"text": "full_text"}},
            {"id": "language", "expr": LANGUAGE, "output": "language"},
            {"id": "classify", "block": "hf.classify", "params": {"precision": "int8"}},
            {"id": "translate", "block": "hf.translate", "when": "language != 'en'",
             "params": {"model": str(marian), "max_tokens": 48}},
        ],
    }


@pytest.mark.ml
@pytest.mark.slow
def test_classify_and_translate_the_samples_with_two_workers(doctype_model: Path,
                                                             marian_model: Path) -> None:
    result = run_flow(flow(marian_model), [SAMPLES / d for d in DOCS], workers=2)
    by_name = {Path(r.document).name: r for r in result.results}
    assert [r.status for r in result.results] == [SUCCEEDED] * len(DOCS), result.failed
    out = {name: r.outputs for name, r in by_name.items()}

    assert out["invoice.pdf"]["doc_class"] == "invoice"
    assert out["scanned.pdf"]["doc_class"] == "unknown"  # no text layer, no OCR in this flow
    # the French letter and the German report: the English MiniLM encoder is much less sure of
    # non-English text (MODEL_CARD.md), so only the shape of their results is checked here
    for o in out.values():
        assert 0.0 <= o["doc_class_score"] <= 1.0 and len(o["doc_class_top"]) <= 3

    # routed by `when`: English documents never reach the translation pool
    assert "translation" not in out["invoice.pdf"] and "translation" not in out["scanned.pdf"]
    for name, language in (("lettre_fr.pdf", "fr"), ("report_de.pdf", "de")):
        assert out[name]["translated_from"] == language
        assert isinstance(out[name]["translation"], str)


def test_translation_step_without_a_model_validates_and_is_skipped() -> None:
    """The pattern flows/idp.json uses: the step is in the flow, a flow param holds the model
    folder, and while it is unset no document reaches the step (and no pool starts)."""
    flow = {
        "name": "optional-translation", "version": "1",
        "params": {"translation_model": None},
        "outputs": ["language", "translation"],
        "steps": [
            {"id": "text", "expr": "'Guten Tag. Wie geht es Ihnen?'", "output": "full_text"},
            {"id": "language", "expr": "'de'", "output": "language"},
            {"id": "translate", "block": "hf.translate",
             "when": "language != 'en' and params.translation_model != None",
             "params": {"model": "${params.translation_model}"}},
        ],
    }
    result = run_flow(flow, ["a.pdf", "b.pdf"])
    assert [r.status for r in result.results] == [SUCCEEDED, SUCCEEDED]
    assert all(r.outputs == {"language": "de"} for r in result.results)


@pytest.mark.ml
@pytest.mark.slow
def test_the_idp_flow_translates_when_given_a_model(marian_model: Path, doctype_model: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """flows/idp.json itself: with `translation_model` set, the German and French samples get a
    translation (from the tiny test model, so only its shape is checked), English ones do not."""
    monkeypatch.setenv("DOCPIPE_PDF_PASSWORD", "docpipe")
    docs = ["invoice.pdf", "lettre_fr.pdf", "report_de.pdf"]
    result = run_flow(ROOT / "flows" / "idp.json", [SAMPLES / d for d in docs], workers=2,
                      params={"translation_model": str(marian_model)})
    assert [r.status for r in result.results] == [SUCCEEDED] * 3, result.failed
    out = {Path(r.document).name: r.outputs for r in result.results}
    assert "translation" not in out["invoice.pdf"] and out["invoice.pdf"]["language"] == "en"
    for name, language in (("lettre_fr.pdf", "fr"), ("report_de.pdf", "de")):
        assert out[name]["language"] == language and out[name]["translated_from"] == language
        assert isinstance(out[name]["translation"], str) and out[name]["translation"].strip()
