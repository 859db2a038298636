"""``hf.translate`` on a tiny MarianMT model built offline (random weights): loading,
sentence chunking, cross-document batching in generate() and pass-through. The model's
output means nothing, so these tests check structure, never meaning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docpipe_hf.sentences import chunk_text, paragraphs, split_sentences
from docpipe_hf.translate import Translate, primary
from pydantic import ValidationError

from docpipe.errors import BlockFailed, MissingDependency
from docpipe.testing import BlockContract

GERMAN = ("Die Firma Müller & Söhne hat im ersten Quartal mehr verkauft. Der Umsatz stieg um "
          "sieben Prozent. Dr. Weber erklärte die Zahlen am Montag, z.B. die Kosten für Energie. "
          "Für das Jahr erwarten wir ein Wachstum zwischen fünf und acht Prozent.\n\n"
          "Die Geschäftsführung dankt allen Mitarbeiterinnen und Mitarbeitern. Fragen beantwortet "
          "Frau J. Schulz gern.")
FRENCH = "Madame, Monsieur, nous avons bien reçu votre commande. Elle sera expédiée demain."


@pytest.fixture(scope="module")
def make(marian_model: Path) -> Iterator[Any]:
    blocks: list[Translate] = []

    def make(**params: Any) -> tuple[Translate, Translate.Params]:
        p = Translate.Params(model=str(marian_model), **params)
        block = Translate()
        block.setup(p)
        blocks.append(block)
        return block, p

    yield make
    for block in blocks:
        block.teardown()


class TestTranslateContract(BlockContract):
    block = Translate
    inputs = [{"full_text": GERMAN, "language": "de"}, {"full_text": "Hello.", "language": "en"}]

    @pytest.fixture(autouse=True)
    def _model(self, marian_model: Path) -> None:
        self.params = {"model": str(marian_model)}


# --- the sentence splitter and chunker (no model) -------------------------------------------


def test_sentences_keep_abbreviations_and_initials_together() -> None:
    assert split_sentences("Dr. Weber kam um 9 Uhr. Er brachte z.B. Kuchen mit. Danke!") == [
        "Dr. Weber kam um 9 Uhr.", "Er brachte z.B. Kuchen mit.", "Danke!"]
    assert split_sentences('J. Smith wrote "Hi." Then he left? Yes… 42 people stayed.') == [
        'J. Smith wrote "Hi."', "Then he left?", "Yes…", "42 people stayed."]
    assert split_sentences("version 2.1 is out. it works") == ["version 2.1 is out. it works"]


def test_paragraphs_are_blank_line_separated_and_unwrapped() -> None:
    assert paragraphs("First line\nwrapped here.\n\n  \n\nSecond\tpara.\n") == [
        "First line wrapped here.", "Second para."]


def test_chunks_hold_whole_sentences_within_the_budget() -> None:
    count = lambda texts: [len(t.split()) for t in texts]  # noqa: E731 - one token per word
    text = "One two three. Four five six. Seven eight.\n\nNine ten eleven twelve thirteen fourteen fifteen."
    assert chunk_text(text, 6, count) == [["One two three. Four five six.", "Seven eight."],
                                          ["Nine ten eleven twelve thirteen fourteen", "fifteen."]]
    giant = "x" * 50
    assert chunk_text(giant, 4, lambda ts: [len(t) // 5 for t in ts]) == [[giant[i:i + 20]
                                                                        for i in range(0, 50, 20)]]


def test_language_tags_compare_on_the_primary_subtag() -> None:
    assert primary("en-GB") == primary("EN_us") == primary(" en ") == "en"


# --- the block on the tiny Marian model -----------------------------------------------------


@pytest.mark.ml
def test_chunking_with_the_real_tokenizer(make: Any) -> None:
    block, _ = make(max_tokens=24)
    paras = chunk_text(GERMAN * 3, block.budget, block._count)
    chunks = [c for p in paras for c in p]
    assert len(paras) == 4  # GERMAN has 2 paragraphs; joined thrice, the seams merge two
    assert len(chunks) > 6
    lengths = block._count(chunks)
    assert max(lengths) <= block.budget + 2  # sentence joins may add a token or two
    assert " ".join(chunks) == " ".join((GERMAN * 3).split())  # nothing lost, order kept


@pytest.mark.ml
def test_one_translation_per_document_and_pass_through(make: Any) -> None:
    block, p = make(max_tokens=32)
    batch = [{"full_text": GERMAN, "language": "de"}, {"full_text": "Already English.", "language": "en-GB"},
             {"full_text": FRENCH, "language": "fr"}, {"full_text": "   ", "language": "de"}]
    results = block.run(batch, p)
    assert len(results) == 4 and all(set(r) == {"translation", "translated_from"} for r in results)
    assert [r["translated_from"] for r in results] == ["de", "en-GB", "fr", "de"]
    assert results[1]["translation"] == "Already English."
    assert results[3]["translation"] == "   "
    german = results[0]["translation"]
    assert isinstance(german, str) and german.count("\n\n") == 1  # its two paragraphs
    assert isinstance(results[2]["translation"], str) and "\n\n" not in results[2]["translation"]


@pytest.mark.ml
def test_chunks_of_all_documents_share_generate_calls_sorted_by_length(make: Any) -> None:
    block, p = make(max_tokens=24, chunk_batch=64)
    calls: list[list[int]] = []
    generate = block.model.generate

    def spy(**kwargs: Any) -> Any:
        calls.append(kwargs["attention_mask"].sum(-1).tolist())
        return generate(**kwargs)

    block.model.generate = spy
    docs = [{"full_text": GERMAN, "language": "de"}, {"full_text": FRENCH, "language": "fr"}]
    block.run(docs, p)
    expected = sum(len(c) for d in docs for c in chunk_text(d["full_text"], block.budget, block._count))
    assert len(calls) == 1 and len(calls[0]) == expected  # both documents, one call
    assert calls[0] == sorted(calls[0], reverse=True)

    calls.clear()
    small = p.model_copy(update={"chunk_batch": 2})
    block.run(docs, small)
    assert [len(c) for c in calls] == [2] * (expected // 2) + ([1] if expected % 2 else [])


@pytest.mark.ml
def test_deterministic(make: Any) -> None:
    # (not compared across different batches: padding changes the float rounding, and the
    # random weights' near-tied logits then pick other tokens; a trained model has margins)
    block, p = make(max_tokens=32)
    docs = [{"full_text": GERMAN, "language": "de"}, {"full_text": FRENCH, "language": "fr"}]
    first = block.run(docs, p)
    assert block.run(docs, p) == first
    assert [r["translated_from"] for r in first] == ["de", "fr"]


@pytest.mark.ml
def test_beam_search_and_output_cap(make: Any) -> None:
    block, p = make(num_beams=2, max_new_tokens=5)
    (r,) = block.run([{"full_text": FRENCH, "language": "fr"}], p)
    ids = block.tokenizer(r["translation"], add_special_tokens=False)["input_ids"]
    assert len(ids) <= 5 * 2  # two chunks at most, 5 new tokens each


@pytest.mark.ml
def test_bad_input_fails_only_its_document(make: Any) -> None:
    block, p = make()
    results = block.run([{"full_text": 3, "language": "de"}, {"full_text": FRENCH, "language": "fr"}], p)
    assert isinstance(results[0], BlockFailed) and "must be strings" in str(results[0])
    assert isinstance(results[1], dict)


def test_no_model_ships_and_setup_says_so(tmp_path: Path) -> None:
    with pytest.raises(MissingDependency, match="has no model. No translation model ships"):
        Translate().setup(Translate.Params())
    with pytest.raises(ValidationError, match=r"folder .*opus-mt-de-en does not exist"):
        Translate.Params(model=str(tmp_path / "opus-mt-de-en"))  # when the flow is planned
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDependency, match=r"has no config.json.*No translation model ships"):
        Translate().setup(Translate.Params(model=str(tmp_path / "empty")))
    with pytest.raises(ValidationError, match="num_beams"):
        Translate.Params(num_beams=0)
