"""Long pages in overlapping chunks, and the entities of the chunks merged back.

A page longer than ``max_chars`` is cut into windows of at most ``max_chars``
characters; each window starts ``overlap`` characters (or a little more) before the
previous one ended. Cuts fall on whitespace where there is any in the second half of
the window, so no word is cut in two. Entity offsets found in a chunk are moved back
into the page by the chunk's start.

An entity near a cut may be found twice (once in each chunk) or cut short in one of
them. :func:`merge` keeps, among overlapping entities of different chunks, the one
found with the most context: the largest distance from a cut edge of its chunk (the
page's own start and end are not cuts), then the longest. So an entity found whole in
the overlap is kept once, and a copy clipped by a cut loses to the whole one. This
holds when ``overlap`` is longer than the longest entity plus a few words of context.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Found:
    """An entity in a text: ``text[start:end]``, the model's label, its score (or None)."""

    start: int
    end: int
    label: str
    score: float | None = None

    def shifted(self, by: int) -> Found:
        return Found(self.start + by, self.end + by, self.label, self.score)


def chunk_spans(text: str, max_chars: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, end)`` windows covering ``text``: one when it fits in ``max_chars``, none
    when it is only whitespace. Needs ``0 <= overlap < max_chars // 2``."""
    n = len(text)
    if not text.strip():
        return []
    if n <= max_chars:
        return [(0, n)]
    spans: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = start + max_chars
        if end >= n:
            spans.append((start, n))
            return spans
        # cut at the last whitespace of the window's second half, if there is one
        cut = end
        while cut > start + max_chars // 2 and not text[cut].isspace():
            cut -= 1
        end = cut if text[cut].isspace() else end
        spans.append((start, end))
        # the next window starts `overlap` before the cut, at the beginning of a word
        nxt = end - overlap
        while nxt < end and nxt > 0 and not text[nxt - 1].isspace():
            nxt += 1
        start = nxt if nxt < end else end - overlap
        while start < n and text[start].isspace():
            start += 1
    return spans


def trim(found: Found, text: str) -> Found | None:
    """``found`` without leading and trailing whitespace; ``None`` when nothing is left."""
    start, end = found.start, found.end
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start >= end:
        return None
    if (start, end) == (found.start, found.end):
        return found
    return Found(start, end, found.label, found.score)


def merge(pieces: Sequence[tuple[int, int, Sequence[Found]]], length: int) -> list[Found]:
    """One entity list for a text of ``length`` characters from the entities of its chunks.

    ``pieces`` holds ``(chunk start, chunk end, entities)`` with the entities' offsets
    already in the text; a chunk edge at ``0`` or ``length`` is not a cut. Entities of
    one chunk never overlap each other; overlapping entities of different chunks are
    resolved as the module docstring says. Returns them sorted by offset.
    """
    if len(pieces) == 1:
        return sorted(pieces[0][2], key=lambda f: (f.start, f.end))
    far = length + 1
    ranked: list[tuple[int, int, int, Found]] = []
    for i, (start, end, found) in enumerate(pieces):
        for f in found:
            left = f.start - start if start > 0 else far
            right = end - f.end if end < length else far
            ranked.append((-min(left, right), -(f.end - f.start), i, f))
    ranked.sort(key=lambda r: r[:3])
    starts: list[int] = []  # kept entities, sorted by start; they never overlap
    kept: list[Found] = []
    for *_, f in ranked:
        at = bisect.bisect_left(starts, f.start)
        if at > 0 and kept[at - 1].end > f.start:
            continue
        if at < len(kept) and kept[at].start < f.end:
            continue
        starts.insert(at, f.start)
        kept.insert(at, f)
    return kept
