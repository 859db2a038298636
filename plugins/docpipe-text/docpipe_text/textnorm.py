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


def page_list(value: object) -> list[str] | str:
    """``value`` as a list of page texts, or the reason it is not one.

    ``None`` pages (an upstream step that had nothing for a page) read as empty pages;
    anything else that is not a string makes the whole input invalid.
    """
    if not isinstance(value, list | tuple):
        return f"'page_texts' must be a list of strings, got {type(value).__name__}"
    pages: list[str] = []
    for number, page in enumerate(value, start=1):
        if page is None:
            pages.append("")
        elif isinstance(page, str):
            pages.append(page)
        else:
            return f"'page_texts' page {number} must be a string, got {type(page).__name__}"
    return pages
