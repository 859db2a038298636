"""``text.stats``: word and character counts."""

from __future__ import annotations

from pathlib import Path

from docpipe_pdf.stats import TextStats
from docpipe_pdf.text import PdfText

from docpipe.blocks import NoParams
from docpipe.errors import BlockFailed

SAMPLES = Path(__file__).resolve().parents[3] / "samples"


def test_manifest() -> None:
    assert TextStats.manifest.problems() == []
    assert TextStats.manifest.runtime == "inline"
    assert TextStats.manifest.reads == {"text": str}
    assert TextStats.manifest.writes == {"word_count": int, "char_count": int}
    # it reads what pdf.text writes
    assert PdfText.manifest.writes["text"] is TextStats.manifest.reads["text"]


def test_counts() -> None:
    batch = [{"text": "hello  world\nfoo"}, {"text": ""}, {"text": "Grüße, Straße!"}]
    assert TextStats().run(batch, NoParams()) == [
        {"word_count": 3, "char_count": 16},
        {"word_count": 0, "char_count": 0},
        {"word_count": 2, "char_count": 14},
    ]


def test_wrong_type_fails_that_document_only() -> None:
    first, second = TextStats().run([{"text": None}, {"text": "a b"}], NoParams())
    assert isinstance(first, BlockFailed) and "got NoneType" in str(first)
    assert second == {"word_count": 2, "char_count": 3}


def test_after_pdf_text() -> None:
    pdf = PdfText()
    params = PdfText.Params()
    pdf.setup(params)
    (doc,) = pdf.run([{"path": str(SAMPLES / "invoice.pdf")}], params)
    assert isinstance(doc, dict)
    (stats,) = TextStats().run([{"text": doc["text"]}], NoParams())
    assert isinstance(stats, dict)
    assert stats["char_count"] == len(doc["text"])
    assert 150 < stats["word_count"] < 400
