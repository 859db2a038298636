"""``text.language`` on the repository's sample PDFs, on other languages and on odd input."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docpipe_text
import pymupdf
import pytest
from docpipe_text.language import Language, bounded_sample, is_garbage
from pydantic import ValidationError

from docpipe.blocks import Result
from docpipe.errors import BlockFailed
from docpipe.plugins import Registry
from docpipe.testing import BlockContract

SAMPLES = Path(__file__).resolve().parents[3] / "samples"
WRITES = set(Language.manifest.writes)

SPANISH = (
    "La empresa presentó ayer los resultados del primer trimestre. Las ventas crecieron un "
    "siete por ciento respecto al mismo periodo del año anterior, sobre todo en el mercado "
    "latinoamericano, mientras que los costes de energía siguieron siendo elevados."
)
GERMAN = (
    "Die Gesellschaft hat im abgelaufenen Geschäftsjahr ihren Umsatz deutlich gesteigert. "
    "Der Vorstand schlägt der Hauptversammlung vor, eine Dividende auszuschütten, und dankt "
    "allen Mitarbeiterinnen und Mitarbeitern für ihren Einsatz."
)
FRENCH = (
    "Nous vous remercions de votre lettre du douze mars. Les documents que vous avez demandés "
    "vous seront envoyés dans les meilleurs délais, et nous restons à votre disposition pour "
    "toute question concernant votre dossier."
)
ENGLISH = (
    "The committee reviewed the annual report and agreed that the company should continue "
    "to invest in training, while keeping a close watch on the cost of energy and materials "
    "throughout the coming year."
)


def pdf_pages(name: str) -> list[str]:
    with pymupdf.open(SAMPLES / name) as doc:
        return [page.get_text() for page in doc]


@pytest.fixture(scope="module")
def block() -> Language:
    b = Language()
    b.setup(Language.Params())
    return b


def detect(block: Language, pages: list[Any], **params: Any) -> Result:
    (result,) = block.run([{"page_texts": pages}], Language.Params(**params))
    return result


def ok(result: Result) -> dict[str, Any]:
    assert isinstance(result, dict), f"expected a result, got {result!r}"
    assert set(result) == WRITES
    return result


class TestLanguageContract(BlockContract):
    block = Language
    params = {"min_chars": 20, "max_chars": 10000}
    inputs = [{"page_texts": [GERMAN, FRENCH]}, {"page_texts": []}, {"page_texts": ["12345"]}]


def test_manifest_and_registration() -> None:
    m = Language.manifest
    assert m.reads == {"page_texts": list[str]}
    assert m.writes == {"language": str, "language_score": float, "page_languages": list[dict]}
    assert m.runtime == "thread"
    registry = Registry(entry_points=False, extra=[docpipe_text])
    assert registry.broken == []
    assert registry.get("text.language").cls is Language


def test_params_are_validated() -> None:
    assert Language.Params().model_dump() == {"min_chars": 20, "max_chars": 10000}
    with pytest.raises(ValidationError):
        Language.Params(min_chars=-1)
    with pytest.raises(ValidationError):
        Language.Params(max_chars=10)
    with pytest.raises(ValidationError):
        Language.Params(language="en")  # type: ignore[call-arg]


@pytest.mark.parametrize(("sample", "language"),
                         [("report_de.pdf", "de"), ("lettre_fr.pdf", "fr"), ("invoice.pdf", "en")])
def test_samples(block: Language, sample: str, language: str) -> None:
    pages = pdf_pages(sample)
    result = ok(detect(block, pages))
    assert result["language"] == language
    assert result["language_score"] > 0.9
    assert [p["page"] for p in result["page_languages"]] == list(range(1, len(pages) + 1))
    assert {p["language"] for p in result["page_languages"]} == {language}


def test_spanish(block: Language) -> None:
    result = ok(detect(block, [SPANISH]))
    assert (result["language"], result["page_languages"][0]["language"]) == ("es", "es")


def test_mixed_pages_get_their_own_language(block: Language) -> None:
    german, french = pdf_pages("report_de.pdf")[0], pdf_pages("lettre_fr.pdf")[0]
    result = ok(detect(block, [german, french, ""]))
    assert [(p["page"], p["language"]) for p in result["page_languages"]] == [
        (1, "de"), (2, "fr"), (3, "unknown")]
    assert result["page_languages"][2]["score"] == 0.0
    assert result["language"] in {"de", "fr"}


def test_document_language_follows_the_bulk_of_the_text(block: Language) -> None:
    # a short English cover page and four German pages: the text is German
    result = ok(detect(block, [ENGLISH[:120]] + [GERMAN] * 4))
    assert result["language"] == "de"
    assert result["page_languages"][0]["language"] == "en"


def test_chinese_is_iso_639_1(block: Language) -> None:
    result = ok(detect(block, ["本公司在第一季度的销售额比去年同期增长了百分之七，主要得益于海外市场的强劲需求。"],
                       min_chars=10))
    assert result["language"] == "zh"


@pytest.mark.parametrize("pages", [
    [],
    [""],
    ["   \n\t  "],
    ["1234 5678 90.12 -- 2024-03-15"],
    ["€ 12,80 / % & $ 4.50"],
    ["Hello"],
    ["Kubernetes"],
    ["\x00\x01\x02\x03" * 50],
    [random.Random(1).randbytes(4000).decode("latin-1")],
    [random.Random(2).randbytes(4000).decode("utf-8", "replace")],
    [random.Random(3).randbytes(4000).decode("utf-8", "ignore")],
    ["\ue000\ue001\ue002 private use " * 30],
    [None],
])
def test_odd_input_is_unknown(block: Language, pages: list[Any]) -> None:
    result = ok(detect(block, pages))
    assert (result["language"], result["language_score"]) == ("unknown", 0.0)
    assert all((p["language"], p["score"]) == ("unknown", 0.0) for p in result["page_languages"])
    assert len(result["page_languages"]) == len(pages)


def test_min_chars_counts_letters(block: Language) -> None:
    text = "Guten Morgen, liebe Leute!"  # 21 letters
    assert ok(detect(block, [text], min_chars=21))["language"] != "unknown"
    assert ok(detect(block, [text], min_chars=22))["language"] == "unknown"
    assert ok(detect(block, ["12 34 56 78 90 Hallo"], min_chars=20))["language"] == "unknown"


def test_wrong_input_types_fail_that_document_only(block: Language) -> None:
    bad_list, bad_page, good = block.run(
        [{"page_texts": "not a list"}, {"page_texts": ["ok", 42]}, {"page_texts": [ENGLISH]}],
        Language.Params())
    assert isinstance(bad_list, BlockFailed) and "got str" in str(bad_list)
    assert isinstance(bad_page, BlockFailed) and "page 2" in str(bad_page)
    assert ok(good)["language"] == "en"


def test_deterministic_across_calls_order_and_threads() -> None:
    texts = [GERMAN, FRENCH, ENGLISH, SPANISH, "ein kurzer deutscher und english mixed Satz hier"]
    first = Language()
    first.setup(Language.Params())
    expected = [first.detect(t) for t in texts]
    again = Language()  # a new block, texts in reverse order, each twice
    assert [again.detect(t) for t in reversed(texts * 2)] == list(reversed(expected * 2))
    with ThreadPoolExecutor(8) as pool:  # one block shared by threads, as in the thread runtime
        assert list(pool.map(first.detect, texts * 6)) == expected * 6


def test_long_text_is_sampled_from_start_to_end(block: Language) -> None:
    words = [f"w{i:06d}" for i in range(20000)]  # 160,000 characters
    text = " ".join(words)
    sample = bounded_sample(text, 10000)
    assert len(sample) <= 10000
    chunks = sample.split(" ")
    assert set(chunks) <= set(words)  # whole words only
    assert int(chunks[0][1:]) < 200 and int(chunks[-1][1:]) > 19800  # from the start to the end
    assert bounded_sample("short text", 10000) == "short text"
    # a long German body after an English preface: the sample, and the result, are German
    preface = ENGLISH * 3
    result = ok(detect(block, [preface + " " + GERMAN * 200], max_chars=2000))
    assert result["language"] == "de"


def test_garbage_check() -> None:
    assert is_garbage("\x00\x01abc\x02\x03")
    assert not is_garbage(GERMAN)
    assert not is_garbage("")
