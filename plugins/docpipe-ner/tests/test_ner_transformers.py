"""hf.ner's transformers backend on tiny BERT models built offline (see conftest.py).

The random-weights model checks the output's structure and offsets; the hand-set
"rule" model has exact answers, so word aggregation, BIO decoding, token windows,
chunk merging and the precisions can be checked entity by entity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from docpipe_ner.block import Ner
from docpipe_ner.chunks import chunk_spans
from pydantic import ValidationError

from docpipe.errors import MissingDependency

pytestmark = pytest.mark.ml

SENTENCE = "Angela Merkel met Tim Cooking of Apple in Berlins on 3 May 2019 with New York. "
EXPECTED = [("Angela Merkel", "PERSON"), ("Tim Cooking", "PERSON"), ("Apple", "ORG"),
            ("Berlins", "LOC"), ("New York", "LOC")]


def make(model: Path, **params: Any) -> tuple[Ner, Ner.Params]:
    p = Ner.Params(backend="transformers", model=str(model), **params)
    block = Ner()
    block.setup(p)
    return block, p


@pytest.fixture(scope="module")
def rules(rule_model: Path) -> tuple[Ner, Ner.Params]:
    return make(rule_model)


def ner(bp: tuple[Ner, Ner.Params], *documents: list[str], **params: Any) -> list[dict[str, Any]]:
    block, p = bp
    if params:
        p = p.model_copy(update=params)
    results = block.run([{"page_texts": pages, "language": "en"} for pages in documents], p)
    assert all(isinstance(r, dict) for r in results), results
    return results  # type: ignore[return-value]


def check(pages: list[str], out: dict[str, Any]) -> None:
    """The output format both backends share, and offsets that slice back to the text."""
    assert set(out) == {"entities", "entity_counts", "persons", "organizations", "locations",
                        "ner_status", "ner_model"}
    assert out["ner_status"] == "ok" and out["ner_model"]
    for e in out["entities"]:
        assert set(e) == {"text", "label", "start", "end", "page", "score"}
        assert e["label"] in {"PERSON", "ORG", "LOC", "DATE", "MONEY", "MISC"}
        assert 1 <= e["page"] <= len(pages)
        page = pages[e["page"] - 1]
        assert 0 <= e["start"] < e["end"] <= len(page)
        assert page[e["start"]:e["end"]] == e["text"] == e["text"].strip()
        assert isinstance(e["score"], float) and 0.0 <= e["score"] <= 1.0
    counts = {label: sum(e["label"] == label for e in out["entities"]) for label in out["entity_counts"]}
    assert out["entity_counts"] == counts
    persons = [" ".join(e["text"].split()) for e in out["entities"] if e["label"] == "PERSON"]
    assert out["persons"] == list(dict.fromkeys(persons))
    keys = [(e["page"], e["start"]) for e in out["entities"]]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_random_weights_give_well_formed_output(random_model: Path) -> None:
    bp = make(random_model)
    pages = [SENTENCE, "", SENTENCE * 40, "Zürich, São Paulo — naïve café ½ ©"]
    (out,) = ner(bp, pages)
    check(pages, out)
    assert out["entities"], "a random 9-label model tags something"
    assert len({e["page"] for e in out["entities"]}) >= 2


def test_rule_model_exact_entities(rules: tuple[Ner, Ner.Params]) -> None:
    (out,) = ner(rules, [SENTENCE])
    check([SENTENCE], out)
    # whole words: "Cooking" is cook + ##ing, "Berlins" berlin + ##s
    assert [(e["text"], e["label"]) for e in out["entities"]] == EXPECTED
    assert out["persons"] == ["Angela Merkel", "Tim Cooking"]
    assert out["organizations"] == ["Apple"] and out["locations"] == ["Berlins", "New York"]
    assert all(e["score"] > 0.99 for e in out["entities"])
    assert out["entity_counts"] == {"PERSON": 2, "ORG": 1, "LOC": 2, "DATE": 0, "MONEY": 0, "MISC": 0}


def test_long_pages_overflow_the_model_and_chunks_and_every_entity_is_found_once(
        rules: tuple[Ner, Ner.Params]) -> None:
    block, _ = rules
    (backend,) = block.backends.values()  # the one model serves every language
    assert backend.max_tokens == 64  # type: ignore[attr-defined]
    page = SENTENCE * 80  # ~6,400 characters: 2 chunks by default, dozens of 64-token windows each
    assert len(chunk_spans(page, 5000, 200)) == 2
    for params in ({}, {"max_chars": 300, "overlap": 100}, {"max_chars": 120, "overlap": 40}):
        (out,) = ner(rules, [SENTENCE, page], **params)
        check([SENTENCE, page], out)
        on_page_2 = [(e["text"], e["label"]) for e in out["entities"] if e["page"] == 2]
        assert on_page_2 == EXPECTED * 80, params
        starts = [e["start"] for e in out["entities"] if e["page"] == 2 and e["text"] == "Angela Merkel"]
        assert starts == [i * len(SENTENCE) for i in range(80)]


def test_documents_in_one_batch_match_one_at_a_time(rules: tuple[Ner, Ner.Params]) -> None:
    docs = [[SENTENCE], [], ["", SENTENCE * 3], ["no names here"]]
    assert ner(rules, *docs) == [ner(rules, d)[0] for d in docs]


def test_batch_size_does_not_change_results(rules: tuple[Ner, Ner.Params]) -> None:
    pages = [SENTENCE * n for n in (1, 7, 2, 30)]
    assert ner(rules, pages, batch_size=1) == ner(rules, pages, batch_size=64)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_precisions_load_and_agree_on_a_clear_cut_model(rule_model: Path, precision: str) -> None:
    bp = make(rule_model, precision=precision, device="cpu")
    (out,) = ner(bp, [SENTENCE * 3])
    check([SENTENCE * 3], out)
    assert [(e["text"], e["label"]) for e in out["entities"]] == EXPECTED * 3


def test_empty_pages_and_label_filter(rules: tuple[Ner, Ner.Params]) -> None:
    (empty,) = ner(rules, ["", " \n "])
    assert empty["entities"] == [] and set(empty["entity_counts"].values()) == {0}
    (only,) = ner(rules, [SENTENCE], labels=["LOC"])
    assert [e["text"] for e in only["entities"]] == ["Berlins", "New York"]
    assert only["entity_counts"] == {"LOC": 2} and only["persons"] == []


def test_missing_or_wrong_model_folders_fail_setup_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="model folder /nonexistent/ner does not exist"):
        make(Path("/nonexistent/ner"))  # found when the flow is validated
    gone = tmp_path / "gone"
    gone.mkdir()
    params = Ner.Params(backend="transformers", model=str(gone))
    gone.rmdir()
    with pytest.raises(MissingDependency, match=f"no transformers model folder at '{gone}'"):
        Ner().setup(params)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(MissingDependency, match="not a token-classification model folder"):
        make(tmp_path)
