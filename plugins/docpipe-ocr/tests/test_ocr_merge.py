"""``ocr.merge``: OCR text where a page needed it, the text layer elsewhere."""

from __future__ import annotations

from typing import Any

from docpipe_ocr.merge import OcrMerge, merge
from docpipe_pdf.text import PdfText
from ocr_testdocs import FLOW

from docpipe.blocks import NoParams, type_name
from docpipe.errors import BlockFailed
from docpipe.planner import plan_file
from docpipe.plugins import Registry
from docpipe.testing import BlockContract


def pages(*texts: str) -> list[dict[str, Any]]:
    return [{"number": i, "text": t, "needs_ocr": not t, "width": 595.0, "height": 842.0}
            for i, t in enumerate(texts, 1)]


class TestMergeContract(BlockContract):
    block = OcrMerge
    inputs = [
        {"pages": pages("one", ""), "needs_ocr_pages": [2], "ocr_text": ["two"]},
        {"pages": pages("one"), "needs_ocr_pages": [], "ocr_text": ["stray"]},
    ]


def test_manifest() -> None:
    m = OcrMerge.manifest
    assert m.problems() == [] and m.runtime == "inline"
    assert m.writes == {"page_texts": list[str], "full_text": str, "pages_ocrd": int}
    # the planner compares type names: these must be exactly what pdf.text writes
    for key in ("pages", "needs_ocr_pages"):
        assert type_name(m.reads[key]) == type_name(PdfText.manifest.writes[key])


def test_the_flow_plans() -> None:
    plan = plan_file(FLOW, Registry())
    assert [n.id for n in plan.nodes] == ["text", "ocr", "merge"]
    assert plan.key_types["ocr_text"] == "list[str]"
    assert plan.node("merge").deps == {plan.node("text").idx, plan.node("ocr").idx}


def test_ocr_text_replaces_the_pages_that_needed_it() -> None:
    r = merge(pages("Page one text", "", "p. 3"), [2, 3], ["OCR two", "OCR three"])
    assert r == {"page_texts": ["Page one text", "OCR two", "OCR three"],
                 "full_text": "Page one text\n\nOCR two\n\nOCR three", "pages_ocrd": 2}


def test_no_page_needed_ocr() -> None:
    r = merge(pages("a", "", "c"), [], [])
    assert r == {"page_texts": ["a", "", "c"], "full_text": "a\n\nc", "pages_ocrd": 0}


def test_run_over_a_batch() -> None:
    batch = [{"pages": pages(""), "needs_ocr_pages": [1], "ocr_text": ["scanned"]},
             {"pages": pages("x"), "needs_ocr_pages": [1], "ocr_text": []}]
    first, second = OcrMerge().run(batch, NoParams())
    assert first == {"page_texts": ["scanned"], "full_text": "scanned", "pages_ocrd": 1}
    assert isinstance(second, BlockFailed) and "0 OCR texts for 1 pages" in str(second)


def test_inputs_that_disagree_fail_that_document() -> None:
    unknown = merge(pages("a"), [5], ["x"])
    assert isinstance(unknown, BlockFailed) and "page 5 needs OCR but is not in 'pages'" in str(unknown)
    assert isinstance(merge(pages("a"), [1], [None]), BlockFailed)
    assert isinstance(merge([{"text": "no number"}], [], []), BlockFailed)
    assert isinstance(merge(None, [], []), BlockFailed)
