"""Hostile input for ``ocr.tesseract`` (issue 13): decompression bombs and blank pages.

* A 26000 x 26000 PNG (2 MB on disk) used to be decoded whole: 2.1 GB of memory in the
  worker. Its size is now read from its header and the page refused before any pixel
  is decoded; the worker's peak memory is measured in a subprocess.
* Blank pages skip Tesseract; pages with little, faint or noisy text must not.

The bombs are made here, at test time: no binary is committed.
"""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pymupdf
import pytesseract
import pytest
from docpipe_ocr.blank import draws_nothing, is_blank
from docpipe_ocr.render import MAX_IMAGE_PIXELS, open_document, render_page
from docpipe_ocr.tesseract import TesseractOcr
from ocr_testdocs import image_pdf, scan
from PIL import Image

from docpipe.errors import UnsupportedDocument, error_kind

Params = TesseractOcr.Params
BOMB_SIDE = 26000
#: the worker's peak memory allowed on a bomb; it was 2.1 GB for the RGB PNG
MAX_RSS_MB = 400


# --- decompression bombs ---------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _white_rows_zlib(width: int, height: int, channels: int) -> bytes:
    """A zlib stream of ``height`` white rows of PNG scanlines (filter byte 0), made fast: a
    block of rows compressed once after a full flush is the same bytes every time, so it is
    repeated instead of compressing 2 GB."""
    row = b"\x00" + b"\xff" * (width * channels)
    rows_a_block = 200
    block_rows = row * rows_a_block
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(block_rows) + deflate.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(height, rows_a_block)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = tail.compress(row * rest) + tail.flush(zlib.Z_FINISH)
    adler = 1
    for _ in range(blocks):
        adler = zlib.adler32(block_rows, adler)
    adler = zlib.adler32(row * rest, adler)
    return b"\x78\xda" + block * blocks + last + struct.pack(">I", adler)


def bomb_png(path: Path, side: int = BOMB_SIDE, channels: int = 3) -> Path:
    """A ``side`` x ``side`` white PNG: 2 MB on disk for 26000 px in RGB, 2 GB decoded."""
    colour_type = {1: 0, 3: 2}[channels]
    header = struct.pack(">IIBBBBB", side, side, 8, colour_type, 0, 0, 0)
    idat = _white_rows_zlib(side, side, channels)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat)
                     + _chunk(b"IEND", b""))
    return path


def pdf_with_image(path: Path, side: int, filter_: str, stream: bytes, params: str = "") -> Path:
    """An A4 PDF page drawing one ``side`` x ``side`` greyscale image XObject with ``filter_``."""
    doc = pymupdf.open()
    page = doc.new_page()
    image = doc.get_new_xref()
    doc.update_object(image, f"<< /Type /XObject /Subtype /Image /Width {side} /Height {side} "
                             f"/ColorSpace /DeviceGray /BitsPerComponent 8 {params}>>")
    doc.update_stream(image, stream, compress=False)
    doc.xref_set_key(image, "Filter", f"/{filter_}")
    content = doc.get_new_xref()
    doc.update_object(content, "<< >>")
    doc.update_stream(content, b"q 595 0 0 842 0 0 cm /Im0 Do Q")
    doc.xref_set_key(page.xref, "Resources", f"<< /XObject << /Im0 {image} 0 R >> >>")
    doc.xref_set_key(page.xref, "Contents", f"{content} 0 R")
    doc.save(path)
    return path


_WORKER = """
import json, resource, sys
from docpipe_ocr.tesseract import TesseractOcr
from docpipe.errors import error_kind
params = TesseractOcr.Params(dpi=150)
block = TesseractOcr()
block.setup(params)
(result,) = block.run([{"path": sys.argv[1], "page": 1}], params)
print(json.dumps({"kind": error_kind(result) if isinstance(result, Exception) else None,
                  "result": str(result) if isinstance(result, Exception) else result,
                  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so a child of a
                  # big pytest worker would report the worker's peak
                  "rss_mb": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
                                .split()[1]) / 1024}))
"""


def run_in_worker(path: Path) -> dict[str, Any]:
    """``ocr.tesseract`` on page 1 of ``path`` in a fresh process: its result and peak RSS."""
    out = subprocess.run([sys.executable, "-c", _WORKER, str(path)], capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.slow
def test_png_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    path = bomb_png(tmp_path / "bomb.png")
    assert path.stat().st_size < 3_000_000
    worker = run_in_worker(path)
    assert worker["kind"] == "unsupported"
    assert worker["result"].startswith("PNG image of 26000 x 26000 pixels (676 million) is over "
                                       "max_image_pixels=150,000,000")
    assert "raise the step's max_image_pixels param" in worker["result"]
    assert worker["rss_mb"] < MAX_RSS_MB, worker  # 2.1 GB when it was decoded


@pytest.mark.slow
def test_the_same_image_in_a_pdf_renders_in_bounded_memory(tmp_path: Path) -> None:
    # MuPDF decodes a PDF's Flate image row by row and subsamples as it goes: no refusal needed
    idat = _white_rows_zlib(BOMB_SIDE, BOMB_SIDE, 1)
    path = pdf_with_image(tmp_path / "bomb.pdf", BOMB_SIDE, "FlateDecode", idat,
                          f"/DecodeParms << /Predictor 15 /Columns {BOMB_SIDE} >> ")
    worker = run_in_worker(path)
    assert worker["result"] == {"ocr_text": "", "ocr_confidence": -1.0, "ocr_blank": True, "ocr_language": ""}
    assert worker["rss_mb"] < MAX_RSS_MB, worker


def test_jpeg_header_decides(tmp_path: Path) -> None:
    """A JPEG whose frame header claims 26000 x 26000 is refused without reading its scan."""
    out = io.BytesIO()
    Image.new("L", (64, 64), 255).save(out, format="JPEG")  # baseline: a SOF0 frame header
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", BOMB_SIDE, BOMB_SIDE)  # height, width
    path = tmp_path / "claims.jpg"
    path.write_bytes(bytes(data))
    doc, label = open_document(path)
    with doc, pytest.raises(UnsupportedDocument, match=r"^JPEG image of 26000 x 26000 pixels"):
        render_page(doc, 1, label, 300, 40_000_000)


def test_whole_image_decoders_in_a_pdf_are_bounded(tmp_path: Path) -> None:
    path = pdf_with_image(tmp_path / "jpx.pdf", BOMB_SIDE, "JPXDecode", b"\x00" * 64)
    doc, label = open_document(path)
    with doc, pytest.raises(UnsupportedDocument, match=r"^page 1 holds a JPX image of 26000 x 26000"):
        render_page(doc, 1, label, 300, 40_000_000)


def test_max_image_pixels_is_a_param(tmp_path: Path) -> None:
    path = image_pdf(tmp_path / "page.pdf", [scan("Hello")])  # a PDF: its Flate image streams
    png = tmp_path / "page.png"
    scan("Hello").save(png)  # 1240 x 1754 = 2.2 million pixels
    block = TesseractOcr()
    small = Params(dpi=150, max_image_pixels=1_000_000)
    refused, read = block.run([{"path": str(png), "page": 1}, {"path": str(path), "page": 1}], small)
    assert error_kind(refused) == "unsupported"  # type: ignore[arg-type]
    assert re.search(r"^PNG image of 1240 x 175\d pixels \(2 million\) is over max_image_pixels=1,000,000: "
                     r"decoding it takes over 2 MB;", str(refused))
    assert isinstance(read, dict) and "Hello" in read["ocr_text"]
    assert Params().max_image_pixels == MAX_IMAGE_PIXELS
    with pytest.raises(ValueError):
        Params(max_image_pixels=10)


# --- blank pages --------------------------------------------------------------------------------


def _page_pdf(path: Path, text: str = "", grey: float = 0.0, fontsize: float = 8) -> pymupdf.Document:
    doc = pymupdf.open()
    page = doc.new_page()
    if text:
        page.insert_text((60, 120), text, fontsize=fontsize, fontname="helv", color=(grey, grey, grey))
    return doc


def scanned(doc: pymupdf.Document, dpi: int = 300, noise: float = 0.0, specks: int = 0,
            seed: int = 7) -> pymupdf.Pixmap:
    """Page 1 of ``doc`` as a scanner gives it: greyish paper, grain of ``noise`` grey levels
    (standard deviation) and ``specks`` dark specks of dust."""
    pix = doc[0].get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
    pixels = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.width).astype(float)
    rng = np.random.default_rng(seed)
    if noise:
        pixels = pixels - 14 + rng.normal(0, noise, pixels.shape)
    for _ in range(specks):
        pixels[rng.integers(0, pix.height), rng.integers(0, pix.width)] = 40
    data = np.clip(pixels, 0, 255).astype(np.uint8).tobytes()
    return pymupdf.Pixmap(pymupdf.csGRAY, pix.width, pix.height, data, False)


@pytest.fixture(scope="module")
def block() -> TesseractOcr:
    b = TesseractOcr()
    b.setup(Params())
    return b


@pytest.fixture
def no_tesseract(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("Tesseract ran on a blank page")

    monkeypatch.setattr(pytesseract, "image_to_data", refuse)


def test_empty_pdf_page_is_blank_without_rendering(block: TesseractOcr, tmp_path: Path,
                                                   no_tesseract: None) -> None:
    doc = pymupdf.open()
    doc.new_page()
    doc.new_page().insert_text((60, 120), "x", fontsize=8)
    doc.save(tmp_path / "empty.pdf")
    assert draws_nothing(doc[0]) and not draws_nothing(doc[1])
    (r,) = block.run([{"path": str(tmp_path / "empty.pdf"), "page": 1}], Params())
    assert r == {"ocr_text": "", "ocr_confidence": -1.0, "ocr_blank": True, "ocr_language": ""}


@pytest.mark.parametrize("noise,specks", [(0, 0), (8, 0), (0, 40), (8, 40)],
                         ids=["clean", "grain", "dust", "grain-and-dust"])
def test_blank_scans_skip_tesseract(block: TesseractOcr, tmp_path: Path, no_tesseract: None,
                                    noise: float, specks: int) -> None:
    pix = scanned(_page_pdf(tmp_path / "p.pdf"), dpi=150, noise=noise, specks=specks)
    path = image_pdf(tmp_path / "blank.pdf", [pix])
    # at 300 dpi the 150 dpi scan's specks of dust are blurred into marks of several pixels
    for dpi in (150, 300):
        (r,) = block.run([{"path": str(path), "page": 1}], Params(dpi=dpi))
        assert r == {"ocr_text": "", "ocr_confidence": -1.0, "ocr_blank": True, "ocr_language": ""}


#: pages that have text, however little or faint: (text, grey level of the ink 0-1, font size,
#: grain, specks, words Tesseract must read at 300 dpi). On the noisiest scans Tesseract itself
#: reads no word of one line (it did not before blank pages were skipped either): there, what
#: counts is that it ran.
INKED = {
    "one short line of small text": ("Page 2 of 9", 0.0, 7, 0, 0, ("Page",)),
    "light-grey text": ("Draft copy for review", 0.75, 11, 0, 0, ("Draft", "review")),
    "very light grey text": ("Draft copy for review", 0.88, 11, 0, 0, ("Draft", "review")),
    "a noisy scan": ("Received with thanks", 0.0, 11, 6, 50, ("Received", "thanks")),
    "a very noisy scan": ("Received with thanks", 0.0, 11, 12, 200, ()),
    "light grey on a noisy scan": ("Draft copy for review", 0.7, 11, 5, 50, ()),
}


@pytest.mark.parametrize("name", INKED)
def test_little_faint_or_noisy_text_is_still_read(block: TesseractOcr, tmp_path: Path, name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    text, grey, size, noise, specks, words = INKED[name]
    pix = scanned(_page_pdf(tmp_path / "p.pdf", text, grey, size), noise=noise, specks=specks)
    assert not is_blank(pix, 300)
    calls = []
    real = pytesseract.image_to_data
    monkeypatch.setattr(pytesseract, "image_to_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    (r,) = block.run([{"path": str(image_pdf(tmp_path / "page.pdf", [pix], dpi=300)), "page": 1}], Params())
    assert isinstance(r, dict) and r["ocr_blank"] is False, r
    assert calls == [1]  # Tesseract ran
    missing = [w for w in words if w not in r["ocr_text"]]
    assert not missing, f"{missing} not in {r['ocr_text']!r}"


@pytest.mark.parametrize("dpi", [150, 300])
@pytest.mark.parametrize("text,size", [("1", 6), ("-", 8), ("i", 8)])
def test_one_small_character_is_ink(tmp_path: Path, text: str, size: float, dpi: int) -> None:
    assert not is_blank(scanned(_page_pdf(tmp_path / "p.pdf", text, 0.0, size), dpi=dpi), dpi)


def test_a_dark_page_with_light_text_is_not_blank(tmp_path: Path) -> None:
    for text, blank in (("", True), ("white on black", False)):
        pix = scanned(_page_pdf(tmp_path / "p.pdf", text, 0.0, 9), dpi=100)
        pix.invert_irect()  # white text on black paper
        assert is_blank(pix, 100) is blank


def test_skip_blank_false_runs_tesseract(block: TesseractOcr, tmp_path: Path) -> None:
    doc = pymupdf.open()
    doc.new_page()
    doc.save(tmp_path / "empty.pdf")
    (r,) = block.run([{"path": str(tmp_path / "empty.pdf"), "page": 1}], Params(dpi=100, skip_blank=False))
    assert r == {"ocr_text": "", "ocr_confidence": -1.0, "ocr_blank": False, "ocr_language": "eng"}


def test_is_blank_wants_greyscale() -> None:
    with pytest.raises(ValueError, match="greyscale"):
        is_blank(pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 10, 10), False), 100)
