"""docpipe-ocr: OCR blocks on Tesseract.

* ``ocr.tesseract`` (:class:`~docpipe_ocr.tesseract.TesseractOcr`): the text and word
  confidence of one page of a PDF or image; map it over ``needs_ocr_pages``.
* ``ocr.merge`` (:class:`~docpipe_ocr.merge.OcrMerge`): the final text per page and of
  the document, OCR text where a page needed it and the text layer elsewhere.

Registered through the ``docpipe`` entry-point group like any third-party plugin.
Importing this package is cheap: PyMuPDF and pytesseract are imported in the worker
that runs ``ocr.tesseract``. The flow ``flows/ocr.json`` next to this package wires
``pdf.text`` -> ``ocr.tesseract`` -> ``ocr.merge``.
"""

from __future__ import annotations

from collections.abc import Callable

import docpipe
from docpipe.blocks import Block
from docpipe_ocr.merge import OcrMerge
from docpipe_ocr.tesseract import TesseractOcr

__all__ = ["OcrMerge", "TesseractOcr", "register_blocks"]


@docpipe.hookimpl
def register_blocks(register: Callable[[type[Block]], None]) -> None:
    register(TesseractOcr)
    register(OcrMerge)
