"""``hf.classify``: the contract, params, the default document-type classifier on its held-out
texts (fp32 and int8), zero-shot on texts it has never seen, ordering and odd input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docpipe_hf.classify import UNKNOWN, Classify, describe, too_little_text, windows_of
from docpipe_hf.runtime import clip_text
from hf_helpers import build_script
from pydantic import ValidationError

from docpipe.errors import BlockFailed, MissingDependency
from docpipe.plugins import Registry
from docpipe.testing import BlockContract

#: the held-out accuracy the default classifier must reach (models/doctype/MODEL_CARD.md:
#: 0.92 fp32 when this was written, 80 texts); a regression below this fails the build
#: the held-out split mixes written texts and (harder) real documents since doctype_real.jsonl
ACCURACY_FLOOR = 0.8
#: int8 may flip borderline texts, not many
INT8_AGREEMENT_FLOOR = 0.85
DOCTYPES = {"invoice", "contract", "cv", "letter", "policy", "scientific_article", "email",
            "receipt", "form", "manual", "other"}

pytestmark = pytest.mark.ml

#: zero-shot texts, written for these tests (not in models/data)
ZERO_SHOT = {
    "invoice": ("INVOICE No. 4471. Bill to: Fenwick Joinery. 3 x oak boards at EUR 42.00, "
                "delivery EUR 15.00. Total due EUR 141.00 within 30 days. VAT 19% included."),
    "contract": ("This Agreement is made between the Landlord and the Tenant. The Tenant shall pay "
                 "the rent monthly in advance. Either party may terminate this Agreement with three "
                 "months' written notice. Signed by both parties."),
    "medical report": ("Patient: 58-year-old male. Presenting complaint: chest pain on exertion. "
                       "ECG shows ST depression in leads V4-V6. Diagnosis: stable angina. Plan: "
                       "start aspirin and a beta blocker, refer for coronary angiography."),
    "CV": ("Curriculum vitae. Work experience: 2019-2024 software engineer at Northwind. "
           "Education: BSc Computer Science. Skills: Python, SQL, Docker. Languages: English, "
           "Spanish. References available on request."),
    "news article": ("The city council voted on Tuesday to close the old bridge to traffic after "
                     "engineers found cracks in its supports, the mayor told reporters. Repairs are "
                     "expected to take a year, officials said."),
}


def texts_of(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{"full_text": r["text"]} for r in rows]


@pytest.fixture(scope="module")
def held_out() -> list[dict[str, str]]:
    build = build_script()
    return build.split(build.load_rows())[1]


@pytest.fixture(scope="module")
def make(doctype_model: Path) -> Iterator[Any]:
    """Set up a block for params (cached per params within the module)."""
    cache: dict[str, Classify] = {}

    def make(**params: Any) -> tuple[Classify, Classify.Params]:
        p = Classify.Params(**params)
        key = p.model_dump_json()
        if key not in cache:
            block = Classify()
            block.setup(p)
            cache[key] = block
        return cache[key], p

    yield make
    for block in cache.values():
        block.teardown()


def classify(make: Any, texts: list[str], **params: Any) -> list[Any]:
    block, p = make(**params)
    return block.run([{"full_text": t} for t in texts], p)


class TestClassifyContract(BlockContract):
    block = Classify
    inputs = [{"full_text": "INVOICE No. 12. Total due: £40.00"}, {"full_text": ""}]

    @pytest.fixture(autouse=True)
    def _model(self, doctype_model: Path) -> None:
        self.params = {"model": str(doctype_model)}


class TestZeroShotContract(BlockContract):
    block = Classify
    params = {"mode": "zero-shot", "labels": ["invoice", "letter"]}
    inputs = [{"full_text": "Dear Sir, thank you for your letter."}]


def test_registered_with_its_manifest() -> None:
    info = Registry().blocks["hf.classify"]
    assert info.cls is Classify and info.dist == "docpipe-hf"
    m = Classify.manifest
    assert (m.runtime, m.device, m.batch) == ("process", "auto", 16)
    assert m.reads == {"full_text": str}
    assert set(m.writes) == {"doc_class", "doc_class_score", "doc_class_top", "doc_class_reason"}


@pytest.mark.parametrize("params, message", [
    ({"mode": "zero-shot"}, "needs labels"),
    ({"mode": "zero-shot", "labels": ["a"], "model": "."}, "takes embedding_model"),
    ({"model": "/no/such/model"}, "folder /no/such/model does not exist"),
    ({"mode": "zero-shot", "labels": ["a"], "embedding_model": "/no/such"}, "/no/such does not exist"),
    ({"labels": ["a", "b"]}, "labels are for mode 'zero-shot'"),
    ({"precision": "int8", "device": "cuda"}, "CPU only"),
    ({"precision": "fp16"}, "precision"),
    ({"top_k": 0}, "top_k"),
    ({"windows": 0}, "windows"),
    ({"min_score": 1.5}, "min_score"),
    ({"modle": "typo"}, "modle"),
])
def test_bad_params_are_rejected_before_any_document(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Classify.Params(**params)


def test_missing_model_folder_says_where_and_how(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"  # refused when the flow is planned, not per document
    with pytest.raises(ValidationError, match=r"folder .*no-such-model does not exist"):
        Classify.Params(model=str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDependency, match="has no config.json"):
        Classify().setup(Classify.Params(model=str(tmp_path / "empty")))


def test_default_classifier_reaches_the_floor_on_held_out_texts(make: Any, held_out: list[dict[str, str]],
                                                               ) -> None:
    block, p = make()
    assert set(block.labels) >= DOCTYPES
    results = block.run(texts_of(held_out), p)
    correct = sum(r["doc_class"] == row["label"] for r, row in zip(results, held_out, strict=True))
    accuracy = correct / len(held_out)
    assert len(held_out) >= 70
    assert accuracy >= ACCURACY_FLOOR, f"held-out accuracy {accuracy:.3f} < {ACCURACY_FLOOR}"


def test_int8_agrees_with_fp32(make: Any, held_out: list[dict[str, str]]) -> None:
    fp32, p32 = make()
    int8, p8 = make(precision="int8")
    a = fp32.run(texts_of(held_out), p32)
    b = int8.run(texts_of(held_out), p8)
    agree = sum(x["doc_class"] == y["doc_class"] for x, y in zip(a, b, strict=True)) / len(a)
    accuracy = sum(r["doc_class"] == row["label"] for r, row in zip(b, held_out, strict=True)) / len(b)
    assert agree >= INT8_AGREEMENT_FLOOR, f"int8 agrees with fp32 on {agree:.3f} of the texts"
    assert accuracy >= ACCURACY_FLOOR - 0.05, f"int8 held-out accuracy {accuracy:.3f}"


def test_results_keep_input_order_whatever_the_length_sorting(make: Any,
                                                             held_out: list[dict[str, str]]) -> None:
    rows = held_out[::8]  # mixed lengths and labels
    texts = [r["text"] for r in rows]
    together = classify(make, texts, forward_batch=3)
    alone = [classify(make, [t])[0] for t in texts]
    for a, b in zip(together, alone, strict=True):
        assert a["doc_class"] == b["doc_class"]
        assert a["doc_class_score"] == pytest.approx(b["doc_class_score"], abs=1e-4)


def test_outputs_are_well_formed(make: Any) -> None:
    (r,) = classify(make, ["Dear Ms Patel, thank you for your letter of 3 May. Yours sincerely, "
                           "J. Moreau"], top_k=4)
    top = r["doc_class_top"]
    assert [t["label"] for t in top][0] == r["doc_class"] == "letter"
    assert len(top) == 4 and r["doc_class_score"] == top[0]["score"]
    scores = [t["score"] for t in top]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    assert all(isinstance(t["label"], str) and isinstance(t["score"], float) for t in top)


def test_empty_text_is_unknown_and_bad_input_fails_only_its_document(make: Any) -> None:
    block, p = make()
    results = block.run([{"full_text": "  \n\t "}, {"full_text": None},
                         {"full_text": "RECEIPT. Coffee 3.40. Total 3.40. Paid by card."}], p)
    assert results[0] == {"doc_class": UNKNOWN, "doc_class_score": 0.0, "doc_class_top": [],
                          "doc_class_reason": "no text"}
    assert isinstance(results[1], BlockFailed) and "must be a string" in str(results[1])
    assert results[2]["doc_class"] == "receipt" and results[2]["doc_class_reason"] == ""


#: what OCR and text layers give for pages with nothing to classify (written for these tests)
TOO_LITTLE = {
    "empty form": "Name: ______________ Date: __ / __ / ____\n\nSignature: ______________",
    "drawing": "A  B  C\n| | |\n1:50 — Fig. 2",
    "greeting": "Hello world",
    "page furniture": "- 3 -\n\n\n\nPage 3 of 12",
    "OCR noise": "~ ,. '' ; : | / \\ _ - — . . ;; ' ` ¦ • ·",
}


@pytest.mark.parametrize("mode", ["model", "zero-shot"])
def test_too_little_text_gets_no_class_and_says_why(make: Any, mode: str) -> None:
    params: dict[str, Any] = {"mode": mode}
    if mode == "zero-shot":
        params["labels"] = ["invoice", "letter"]
    results = classify(make, list(TOO_LITTLE.values()), **params)
    for what, r in zip(TOO_LITTLE, results, strict=True):
        assert (r["doc_class"], r["doc_class_score"], r["doc_class_top"]) == (UNKNOWN, 0.0, []), what
    reasons = dict(zip(TOO_LITTLE, (r["doc_class_reason"] for r in results), strict=True))
    assert reasons["greeting"] == "too little text: 10 letters or digits, min_chars 30"
    assert reasons["OCR noise"] == "no text"


def test_min_chars_is_the_line(make: Any) -> None:
    exactly = "RECEIPT Coffee 3.40 Total 3.40 by card"  # 30 letters and digits
    assert too_little_text(exactly, 30) == "" and too_little_text(exactly, 31).startswith("too")
    (r,) = classify(make, [exactly])
    assert r["doc_class"] != UNKNOWN and r["doc_class_reason"] == ""
    (r,) = classify(make, [exactly], min_chars=31)
    assert r["doc_class"] == UNKNOWN
    (r,) = classify(make, ["Hello world"], min_chars=0)  # 0: classify whatever there is
    assert r["doc_class"] != UNKNOWN and r["doc_class_score"] > 0


def test_long_documents_are_cut_to_max_tokens(make: Any) -> None:
    head = "INVOICE No. 881. Bill to: Larch Ltd. Total due: EUR 1,200.00 within 14 days. "
    long = head + "Terms and conditions apply. " * 20000  # ~500 kB
    for windows in (1, 2):
        (r,) = classify(make, [long], windows=windows)
        (short,) = classify(make, [head + "Terms and conditions apply. " * 200], windows=windows)
        assert r == short  # the model reads the same windows at the start either way


def test_windows_are_consecutive_pieces_of_the_start() -> None:
    short = "Dear Ms Moreau, thank you for your letter of 3 May. " * 5
    assert windows_of(short, 256, 3) == [clip_text(short, 256)]  # all of it fits one window
    words = [f"w{i}" for i in range(5000)]
    long = "\n".join(" ".join(words[i:i + 10]) for i in range(0, 5000, 10))
    parts = windows_of(long, 64, 4)
    assert len(parts) == 4 and parts[0] == clip_text(long, 64)
    firsts = [int(p.split()[0][1:]) for p in parts]
    assert firsts == sorted(firsts) and firsts[0] == 0 and firsts[-1] < 1000  # the start only
    assert all(p.split()[0] in words for p in parts)  # each window starts at a whole word
    assert windows_of(long, 64, 1) == [clip_text(long, 64)]


def test_windows_average_the_probabilities_of_their_pieces(make: Any) -> None:
    """windows=2 gives the mean of the class probabilities of its two pieces, each read as
    a document of its own (whatever the model says about either)."""
    text = (ZERO_SHOT["CV"] + " ") * 6 + (ZERO_SHOT["invoice"] + " ") * 12
    first, second = windows_of(text, 256, 2)
    n = len(make()[0].labels)  # every label, so that each mean can be checked
    both, alone1, alone2 = (classify(make, [t], windows=w, top_k=n)[0]
                            for t, w in ((text, 2), (first, 1), (second, 1)))
    scores = {d["label"]: d["score"] for d in alone1["doc_class_top"]}
    for d in alone2["doc_class_top"]:
        scores[d["label"]] = (scores[d["label"]] + d["score"]) / 2
    got = {d["label"]: d["score"] for d in both["doc_class_top"]}
    assert got.keys() == scores.keys()
    assert all(abs(got[k] - scores[k]) < 1e-4 for k in got)
    assert both["doc_class"] == max(scores, key=scores.__getitem__)


def test_min_score_turns_an_unsure_best_into_other_and_says_why(make: Any) -> None:
    text = ZERO_SHOT["news article"] + " Tickets EUR 12.00, total due at the door."
    n = len(make()[0].labels)
    (plain,) = classify(make, [text], top_k=n)
    best = plain["doc_class_top"][0]
    if best["label"] == "other":  # min_score never changes an answer that is already other
        (r,) = classify(make, [text], top_k=n, min_score=1.0)
        assert r == plain
        return
    (above,) = classify(make, [text], top_k=n, min_score=round(best["score"] - 1e-3, 6))
    assert above == plain and plain["doc_class_reason"] == ""
    (below,) = classify(make, [text], top_k=n, min_score=min(1.0, best["score"] + 1e-3))
    other = next(d["score"] for d in plain["doc_class_top"] if d["label"] == "other")
    assert (below["doc_class"], below["doc_class_score"]) == ("other", other)
    assert below["doc_class_top"] == plain["doc_class_top"]  # the model's view, unchanged
    assert below["doc_class_reason"].startswith(
        f"unsure: best was {best['label']} at {best['score']:.2f} (min_score ")


def test_zero_shot_sorts_unseen_documents(make: Any) -> None:
    labels = list(ZERO_SHOT)
    results = classify(make, list(ZERO_SHOT.values()), mode="zero-shot", labels=labels)
    assert [r["doc_class"] for r in results] == labels
    for r in results:
        assert {t["label"] for t in r["doc_class_top"]} <= set(labels)


def test_zero_shot_takes_descriptions(make: Any) -> None:
    labels = {"bill": "An invoice asking the customer to pay for goods or services.",
              "agreement": "A legal contract with clauses, obligations and signatures."}
    results = classify(make, [ZERO_SHOT["invoice"], ZERO_SHOT["contract"]], mode="zero-shot",
                       labels=labels, top_k=5)
    assert [r["doc_class"] for r in results] == ["bill", "agreement"]
    assert all(len(r["doc_class_top"]) == 2 for r in results)


def test_default_descriptions() -> None:
    assert describe("invoice") == "This document is an invoice."
    assert describe("scientific_article") == "This document is a scientific article."


#: documents of none of the ten types, written for these tests (not in models/data)
NONE_OF_THEM = {
    "timetable": ("Line 7 — Harbour to University — weekdays. Harbour 06:05 06:35 07:05 07:35 "
                  "then every 20 minutes. Market Square 06:12 06:42 07:12 07:42. University "
                  "06:25 06:55 07:25 07:55. Sundays: every 40 minutes. Valid from 2 March."),
    "recipe": ("Leek and potato soup. Serves 4. Ingredients: 3 leeks, 2 potatoes, 1 onion, "
               "1 litre stock, 25 g butter. Method: soften the leeks and onion in the butter, "
               "add the potatoes and stock, simmer for 20 minutes and blend until smooth."),
}


@pytest.mark.parametrize("kind", [
    "timetable",
    pytest.param("recipe", marks=pytest.mark.xfail(
        reason="a known miss since the model learnt real manuals: this short recipe comes out "
               "manual (0.55); see the model card's limitations")),
])
def test_documents_of_none_of_the_types_are_other(make: Any, kind: str) -> None:
    results = classify(make, [NONE_OF_THEM[kind]])
    assert [r["doc_class"] for r in results] == ["other"], results
    assert all(r["doc_class_reason"] == "" for r in results)
