"""``ocr.tesseract`` on real scans: the samples, a German scan, a multi-page TIFF, bad input.

OCR runs at 150 dpi here (about 0.5 s a page) wherever 300 dpi is not the point.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docpipe_ocr
import pymupdf
import pytesseract
import pytest
from docpipe_ocr.render import MAX_SIDE, open_document, render_page, render_scale
from docpipe_ocr.tesseract import TesseractOcr, apt_package, check_tesseract, text_and_confidence
from ocr_testdocs import (
    GERMAN,
    SAMPLES,
    SCAN_PNG_WORDS,
    SCANNED_PDF_WORDS,
    fax_frames,
    image_pdf,
    multi_page_tiff,
    scan,
)
from pydantic import ValidationError

from docpipe.blocks import Result
from docpipe.errors import (
    BlockFailed,
    BlockTimeout,
    CorruptDocument,
    DocumentError,
    MissingDependency,
    UnsupportedDocument,
    error_kind,
)
from docpipe.plugins import Registry
from docpipe.testing import BlockContract

Params = TesseractOcr.Params
FAST = {"dpi": 150}


@pytest.fixture(scope="module")
def block() -> TesseractOcr:
    b = TesseractOcr()
    b.setup(Params())
    return b


def ocr(block: TesseractOcr, path: Path | str, page: Any = 1, **params: Any) -> Result:
    (result,) = block.run([{"path": str(path), "page": page}], Params(**{**FAST, **params}))
    return result


def ok(result: Result) -> dict[str, Any]:
    assert isinstance(result, dict), f"expected a result, got {result!r}"
    assert set(result) == {"ocr_text", "ocr_confidence", "ocr_blank", "ocr_language"}
    return result


def assert_words(text: str, words: tuple[str, ...]) -> None:
    missing = [w for w in words if w.lower() not in text.lower()]
    assert not missing, f"{missing} not in OCR text {text!r}"


class TestTesseractContract(BlockContract):
    block = TesseractOcr
    params = FAST
    inputs = [{"path": str(SAMPLES / "scan.png"), "page": 1}, {"path": str(SAMPLES / "scan.png"), "page": 2}]


# --- manifest, params, set-up -------------------------------------------------------------


def test_manifest_and_registration() -> None:
    m = TesseractOcr.manifest
    assert (m.name, m.runtime, m.device, m.batch) == ("ocr.tesseract", "process", "cpu", 1)
    assert m.reads == {"path": str, "page": int}
    assert m.writes == {"ocr_text": str, "ocr_confidence": float, "ocr_blank": bool, "ocr_language": str}
    registry = Registry(entry_points=False, extra=[docpipe_ocr])
    assert registry.broken == []
    assert registry.get("ocr.tesseract").cls is TesseractOcr
    assert registry.get("ocr.merge").cls is docpipe_ocr.OcrMerge


def test_params() -> None:
    assert Params().model_dump() == {
        "languages": "eng", "candidates": "eng+deu+fra+spa", "dpi": 300, "max_pixels": 40_000_000,
        "max_image_pixels": 150_000_000, "skip_blank": True, "psm": 3, "timeout": 300}
    assert Params(languages="eng+deu").languages == "eng+deu"
    for bad in ({"languages": "eng deu"}, {"languages": ""}, {"languages": "eng+"},
                {"languages": "script/Latin"}, {"psm": 0},
                {"psm": 2}, {"psm": 14}, {"dpi": 0}, {"timeout": 0}, {"max_pixels": 10}, {"lang": "eng"}):
        with pytest.raises(ValidationError):
            Params(**bad)  # type: ignore[arg-type]


def test_plugin_import_is_cheap() -> None:
    code = "import sys, docpipe_ocr; print(sorted({'pymupdf', 'pytesseract', 'PIL'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_setup_gives_tesseract_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_THREAD_LIMIT", "4")
    TesseractOcr().setup(Params())
    assert os.environ["OMP_THREAD_LIMIT"] == "1"


def test_missing_language_pack_fails_setup_with_the_package_to_install() -> None:
    if "kor" in pytesseract.get_languages():
        pytest.skip("the Korean pack is installed here")
    with pytest.raises(MissingDependency) as info:
        TesseractOcr().setup(Params(languages="eng+kor"))
    message = str(info.value)
    assert "language pack kor not installed" in message
    assert "apt-get install tesseract-ocr-kor" in message
    assert "eng" in message  # what is installed


def test_apt_package_names() -> None:
    assert apt_package("deu") == "tesseract-ocr-deu"
    assert apt_package("chi_sim") == "tesseract-ocr-chi-sim"


def test_missing_tesseract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    with pytest.raises(MissingDependency, match=r"^tesseract not found: apt-get install tesseract-ocr$"):
        check_tesseract("eng")


# --- real scans --------------------------------------------------------------------------------


def test_scanned_pdf(block: TesseractOcr) -> None:
    r = ok(ocr(block, SAMPLES / "scanned.pdf"))
    assert_words(r["ocr_text"], SCANNED_PDF_WORDS)
    lines = r["ocr_text"].splitlines()
    # lines and paragraphs are kept: a line is a line, paragraphs are a blank line apart
    assert any(line.startswith("Delivery note number: DN-2024-0107") for line in lines)
    assert lines[:2] == ["DELIVERY NOTE", ""]
    assert 80 < r["ocr_confidence"] <= 100


def test_png_is_read_at_its_own_resolution(block: TesseractOcr) -> None:
    r = ok(ocr(block, SAMPLES / "scan.png", dpi=300))
    assert_words(r["ocr_text"], SCAN_PNG_WORDS)
    doc, label = open_document(SAMPLES / "scan.png")
    with doc:
        rendered = render_page(doc, 1, label, 300, 40_000_000)
    # the 150 dpi A5 image as it is, not resampled to the 300 dpi asked for PDF pages
    assert (rendered.pixmap.width, rendered.pixmap.height) == (875, 1240)
    assert rendered.dpi == pytest.approx(150, abs=0.5) and not rendered.reduced


def test_german_scan_needs_the_german_pack(block: TesseractOcr, tmp_path: Path) -> None:
    path = image_pdf(tmp_path / "brief.pdf", [scan(GERMAN)])
    deu = ok(ocr(block, path, languages="deu"))
    assert_words(deu["ocr_text"], ("Königstraße", "größer", "Übersicht", "Maßnahmen", "Bestätigung"))
    # the English model has no ß and reads it as B: the languages param reaches Tesseract
    eng = ok(ocr(block, path, languages="eng"))
    assert "Königstraße" not in eng["ocr_text"] and "Stuttgart" in eng["ocr_text"]


def test_multi_page_tiff_frames(block: TesseractOcr, tmp_path: Path) -> None:
    path = multi_page_tiff(tmp_path / "fax.tif", fax_frames())
    second = ok(ocr(block, path, page=2))
    assert_words(second["ocr_text"], ("BRAVO", "winter garden"))
    assert "ALPHA" not in second["ocr_text"] and "CHARLIE" not in second["ocr_text"]
    third = ok(ocr(block, path, page=3))
    assert_words(third["ocr_text"], ("CHARLIE", "silver bridge"))
    gone = ocr(block, path, page=4)
    assert type(gone) is DocumentError
    assert str(gone) == "page 4 does not exist: the document has 3 pages"


def test_blank_page_has_no_words(block: TesseractOcr, tmp_path: Path) -> None:
    r = ok(ocr(block, image_pdf(tmp_path / "blank.pdf", [scan("")])))
    # found blank from its pixels: Tesseract does not run (test_ocr_hostile.py)
    assert r == {"ocr_text": "", "ocr_confidence": -1.0, "ocr_blank": True, "ocr_language": ""}


# --- bounded rendering ----------------------------------------------------------------------------


def giant_pdf(path: Path) -> Path:
    """One 14400 x 14400 pt page (200 inches square, the PDF maximum) with one huge word."""
    doc = pymupdf.open()
    page = doc.new_page(width=14400, height=14400)
    page.insert_text((1500, 6000), "GIANT", fontsize=2400, fontname="hebo")
    doc.save(path)
    return path


def test_absurd_page_is_rendered_at_a_lower_dpi(tmp_path: Path) -> None:
    path = giant_pdf(tmp_path / "giant.pdf")
    doc, label = open_document(path)
    with doc:
        t0 = time.perf_counter()
        rendered = render_page(doc, 1, label, 300, 40_000_000)
        elapsed = time.perf_counter() - t0
    pix = rendered.pixmap
    # at 300 dpi: 60000 x 60000 px, 3.6 GB; bounded: at most 40 million pixels
    assert pix.width * pix.height <= 40_000_000
    assert pix.width > 6000 and rendered.reduced and 30 < rendered.dpi < 32
    assert elapsed < 10


def test_absurd_page_is_still_read(block: TesseractOcr, tmp_path: Path) -> None:
    r = ok(ocr(block, giant_pdf(tmp_path / "giant.pdf"), dpi=300, max_pixels=1_000_000))
    assert_words(r["ocr_text"], ("GIANT",))


def test_render_scale() -> None:
    assert render_scale(595, 842, 300, 40_000_000) == pytest.approx(300 / 72)
    zoom = render_scale(14400, 14400, 300, 40_000_000)
    assert (14400 * zoom + 2) ** 2 == pytest.approx(40_000_000)
    # a long, thin page stays within Tesseract's 32767 pixels a side
    zoom = render_scale(14400, 100, 300, 40_000_000)
    assert 14400 * zoom < MAX_SIDE
    with pytest.raises(ValueError):
        render_scale(0, 842, 300, 40_000_000)


# --- failures are returned, typed ------------------------------------------------------------------


def test_out_of_range_pages(block: TesseractOcr) -> None:
    for page in (0, 2, -1):
        r = ocr(block, SAMPLES / "scanned.pdf", page=page)
        assert type(r) is DocumentError
        assert str(r) == f"page {page} does not exist: the document has 1 page"


def test_bad_files_fail_one_by_one(block: TesseractOcr, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes((SAMPLES / "scan.png").read_bytes()[:300])
    notes = tmp_path / "notes.pdf"
    notes.write_text("not a PDF at all\n")
    batch = [
        {"path": str(empty), "page": 1},
        {"path": str(cut_png), "page": 1},
        {"path": str(notes), "page": 1},
        {"path": str(tmp_path / "missing.pdf"), "page": 1},
        {"path": str(SAMPLES / "encrypted.pdf"), "page": 1},
        {"path": str(SAMPLES / "scan.png"), "page": "1"},
        {"path": str(SAMPLES / "scan.png"), "page": True},
    ]
    results = block.run(batch, Params(**FAST))
    assert [error_kind(r) for r in results] == [  # type: ignore[arg-type]
        "corrupt", "corrupt", "unsupported", "document_error", "password_required", "block_error", "block_error"]
    assert isinstance(results[0], CorruptDocument) and str(results[0]) == "empty file (0 bytes)"
    assert "damaged PNG" in str(results[1])
    assert isinstance(results[2], UnsupportedDocument) and "reads PDF, PNG, JPEG and TIFF" in str(results[2])
    assert "No such file" in str(results[3])
    assert isinstance(results[5], BlockFailed) and "'page' must be a 1-based page number" in str(results[5])
    # failures cross the process boundary intact
    again = pickle.loads(pickle.dumps(results))
    assert [type(r) for r in again] == [type(r) for r in results]


def test_tesseract_timeout_is_a_typed_failure(block: TesseractOcr) -> None:
    r = ocr(block, SAMPLES / "scan.png", timeout=0.001)
    assert isinstance(r, BlockTimeout) and error_kind(r) == "timeout"
    assert "timeout=0.001 s on page 1" in str(r)


# --- text and confidence from Tesseract's TSV -----------------------------------------------------

_HEADER = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"


def tsv(*words: tuple[int, int, int, float, str]) -> str:
    rows = [_HEADER, "1\t1\t0\t0\t0\t0\t0\t0\t100\t100\t-1\t"]
    for block, par, line, conf, text in words:
        rows.append(f"5\t1\t{block}\t{par}\t{line}\t1\t0\t0\t1\t1\t{conf}\t{text}")
    return "\n".join(rows) + "\n"


def test_text_and_confidence() -> None:
    text, conf = text_and_confidence(tsv(
        (1, 1, 1, 90.5, "Hello"), (1, 1, 1, 80, "world"), (1, 1, 2, 70, "second"),
        (1, 2, 1, 60, "para"), (2, 1, 1, 50, "block"), (2, 1, 1, 40, "  ")))
    assert text == "Hello world\nsecond\n\npara\n\nblock"
    assert conf == pytest.approx((90.5 + 80 + 70 + 60 + 50) / 5, abs=0.01)
    assert text_and_confidence(tsv()) == ("", -1.0)
    assert text_and_confidence("") == ("", -1.0)
    # a word Tesseract did not score counts for the text, not for the mean
    assert text_and_confidence(tsv((1, 1, 1, -1, "x"), (1, 1, 1, 50, "y"))) == ("x y", 50.0)
