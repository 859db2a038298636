"""docpipe-pdf: the built-in blocks for PDFs and page images.

* ``pdf.text`` (:class:`~docpipe_pdf.text.PdfText`): text layer, page sizes, metadata
  and the pages that need OCR of a PDF, PNG, JPEG or TIFF.
* ``pdf.decrypt`` (:class:`~docpipe_pdf.decrypt.PdfDecrypt`): a decrypted copy of a
  password-protected PDF for the blocks after it; other files pass through.
* ``text.stats`` (:class:`~docpipe_pdf.stats.TextStats`): word and character counts.

Registered through the ``docpipe`` entry-point group like any third-party plugin.
Importing this package is cheap: PyMuPDF and pikepdf are imported when a worker sets up
``pdf.text`` or ``pdf.decrypt``.
"""

from __future__ import annotations

from collections.abc import Callable

import docpipe
from docpipe.blocks import Block
from docpipe_pdf.decrypt import PdfDecrypt
from docpipe_pdf.stats import TextStats
from docpipe_pdf.text import PdfText

__all__ = ["PdfDecrypt", "PdfText", "TextStats", "register_blocks"]


@docpipe.hookimpl
def register_blocks(register: Callable[[type[Block]], None]) -> None:
    register(PdfText)
    register(PdfDecrypt)
    register(TextStats)
