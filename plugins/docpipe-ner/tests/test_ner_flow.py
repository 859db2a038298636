"""hf.ner in whole flows through the engine: process pools of 2 workers, real models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docpipe_ner_testblocks
import pytest

from docpipe.testing import run_flow

pytestmark = [pytest.mark.ml, pytest.mark.slow]

OUTPUTS = ["persons", "organizations", "locations", "entity_counts", "entities"]
PEOPLE = [("Angela Merkel", "Berlin"), ("Emmanuel Macron", "Paris"), ("Joe Biden", "Washington"),
          ("Tim Cook", "Tokyo"), ("Satya Nadella", "London")]


def flow(**params: Any) -> dict[str, Any]:
    return {"name": "ner-test", "version": "1", "outputs": OUTPUTS,
            "steps": [{"id": "pages", "block": "nertest.pages"},
                      {"id": "language", "block": "nertest.language"},
                      {"id": "ner", "block": "hf.ner", "params": params}]}


def documents() -> list[str]:
    """Two pages each: the person on page 1, the city on page 2; one empty document."""
    docs = [f"{name} gave a speech on Monday.\f\fThe conference took place in {city}."
            for name, city in PEOPLE * 4]
    return [*docs, ""]


def test_spacy_flow_with_two_workers(text_files: Callable[..., list[str]]) -> None:
    texts = documents()
    paths = text_files(*texts)
    result = run_flow(flow(), paths, plugins=[docpipe_ner_testblocks], workers=2)
    assert result.counts == {"succeeded": len(paths), "failed": 0}, result.failed
    by_doc = {Path(r.document).name: r.outputs for r in result.results}
    for i, (name, city) in enumerate(PEOPLE * 4):
        out = by_doc[f"doc{i:04d}.txt"]
        assert out["persons"] == [name], out
        assert out["locations"] == [city], out
        pages = texts[i].split("\f")
        for e in out["entities"]:
            assert pages[e["page"] - 1][e["start"]:e["end"]] == e["text"]
        assert {e["text"]: e["page"] for e in out["entities"]}[city] == 3
    empty = by_doc[f"doc{len(texts) - 1:04d}.txt"]
    assert empty["entities"] == [] and empty["persons"] == []


def test_transformers_flow_in_a_worker(text_files: Callable[..., list[str]], rule_model: Path) -> None:
    paths = text_files("Angela Merkel met Tim Cook.\fApple opened in New York.", "nothing", "")
    result = run_flow(flow(backend="transformers", model=str(rule_model), precision="int8"), paths,
                      plugins=[docpipe_ner_testblocks], workers=1)
    assert result.counts == {"succeeded": 3, "failed": 0}, result.failed
    first, second, third = (r.outputs for r in result.results)
    assert first["persons"] == ["Angela Merkel", "Tim Cook"]
    assert first["organizations"] == ["Apple"] and first["locations"] == ["New York"]
    assert [e["page"] for e in first["entities"]] == [1, 1, 2, 2]
    assert all(isinstance(e["score"], float) for e in first["entities"])
    assert second["entities"] == third["entities"] == []


def test_setup_error_fails_each_document_with_the_install_hint(text_files: Callable[..., list[str]]) -> None:
    paths = text_files("Angela Merkel.", "Tim Cook.")
    result = run_flow(flow(model="en_core_web_missing"), paths, plugins=[docpipe_ner_testblocks],
                      workers=1)
    assert result.counts == {"succeeded": 0, "failed": 2}
    for r in result.results:
        assert "setup of block 'hf.ner' failed" in (r.error or "")
        assert "'en_core_web_missing' is not installed: pip install" in (r.error or "")
