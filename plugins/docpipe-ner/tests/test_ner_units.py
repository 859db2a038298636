"""The model-free parts of hf.ner: chunking, merging, labels, BIO decoding, params, output."""

from __future__ import annotations

import random

import pytest
from docpipe_ner.block import Ner, document_result
from docpipe_ner.chunks import Found, chunk_spans, merge, trim
from docpipe_ner.labels import LABELS, decode_tags, normalise, parse_tag
from pydantic import ValidationError

from docpipe.blocks import page_list
from docpipe.errors import BlockFailed
from docpipe.plugins import Registry


def words_text(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    seps = [" ", " ", " ", "\n", "  ", ", "]
    return "".join(rng.choice(words) + rng.choice(seps) for _ in range(n))


@pytest.mark.parametrize(("max_chars", "overlap"), [(50, 0), (50, 10), (100, 30), (300, 149), (1000, 100)])
def test_chunks_cover_the_text_overlap_and_never_cut_words(max_chars: int, overlap: int) -> None:
    text = words_text(400)
    spans = chunk_spans(text, max_chars, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (s1, e1), (s2, _) in zip(spans, spans[1:], strict=False):
        assert e1 - s1 <= max_chars and s1 < s2
        assert s2 <= e1 or not text[e1:s2].strip(), "a gap between chunks holds only whitespace"
        if overlap:
            assert e1 - s2 >= overlap - len("epsilon, "), "consecutive chunks overlap"
        # cuts fall between words
        assert text[e1].isspace() and (s2 == 0 or text[s2 - 1].isspace())
        assert not text[s2].isspace()
    assert all(e - s <= max_chars for s, e in spans)


def test_short_empty_and_unbreakable_texts() -> None:
    assert chunk_spans("Angela Merkel", 100, 10) == [(0, 13)]
    assert chunk_spans("", 100, 10) == []
    assert chunk_spans(" \n\t ", 100, 10) == []
    blob = "x" * 250  # no whitespace at all: hard cuts, still covered, still overlapping
    spans = chunk_spans(blob, 100, 20)
    assert spans == [(0, 100), (80, 180), (160, 250)]
    tail = "word " * 30 + " " * 200  # trailing whitespace makes no empty chunk
    assert all(tail[s:e].strip() for s, e in chunk_spans(tail, 100, 20))


def test_merge_keeps_an_entity_in_the_overlap_once_and_prefers_the_whole_one() -> None:
    # chunk A = [0, 100), chunk B = [80, 200); "Angela Merkel" at 95..108 is clipped in A
    clipped = Found(95, 100, "PERSON")
    whole = Found(95, 108, "PERSON")
    both = Found(85, 90, "ORG")  # inside the overlap: found by both chunks
    pieces = [(0, 100, [Found(10, 15, "LOC"), both, clipped]), (80, 200, [both, whole, Found(150, 160, "DATE")])]
    assert merge(pieces, 200) == [Found(10, 15, "LOC"), both, whole, Found(150, 160, "DATE")]


def test_merge_trusts_the_chunk_with_more_context() -> None:
    # the same stretch read differently by two chunks: the one far from its cut wins
    near_cut = Found(90, 98, "ORG")  # 2 characters before chunk A's cut at 100
    centred = Found(90, 98, "PERSON")  # 10 characters after chunk B's start at 80
    assert merge([(0, 100, [near_cut]), (80, 200, [centred])], 200) == [centred]
    assert merge([(0, 1000, [Found(1, 3, "ORG")])], 1000) == [Found(1, 3, "ORG")]


def test_trim_strips_whitespace() -> None:
    text = " \nTim Cook  "
    assert trim(Found(0, len(text), "PERSON"), text) == Found(2, 10, "PERSON")
    assert trim(Found(0, 2, "PERSON"), text) is None


def test_label_mapping() -> None:
    assert [normalise(x) for x in ("PERSON", "PER", "per", "ORG", "GPE", "LOC", "DATE", "MONEY")] == [
        "PERSON", "PERSON", "PERSON", "ORG", "LOC", "LOC", "DATE", "MONEY"]
    assert {normalise(x) for x in ("NORP", "FAC", "EVENT", "PRODUCT", "WORK_OF_ART", "LAW", "LANGUAGE",
                                   "MISC", "DRUG")} == {"MISC"}
    assert {normalise(x) for x in ("CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "TIME")} == {None}


def test_bio_decoding() -> None:
    assert parse_tag("B-PER") == ("B", "PER") and parse_tag("O") == ("O", "")
    assert parse_tag("I-WORK_OF_ART") == ("I", "WORK_OF_ART") and parse_tag("PER") == ("I", "PER")
    assert parse_tag("S-LOC") == ("S", "LOC") and parse_tag("NON-PROFIT") == ("I", "NON-PROFIT")
    tags = [parse_tag(t) for t in ["B-PER", "I-PER", "O", "I-ORG", "B-ORG", "B-LOC", "I-PER", "I-PER"]]
    assert decode_tags(tags) == [(0, 1, "PER"), (3, 3, "ORG"), (4, 4, "ORG"), (5, 5, "LOC"), (6, 7, "PER")]
    bioes = [parse_tag(t) for t in ["S-LOC", "S-LOC", "B-PER", "E-PER", "I-PER"]]
    assert decode_tags(bioes) == [(0, 0, "LOC"), (1, 1, "LOC"), (2, 3, "PER"), (4, 4, "PER")]
    assert decode_tags([]) == []


def test_params() -> None:
    assert Ner.Params().backend == "spacy"
    with pytest.raises(ValidationError, match="needs 'model'"):
        Ner.Params(backend="transformers")
    with pytest.raises(ValidationError, match="less than max_chars / 2"):
        Ner.Params(max_chars=100, overlap=50)
    with pytest.raises(ValidationError):
        Ner.Params(labels=["PER"])
    with pytest.raises(ValidationError):
        Ner.Params(labels=[])
    with pytest.raises(ValidationError, match="CPU only"):
        Ner.Params(backend="transformers", model="m", precision="int8", device="cuda")
    with pytest.raises(ValidationError):
        Ner.Params(unknown=1)
    # a model folder that is not there fails the flow's validation; a spaCy package name is kept
    with pytest.raises(ValidationError, match="model folder /no/such/model does not exist"):
        Ner.Params(backend="transformers", model="/no/such/model")
    with pytest.raises(ValidationError, match="model folder ./nope does not exist"):
        Ner.Params(model="./nope")
    assert Ner.Params(model="en_core_web_sm").model == "en_core_web_sm"


def test_document_result_format() -> None:
    pages = ["Tim  Cook met Tim Cook in Berlin.", "", "Apple, 3 May, $5, five"]
    found = [[Found(0, 9, "PERSON"), Found(14, 22, "PERSON"), Found(26, 32, "GPE")], [],
             [Found(0, 5, "ORG", 0.912345), Found(7, 12, "DATE"), Found(14, 16, "MONEY"), Found(18, 22, "CARDINAL")]]
    out = document_result(pages, found, frozenset(LABELS))
    assert out["persons"] == ["Tim Cook"] and out["locations"] == ["Berlin"] and out["organizations"] == ["Apple"]
    assert out["entity_counts"] == {"PERSON": 2, "ORG": 1, "LOC": 1, "DATE": 1, "MONEY": 1, "MISC": 0}
    assert [e["page"] for e in out["entities"]] == [1, 1, 1, 3, 3, 3]
    assert out["entities"][3] == {"text": "Apple", "label": "ORG", "start": 0, "end": 5, "page": 3, "score": 0.9123}
    only = document_result(pages, found, frozenset({"ORG", "LOC"}))
    assert only["entity_counts"] == {"ORG": 1, "LOC": 1} and only["persons"] == []


def test_bad_page_texts_fail_that_document_only() -> None:
    assert isinstance(page_list("text"), BlockFailed)
    assert "page 2" in str(page_list(["a", 3]))
    assert page_list(["a", None]) == ["a", ""]


def test_registered_by_entry_point() -> None:
    info = Registry().get("hf.ner")
    assert info.cls is Ner and info.dist == "docpipe-ner"
