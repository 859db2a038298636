"""docpipe-pdf: the built-in blocks for PDFs and page images.

* ``pdf.text`` (:class:`~docpipe_pdf.text.PdfText`): text layer, page sizes, metadata
  and the pages that need OCR of a PDF, PNG, JPEG or TIFF.
* ``text.stats`` (:class:`~docpipe_pdf.stats.TextStats`): word and character counts.

Registered through the ``docpipe`` entry-point group like any third-party plugin.
Importing this package is cheap: PyMuPDF is imported when ``pdf.text`` first runs.
"""

from __future__ import annotations

from collections.abc import Callable

import docpipe
from docpipe.blocks import Block
from docpipe_pdf.stats import TextStats
from docpipe_pdf.text import PdfText

__all__ = ["PdfText", "TextStats", "register_blocks"]


@docpipe.hookimpl
def register_blocks(register: Callable[[type[Block]], None]) -> None:
    register(PdfText)
    register(TextStats)
