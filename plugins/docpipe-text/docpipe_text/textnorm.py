"""Text normalisation shared by the blocks of this plugin.

Text from PDFs and OCR carries presentation forms (the ``ﬁ`` ligature, full-width
digits, no-break spaces) and breaks lines in the middle of phrases. Both blocks
look at the text through :func:`flatten`: NFKC-normalised (``ﬁ`` -> ``fi``) and with
every run of whitespace, line breaks included, turned into one space, so
"access\\ncontrol" reads as "access control".
"""

from __future__ import annotations

import unicodedata


def flatten(text: str) -> str:
    """``text`` NFKC-normalised, with each run of whitespace collapsed to one space and no
    leading or trailing whitespace."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split())
