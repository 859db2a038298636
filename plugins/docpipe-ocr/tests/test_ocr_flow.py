"""The OCR flow (pdf.text -> map ocr.tesseract over needs_ocr_pages -> ocr.merge) on the engine,
with real worker processes."""

from __future__ import annotations

from pathlib import Path

import pytesseract
import pytest
from docpipe_pdf.text import PdfText
from ocr_testdocs import FLOW, SAMPLES, SCAN_PNG_WORDS, SCANNED_PDF_WORDS, fax_frames, mixed_pdf, multi_page_tiff

from docpipe.engine import DocResult
from docpipe.testing import run_flow

FAST = {"dpi": 150}


def has_words(text: str, words: tuple[str, ...]) -> bool:
    return all(w.lower() in text.lower() for w in words)


@pytest.mark.slow
def test_flow_over_scans_text_pdfs_and_a_tiff(tmp_path: Path) -> None:
    docs = [SAMPLES / "scanned.pdf", SAMPLES / "invoice.pdf", mixed_pdf(tmp_path / "mixed.pdf"),
            multi_page_tiff(tmp_path / "fax.tif", fax_frames()), SAMPLES / "scan.png",
            SAMPLES / "corrupt.pdf"]
    result = run_flow(FLOW, docs, params=FAST, workers=2)
    by_name: dict[str, DocResult] = {Path(r.document).name: r for r in result.results}
    assert [r.status for r in result.results] == ["succeeded"] * 5 + ["failed"]

    scanned = by_name["scanned.pdf"].outputs
    assert scanned["pages_ocrd"] == 1 and has_words(scanned["full_text"], SCANNED_PDF_WORDS)

    # a text PDF needs no OCR: its full text is its text layer
    invoice = by_name["invoice.pdf"].outputs
    assert invoice["pages_ocrd"] == 0
    (layer,) = PdfText().run([{"path": str(SAMPLES / "invoice.pdf")}], PdfText.Params())
    assert isinstance(layer, dict) and invoice["full_text"] == layer["text"]
    assert "INV-2024-0042" in invoice["full_text"]

    # text layer for pages 1-2, OCR for page 3, in page order
    mixed = by_name["mixed.pdf"].outputs
    assert mixed["page_count"] == 3 and mixed["pages_ocrd"] == 1
    text = mixed["full_text"]
    assert text.startswith("INVOICE") and has_words(text, SCANNED_PDF_WORDS)
    assert text.index("Total due") < text.index("DN-2024-0107")

    # the map's results come back in page order whichever worker read which frame
    fax = by_name["fax.tif"].outputs
    assert fax["mime"] == "image/tiff" and fax["pages_ocrd"] == 3
    assert fax["full_text"].index("ALPHA") < fax["full_text"].index("BRAVO") < fax["full_text"].index("CHARLIE")

    assert has_words(by_name["scan.png"].outputs["full_text"], SCAN_PNG_WORDS)
    assert by_name["corrupt.pdf"].error_kind == "corrupt"


@pytest.mark.slow
def test_missing_language_pack_fails_only_documents_that_need_ocr() -> None:
    if "kor" in pytesseract.get_languages():
        pytest.skip("the Korean pack is installed here")
    result = run_flow(FLOW, [SAMPLES / "scanned.pdf", SAMPLES / "invoice.pdf"],
                      params={**FAST, "languages": "kor"}, workers=1)
    scanned, invoice = result.results
    assert scanned.status == "failed" and scanned.step is not None and scanned.step.startswith("ocr")
    assert "setup of block 'ocr.tesseract' failed" in (scanned.error or "")
    assert "apt-get install tesseract-ocr-kor" in (scanned.error or "")
    assert invoice.status == "succeeded" and invoice.outputs["pages_ocrd"] == 0
