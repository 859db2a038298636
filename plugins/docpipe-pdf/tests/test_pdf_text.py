"""``pdf.text`` over the committed samples and over bad input made on the spot."""

from __future__ import annotations

import pickle
import shutil
import struct
from pathlib import Path
from typing import Any

import docpipe_pdf
import pymupdf
import pytest
from docpipe_pdf import text as text_module
from docpipe_pdf.text import PdfText, iso_date, usable_chars
from pydantic import ValidationError

from docpipe.blocks import Result
from docpipe.errors import (
    BlockFailed,
    CorruptDocument,
    DocumentError,
    EncryptedDocument,
    PasswordRequired,
    UnsupportedDocument,
    error_kind,
)
from docpipe.plugins import Registry

SAMPLES = Path(__file__).resolve().parents[3] / "samples"
WRITES = set(PdfText.manifest.writes)


@pytest.fixture(scope="module")
def block() -> PdfText:
    b = PdfText()
    b.setup(PdfText.Params())
    return b


def read(block: PdfText, path: Path | str, **params: Any) -> Result:
    results = block.run([{"path": str(path)}], PdfText.Params(**params))
    assert len(results) == 1
    return results[0]


def ok(result: Result) -> dict[str, Any]:
    assert isinstance(result, dict), f"expected a result, got {result!r}"
    assert set(result) == WRITES
    return result


def text_pdf(path: Path, pages: list[str]) -> Path:
    doc = pymupdf.open()
    for text in pages:
        doc.new_page().insert_text((72, 72), text, fontsize=11)
    doc.save(path)
    return path


def page_pixmaps(count: int) -> list[pymupdf.Pixmap]:
    doc = pymupdf.open()
    for number in range(1, count + 1):
        doc.new_page(width=200, height=100).insert_text((20, 50), f"page {number}", fontsize=20)
    return [page.get_pixmap(colorspace=pymupdf.csGRAY) for page in doc]


def write_tiff(path: Path, pixmaps: list[pymupdf.Pixmap]) -> Path:
    """A little-endian, uncompressed, 8-bit grey TIFF with one image (IFD) per pixmap, 72 dpi."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    next_ifd_at = 4  # where the offset of the next IFD goes
    for pix in pixmaps:
        assert pix.n == 1
        data_at = len(out)
        out += pix.samples
        out += b"\x00" * (len(out) % 2)
        dpi_at = len(out)
        out += struct.pack("<II", 72, 1)
        short, long, rational = 3, 4, 5
        entries = [  # tag, type, value; sorted by tag as TIFF requires
            (256, long, pix.width),
            (257, long, pix.height),
            (258, short, 8),
            (259, short, 1),  # no compression
            (262, short, 1),  # black is zero
            (273, long, data_at),
            (277, short, 1),
            (278, long, pix.height),
            (279, long, len(pix.samples)),
            (282, rational, dpi_at),
            (283, rational, dpi_at),
            (296, short, 2),  # inches
        ]
        struct.pack_into("<I", out, next_ifd_at, len(out))
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            packed = struct.pack("<HH", value, 0) if kind == short else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        next_ifd_at = len(out)
        out += b"\x00\x00\x00\x00"
    path.write_bytes(bytes(out))
    return path


# --- the contract ----------------------------------------------------------------------


def test_manifest_and_registration() -> None:
    assert PdfText.manifest.problems() == []
    assert PdfText.manifest.runtime == "process"
    assert PdfText.manifest.reads == {"path": str}
    registry = Registry(entry_points=False, extra=[docpipe_pdf])
    assert registry.broken == []
    assert {"pdf.text", "text.stats"} <= set(registry.blocks)
    assert registry.get("pdf.text").cls is PdfText


def test_params_are_validated() -> None:
    assert PdfText.Params().model_dump() == {"max_pages": 5000, "min_chars": 8}
    with pytest.raises(ValidationError):
        PdfText.Params(max_page=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        PdfText.Params(min_chars=-1)
    with pytest.raises(ValidationError):
        PdfText.Params(max_pages=0)
    assert set(PdfText.params_schema()["properties"]) == {"max_pages", "min_chars"}


def test_plugin_import_does_not_import_pymupdf() -> None:
    import subprocess
    import sys

    code = "import sys, docpipe_pdf; print('pymupdf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- the samples -----------------------------------------------------------------------


def test_invoice(block: PdfText) -> None:
    r = ok(read(block, SAMPLES / "invoice.pdf"))
    assert r["mime"] == "application/pdf"
    assert r["page_count"] == 2
    assert r["needs_ocr_pages"] == []
    assert [p["number"] for p in r["pages"]] == [1, 2]
    assert [p["needs_ocr"] for p in r["pages"]] == [False, False]
    assert all(p["width"] == 595.0 and p["height"] == 842.0 for p in r["pages"])
    page1, page2 = (p["text"] for p in r["pages"])
    assert "INVOICE" in page1 and "INV-2024-0042" in page1 and "£294.00" in page1
    # the "ffi" ligature the layout engine set comes out as three letters
    assert "Northwind Office Supplies Ltd" in page1
    assert "Total due" in page2 and "£836.88" in page2
    assert "Total due" not in page1
    assert r["text"] == page1 + "\n\n" + page2
    meta = r["metadata"]
    assert meta["title"] == "Invoice INV-2024-0042"
    assert meta["author"] == "Northwind Office Supplies Ltd"
    assert meta["creation_date"] == "2024-03-15T09:30:00+01:00"
    assert meta["format"].startswith("PDF 1.")
    assert meta["encryption"] == ""
    assert all(isinstance(v, str) for v in meta.values())


def test_german_report(block: PdfText) -> None:
    r = ok(read(block, SAMPLES / "report_de.pdf"))
    assert r["page_count"] == 1 and r["needs_ocr_pages"] == []
    for word in ("Quartalsbericht", "Königstraße", "größte", "Übersicht", "12,8 Mio. €"):
        assert word in r["text"]
    assert r["metadata"]["author"] == "Müller & Söhne GmbH"


def test_french_letter(block: PdfText) -> None:
    r = ok(read(block, SAMPLES / "lettre_fr.pdf"))
    assert r["page_count"] == 1 and r["needs_ocr_pages"] == []
    for word in ("Madame, Monsieur", "œuvres", "d’agréer", "Élodie", "reçu", "184,60 €"):
        assert word in r["text"]


def test_scanned_pdf_needs_ocr(block: PdfText) -> None:
    r = ok(read(block, SAMPLES / "scanned.pdf"))
    assert r["mime"] == "application/pdf"
    assert r["page_count"] == 1
    assert r["needs_ocr_pages"] == [1]
    assert r["pages"][0]["needs_ocr"] is True
    assert r["pages"][0]["text"] == ""
    assert r["text"] == ""
    assert r["pages"][0]["width"] == pytest.approx(595.2)


def test_png_is_one_page_that_needs_ocr(block: PdfText) -> None:
    r = ok(read(block, SAMPLES / "scan.png"))
    assert r["mime"] == "image/png"
    assert r["page_count"] == 1
    assert r["needs_ocr_pages"] == [1]
    assert r["text"] == ""
    assert r["metadata"]["format"] == "PNG"
    # A5 at the 150 dpi the PNG records
    assert r["pages"][0]["width"] == pytest.approx(420, abs=1)
    assert r["pages"][0]["height"] == pytest.approx(595, abs=1)


def test_encrypted_pdf(block: PdfText) -> None:
    r = read(block, SAMPLES / "encrypted.pdf")
    assert isinstance(r, EncryptedDocument)
    assert str(r).startswith("encrypted, no password given: put a pdf.decrypt step")
    assert error_kind(r) == "password_required"
    # the password documented in docs/samples.md opens it
    with pymupdf.open(SAMPLES / "encrypted.pdf") as doc:
        assert doc.needs_pass
        assert doc.authenticate("docpipe")
        assert "Fabrikam Components" in doc[0].get_text()


def test_truncated_sample_is_corrupt(block: PdfText) -> None:
    r = read(block, SAMPLES / "corrupt.pdf")
    assert isinstance(r, CorruptDocument)
    assert "truncated" in str(r)
    assert error_kind(r) == "corrupt"


def test_samples_are_small() -> None:
    # byte-for-byte freshness (`scripts/make_samples.py --check`) depends on the PyMuPDF
    # version, so it is not a test; the budget is
    assert sum(p.stat().st_size for p in SAMPLES.iterdir()) < 300_000


# --- bad input ---------------------------------------------------------------------------


def test_zero_bytes(block: PdfText, tmp_path: Path) -> None:
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    r = read(block, path)
    assert isinstance(r, CorruptDocument)
    assert str(r) == "empty file (0 bytes)"


@pytest.mark.parametrize("fraction", [0.05, 0.4, 0.6, 0.95])
def test_truncated_pdf(block: PdfText, tmp_path: Path, fraction: float) -> None:
    data = (SAMPLES / "lettre_fr.pdf").read_bytes()
    path = tmp_path / "cut.pdf"
    path.write_bytes(data[: int(len(data) * fraction)])
    r = read(block, path)
    assert isinstance(r, CorruptDocument)
    assert "truncated" in str(r)


def test_pdf_with_a_broken_xref_is_repaired_and_read(block: PdfText, tmp_path: Path) -> None:
    data = (SAMPLES / "invoice.pdf").read_bytes()
    head, sep, offset = data.rpartition(b"startxref\n")
    assert sep
    broken = head + sep + b"1" + offset  # points the reader at the wrong place
    path = tmp_path / "broken-xref.pdf"
    path.write_bytes(broken)
    with pymupdf.open(path) as doc:
        assert doc.is_repaired
    r = ok(read(block, path))
    assert r["page_count"] == 2
    assert "INV-2024-0042" in r["text"]


def test_text_file_named_pdf(block: PdfText, tmp_path: Path) -> None:
    path = tmp_path / "notes.pdf"
    path.write_text("Meeting notes\nNothing to see here, this is not a PDF.\n")
    r = read(block, path)
    assert isinstance(r, UnsupportedDocument)
    assert "not a PDF" in str(r) and "plain text" in str(r)


def test_html_error_page_named_pdf(block: PdfText, tmp_path: Path) -> None:
    path = tmp_path / "download.pdf"
    path.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    r = read(block, path)
    assert isinstance(r, UnsupportedDocument)
    assert "HTML page" in str(r)


def test_unknown_binary(block: PdfText, tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 8)
    r = read(block, path)
    assert isinstance(r, UnsupportedDocument)
    assert "unknown binary format (starts with 00 01 02 03" in str(r)
    assert "reads PDF, PNG, JPEG, TIFF and plain text" in str(r)


@pytest.mark.parametrize("name", ["notes.txt", "README.md", "no-extension"])
def test_plain_text_and_markdown_are_documents(block: PdfText, tmp_path: Path, name: str) -> None:
    """Issue 14: every text block reads text, so a UTF-8 text file is a document (recognised by
    its content): one page per form feed, none needs OCR."""
    path = tmp_path / name
    path.write_text("\ufeffQuarterly report\r\nRevenue grew in every region.\fPage two: outlook.\n",
                    encoding="utf-8")
    r = read(block, path)
    assert isinstance(r, dict), r
    assert r["page_count"] == 2 and r["needs_ocr_pages"] == []
    assert [p["text"] for p in r["pages"]] == ["Quarterly report\nRevenue grew in every region.",
                                               "Page two: outlook."]
    assert r["text"].startswith("Quarterly report") and "\ufeff" not in r["text"]
    assert r["mime"] == ("text/markdown" if name.endswith(".md") else "text/plain")


def test_text_named_pdf_and_html_stay_unsupported(block: PdfText, tmp_path: Path) -> None:
    named = tmp_path / "notes.pdf"
    named.write_text("Meeting notes, not a PDF at all.")
    assert "named .pdf but is not a PDF" in str(read(block, named))
    page = tmp_path / "page.txt"
    page.write_text("<!DOCTYPE html><html><body>hi</body></html>")
    assert isinstance(read(block, page), UnsupportedDocument)


def test_zip_container(block: PdfText, tmp_path: Path) -> None:
    path = tmp_path / "letter.docx"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    r = read(block, path)
    assert isinstance(r, UnsupportedDocument)
    assert "ZIP archive" in str(r)


def test_type_comes_from_content_not_name(block: PdfText, tmp_path: Path) -> None:
    pdf_named_png = tmp_path / "invoice.png"
    shutil.copy(SAMPLES / "invoice.pdf", pdf_named_png)
    png_named_pdf = tmp_path / "scan.pdf"
    shutil.copy(SAMPLES / "scan.png", png_named_pdf)
    no_suffix = tmp_path / "document"
    shutil.copy(SAMPLES / "report_de.pdf", no_suffix)
    r1, r2, r3 = block.run(
        [{"path": str(p)} for p in (pdf_named_png, png_named_pdf, no_suffix)], PdfText.Params()
    )
    assert ok(r1)["mime"] == "application/pdf" and r1["page_count"] == 2
    assert ok(r2)["mime"] == "image/png" and r2["needs_ocr_pages"] == [1]
    assert ok(r3)["mime"] == "application/pdf" and "Königstraße" in r3["text"]


def test_multi_page_tiff(block: PdfText, tmp_path: Path) -> None:
    path = write_tiff(tmp_path / "fax.tif", page_pixmaps(3))
    r = ok(read(block, path))
    assert r["mime"] == "image/tiff"
    assert r["page_count"] == 3
    assert r["needs_ocr_pages"] == [1, 2, 3]
    assert [p["text"] for p in r["pages"]] == ["", "", ""]
    assert r["text"] == ""
    assert r["metadata"]["format"] == "TIFF"
    assert (r["pages"][0]["width"], r["pages"][0]["height"]) == (200.0, 100.0)


def test_jpeg(block: PdfText, tmp_path: Path) -> None:
    path = tmp_path / "photo.jpeg"
    path.write_bytes(page_pixmaps(1)[0].tobytes("jpg"))
    r = ok(read(block, path))
    assert r["mime"] == "image/jpeg"
    assert r["needs_ocr_pages"] == [1]


def test_truncated_png(block: PdfText, tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    path.write_bytes((SAMPLES / "scan.png").read_bytes()[:300])
    r = read(block, path)
    assert isinstance(r, CorruptDocument)
    assert "damaged PNG" in str(r)


def test_missing_file_and_folder(block: PdfText, tmp_path: Path) -> None:
    missing, folder = block.run(
        [{"path": str(tmp_path / "nope.pdf")}, {"path": str(tmp_path)}], PdfText.Params()
    )
    assert type(missing) is DocumentError and "No such file" in str(missing)
    assert type(folder) is DocumentError and "folder" in str(folder)


def test_path_of_the_wrong_type(block: PdfText) -> None:
    (r,) = block.run([{"path": None}], PdfText.Params())
    assert isinstance(r, BlockFailed)


def test_unexpected_error_is_returned_not_raised(
    block: PdfText, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(path: str, params: PdfText.Params) -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(text_module, "read_document", boom)
    (r,) = block.run([{"path": str(SAMPLES / "invoice.pdf")}], PdfText.Params())
    assert isinstance(r, RuntimeError) and str(r) == "boom"
    assert error_kind(r) == "block_error"
    # the worker's traceback travels with it across the process boundary
    again = pickle.loads(pickle.dumps(r))
    assert "in boom" in "".join(again.__notes__)


@pytest.mark.parametrize(
    ("content", "looks_like"),
    [
        (b"PK\x03\x04" + b"\x00" * 100, "ZIP archive"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "OLE2 file"),
        (bytes(range(256)), "unknown binary format"),
    ],
)
def test_other_files_named_pdf(block: PdfText, tmp_path: Path, content: bytes, looks_like: str) -> None:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(content)
    r = read(block, path)
    assert isinstance(r, UnsupportedDocument)
    assert str(r).startswith("named .pdf but is not a PDF (no %PDF- header): it looks like ")
    assert looks_like in str(r)


def raw_pdf(pages_dict: str) -> bytes:
    """A one-page PDF written byte by byte, with ``pages_dict`` as its page tree root (object 2):
    PyMuPDF refuses to write the broken trees these tests need."""
    content = "BT /F1 11 Tf 72 720 Td (Hello from a hand-made page) Tj ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        pages_dict,
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


@pytest.mark.parametrize(
    ("pages_dict", "message"),
    [
        ("<< /Type /Pages /Kids [3 0 R] /Count 1 >>", None),
        ("<< /Type /Pages /Kids [3 0 R] /Count 3 >>", "damaged PDF: page 2 is missing"),
        ("<< /Type /Pages /Kids [3 0 R] /Count 1000000 >>", "damaged PDF: its page tree is broken"),
        ("<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>", "damaged PDF, page 2: cycle in page tree"),
    ],
    ids=["sound", "count-too-high", "count-absurd", "loop"],
)
def test_broken_page_trees(block: PdfText, tmp_path: Path, pages_dict: str, message: str | None) -> None:
    path = tmp_path / "tree.pdf"
    path.write_bytes(raw_pdf(pages_dict))
    r = read(block, path)
    if message is None:
        assert ok(r)["text"] == "Hello from a hand-made page"
    else:
        assert isinstance(r, CorruptDocument), r
        assert str(r).startswith(message)


@pytest.fixture(scope="module")
def thousands_of_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3,000-page PDF: 100 pages with their own text, copied 30 times (PyMuPDF takes
    about 10 s to write 3,000 pages of text one by one, this about 1 s)."""
    hundred = pymupdf.open()
    for number in range(1, 101):
        hundred.new_page(width=200, height=100).insert_text((20, 50), f"document page {number}", fontsize=11)
    doc = pymupdf.open()
    for _ in range(30):
        doc.insert_pdf(hundred)
    path = tmp_path_factory.mktemp("big") / "3000-pages.pdf"
    doc.save(path)
    return path


def test_thousands_of_pages(block: PdfText, thousands_of_pages: Path) -> None:
    r = ok(read(block, thousands_of_pages, max_pages=3000))
    assert r["page_count"] == 3000
    assert [p["number"] for p in r["pages"]] == list(range(1, 3001))
    assert r["pages"][0]["text"] == "document page 1"
    assert r["pages"][1234]["text"] == "document page 35"
    assert r["pages"][2999]["text"] == "document page 100"
    assert r["needs_ocr_pages"] == []
    assert r["text"].count("\n\n") == 2999


def test_more_pages_than_max_pages_fails_before_reading_a_page(
    block: PdfText, thousands_of_pages: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def page(*args: object) -> dict[str, Any]:
        raise AssertionError("a page was read")

    monkeypatch.setattr(text_module, "_page", page)
    r = read(block, thousands_of_pages, max_pages=2999)
    assert isinstance(r, UnsupportedDocument)
    assert str(r) == "3000 pages, more than max_pages=2999; raise the step's max_pages param to read it"
    assert error_kind(r) == "unsupported"


@pytest.mark.parametrize("size", [14400, 1_000_000])
def test_pages_of_absurd_size(block: PdfText, tmp_path: Path, size: int) -> None:
    # 14400 pt (200 inches) is the largest page PDF 1.7 allows; larger boxes occur anyway
    doc = pymupdf.open()
    page = doc.new_page(width=14400, height=14400)
    page.insert_text((72, 72), "Top left corner of a huge page", fontsize=11)
    page.insert_text((7000, 7200), "In the middle of the huge page", fontsize=400)
    doc.xref_set_key(page.xref, "MediaBox", f"[0 0 {size} {size}]")
    path = tmp_path / "huge.pdf"
    doc.save(path)
    r = ok(read(block, path))
    (p,) = r["pages"]
    assert (p["width"], p["height"]) == (float(size), float(size))
    assert "Top left corner of a huge page" in p["text"]
    assert "In the middle of the huge page" in p["text"]
    assert r["needs_ocr_pages"] == []


# --- pages, params ---------------------------------------------------------------------


def test_mixed_pdf_flags_only_the_scanned_page(block: PdfText, tmp_path: Path) -> None:
    doc = pymupdf.open(SAMPLES / "invoice.pdf")
    doc.insert_pdf(pymupdf.open(SAMPLES / "scanned.pdf"))
    path = tmp_path / "mixed.pdf"
    doc.save(path)
    r = ok(read(block, path))
    assert r["page_count"] == 3
    assert r["needs_ocr_pages"] == [3]
    assert [p["needs_ocr"] for p in r["pages"]] == [False, False, True]
    assert r["text"].count("\n\n") >= 1 and not r["text"].endswith("\n")


def test_min_chars(block: PdfText, tmp_path: Path) -> None:
    path = text_pdf(tmp_path / "sparse.pdf", ["p. 1", "A page with a real sentence on it.", ""])
    assert ok(read(block, path))["needs_ocr_pages"] == [1, 3]
    assert ok(read(block, path, min_chars=3))["needs_ocr_pages"] == [3]
    assert ok(read(block, path, min_chars=0))["needs_ocr_pages"] == []
    # image pages need OCR whatever min_chars says
    assert ok(read(block, SAMPLES / "scan.png", min_chars=0))["needs_ocr_pages"] == [1]


def test_usable_chars() -> None:
    assert usable_chars("") == 0
    assert usable_chars(" \n\t ") == 0
    assert usable_chars("\ufffd\ufffd\ufffd ab\x00\x07") == 2
    assert usable_chars("Straße 1") == 7


def test_max_pages(block: PdfText) -> None:
    r = read(block, SAMPLES / "invoice.pdf", max_pages=1)
    assert isinstance(r, UnsupportedDocument)
    assert "2 pages, more than max_pages=1" in str(r)
    assert ok(read(block, SAMPLES / "invoice.pdf", max_pages=2))["page_count"] == 2


def test_pdf_with_owner_password_only_is_read(block: PdfText, tmp_path: Path) -> None:
    doc = pymupdf.open(SAMPLES / "invoice.pdf")
    path = tmp_path / "restricted.pdf"
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner", user_pw="")
    r = ok(read(block, path))
    assert r["page_count"] == 2
    assert "INV-2024-0042" in r["text"]
    assert "AES" in r["metadata"]["encryption"]


def test_iso_date() -> None:
    assert iso_date("D:20240315093000+01'00'") == "2024-03-15T09:30:00+01:00"
    assert iso_date("D:20240315093000Z") == "2024-03-15T09:30:00+00:00"
    assert iso_date("D:20240315093000-05'30") == "2024-03-15T09:30:00-05:30"
    assert iso_date("D:2024") == "2024-01-01T00:00:00"
    assert iso_date("20240315") == "2024-03-15T00:00:00"
    assert iso_date("D:20241340") == "D:20241340"  # no month 13
    assert iso_date("last Tuesday") == "last Tuesday"
    assert iso_date("") == ""


# --- a batch -----------------------------------------------------------------------------


def test_one_batch_of_everything_never_raises(block: PdfText, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    names = ["invoice.pdf", "encrypted.pdf", "corrupt.pdf", "scan.png", "scanned.pdf"]
    batch = [{"path": str(SAMPLES / n)} for n in names] + [{"path": str(empty)}]
    results = block.run(batch, PdfText.Params())
    kinds = [r["mime"] if isinstance(r, dict) else error_kind(r) for r in results]
    assert kinds == [
        "application/pdf",
        "password_required",
        "corrupt",
        "image/png",
        "application/pdf",
        "corrupt",
    ]
    # results and failures cross the process boundary intact
    again = pickle.loads(pickle.dumps(results))
    assert again[0] == results[0]
    assert type(again[1]) is PasswordRequired and str(again[1]) == str(results[1])
