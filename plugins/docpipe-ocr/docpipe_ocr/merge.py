"""``ocr.merge``: one text per page, from OCR where a page needed it, else its text layer.

It runs after a map of ``ocr.tesseract`` over ``needs_ocr_pages``, whose gathered
``ocr_text`` list is aligned with ``needs_ocr_pages`` (the engine gathers a map's
results in item order). ``pages`` is what ``pdf.text`` writes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from docpipe.blocks import Block, Manifest, Result, State
from docpipe.errors import BlockFailed


class OcrMerge(Block):
    """Final text per page: the OCR text of the pages that were OCR'd, the text layer of the rest."""

    manifest = Manifest(
        name="ocr.merge",
        version="1.0",
        # `pages` is declared exactly as pdf.text writes it: the planner compares type names
        reads={"pages": list[dict], "needs_ocr_pages": list[int], "ocr_text": list[str]},
        writes={"page_texts": list[str], "full_text": str, "pages_ocrd": int},
        # a few list operations per document: cheaper than any hop to a pool
        runtime="inline",
        description=(
            "page_texts: per page, the OCR text where the page was OCR'd, else its text layer; "
            "full_text: the non-empty page texts joined by a blank line; pages_ocrd: pages OCR'd."
        ),
    )

    def run(self, batch: list[State], params: BaseModel) -> list[Result]:
        return [merge(s["pages"], s["needs_ocr_pages"], s["ocr_text"]) for s in batch]


def merge(pages: Any, needs_ocr_pages: Any, ocr_text: Any) -> Result:
    """``{page_texts, full_text, pages_ocrd}``; a :class:`BlockFailed` when the inputs disagree."""
    if not all(isinstance(v, list) for v in (pages, needs_ocr_pages, ocr_text)):
        return BlockFailed("'pages', 'needs_ocr_pages' and 'ocr_text' must be lists")
    if len(ocr_text) != len(needs_ocr_pages):
        return BlockFailed(
            f"{len(ocr_text)} OCR texts for {len(needs_ocr_pages)} pages that need OCR: 'ocr_text' "
            "must be the map over 'needs_ocr_pages'"
        )
    try:
        index = {int(p["number"]): i for i, p in enumerate(pages)}
        texts = [str(p["text"]) for p in pages]
    except (TypeError, KeyError, ValueError) as exc:
        return BlockFailed(f"'pages' must be pdf.text's pages, each with a number and a text: {exc!r}")
    for number, text in zip(needs_ocr_pages, ocr_text, strict=True):
        i = index.get(number)
        if i is None:
            return BlockFailed(f"page {number} needs OCR but is not in 'pages' (pages {sorted(index)})")
        if not isinstance(text, str):
            return BlockFailed(f"OCR text of page {number} must be a string, got {type(text).__name__}")
        texts[i] = text
    return {
        "page_texts": texts,
        # as pdf.text's `text`: the non-empty pages, a blank line between them
        "full_text": "\n\n".join(t for t in texts if t),
        "pages_ocrd": len(set(needs_ocr_pages)),
    }
