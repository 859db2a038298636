"""Scanned documents made on the spot for the OCR tests: text rendered to pixels, no text layer."""

from __future__ import annotations

from pathlib import Path

import pymupdf
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[3] / "samples"
FLOW = Path(__file__).resolve().parents[1] / "flows" / "ocr.json"

#: words rendered into samples/scanned.pdf and samples/scan.png (scripts/make_samples.py)
SCANNED_PDF_WORDS = ("DELIVERY NOTE", "Northwind", "DN-2024-0107", "Contoso", "toner", "Harbour")
SCAN_PNG_WORDS = ("RECEIPT", "Corner", "Croissant", "Oxford", "000731")

GERMAN = (
    "Sehr geehrte Damen und Herren,\n"
    "die Lieferung an die Königstraße 18 in Stuttgart\n"
    "ist größer als erwartet. Übersicht der Maßnahmen:\n"
    "Prüfung, Bestätigung und Zahlung bis Freitag."
)


def scan(lines: str, dpi: int = 150, width: float = 595, height: float = 842,
         fontsize: float = 14) -> pymupdf.Pixmap:
    """A greyscale 'scan' of a page with ``lines`` of text on it."""
    doc = pymupdf.open()
    page = doc.new_page(width=width, height=height)
    page.insert_text((60, 90), lines, fontsize=fontsize, fontname="helv")
    return page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)


def image_pdf(path: Path, pixmaps: list[pymupdf.Pixmap], dpi: int = 150) -> Path:
    """A PDF whose pages are the images ``pixmaps`` and nothing else, as a scanner writes one."""
    doc = pymupdf.open()
    for pix in pixmaps:
        page = doc.new_page(width=pix.width * 72 / dpi, height=pix.height * 72 / dpi)
        page.insert_image(page.rect, stream=pix.tobytes("png"))
    doc.save(path)
    return path


def multi_page_tiff(path: Path, pixmaps: list[pymupdf.Pixmap], dpi: int = 150) -> Path:
    """A TIFF with one frame per pixmap, recording ``dpi``."""
    frames = [Image.frombytes("L", (p.width, p.height), p.samples) for p in pixmaps]
    frames[0].save(path, save_all=True, append_images=frames[1:], dpi=(dpi, dpi), compression="tiff_deflate")
    return path


def mixed_pdf(path: Path) -> Path:
    """invoice.pdf (two pages with a text layer) followed by scanned.pdf's image-only page."""
    doc = pymupdf.open(SAMPLES / "invoice.pdf")
    doc.insert_pdf(pymupdf.open(SAMPLES / "scanned.pdf"))
    doc.save(path)
    return path


def fax_frames() -> list[pymupdf.Pixmap]:
    """Three small pages, each with its own words, for page-order checks."""
    texts = ["ALPHA first frame\nharbour crane", "BRAVO second frame\nwinter garden",
             "CHARLIE third frame\nsilver bridge"]
    return [scan(t, width=420, height=200, fontsize=20) for t in texts]
