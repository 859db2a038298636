"""Which Tesseract pack to read a page with: a cheap first pass, then its stopwords.

``ocr.tesseract`` with ``languages: "auto"`` routes each page among its ``candidates``
(``eng+deu+fra+spa`` by default) before the full OCR:

1. :func:`probe_band` crops a band of whole text lines (about :data:`BAND_INCHES` tall, the
   left :data:`BAND_WIDTH` of the text) from the upper middle of the rendered page and
   halves its resolution to about :data:`PROBE_DPI`;
2. Tesseract reads that band with the first candidate pack (``--psm 6``, no search for
   inverted text: :data:`PROBE_CONFIG`): some 30-50 words in about 0.2 s on this hardware
   (a tenth of a second of it is starting Tesseract and loading the pack), against
   1.2-3 s for the full page at 300 dpi (benchmarks/ocr_language.py);
3. :func:`guess` counts the words of each candidate's list of frequent function words
   (articles, pronouns, conjunctions: :data:`STOPWORDS`) among them; the language with the
   most, at least :data:`MIN_HITS` and at least :data:`MIN_RATIO` times the runner-up, wins.

The function words are plain ASCII once accents are stripped, so a pack of another Latin
language reads them well enough (``l'environ`` -> ``l``, ``environ``); only words that mean
something in two candidate languages are left out of both lists (``de``, ``la``, ``en``,
``que``, ``es``, ``an``...).

Tesseract's own script detection (``--psm 0``, the ``osd`` pack) is of no use here: it
tells scripts apart (Latin, Cyrillic, Han...), and every candidate is Latin; it also costs
about 0.7 s a page, half a full OCR.

When no language wins (a sparse page: a form, a few numbers, a picture) the page is read
with all the candidates joined (``eng+deu+fra+spa``): Tesseract then picks per word, and a
page with few words is cheap to read however many packs are loaded.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

#: frequent function words per Tesseract pack, accents stripped, none shared by two lists
STOPWORDS: dict[str, frozenset[str]] = {
    "eng": frozenset(
        "the and of to is that it with for as are be this by from at which have you not they "
        "their can has were been would there what all when your into than these its should but "
        "if we our who them more must any other such may".split()
    ),
    "deu": frozenset(
        "der die das und ist nicht ein eine einen einem einer zu den dem mit sich auf fur von im "
        "ich wir ihr auch nach bei aus wenn wird werden sind noch wie oder aber dass nur kann "
        "diese dieser dieses zum zur uber durch hat haben sein jeder jede alle".split()
    ),
    "fra": frozenset(
        "le les des et est une il elle ils qui dans pour pas sur au aux ce cette ces sont "
        "avec ne par plus vous nous leur mais ou sa ses ete etre fait comme aussi tout tous tres "
        "peut sans je qu l d on doit toute".split()
    ),
    "spa": frozenset(
        "el los las del y es por con para una lo al como mas pero sus su ya este esta tambien "
        "muy hay ser sin sobre entre cuando todo donde hasta desde nos ha fue toda todos".split()
    ),
}
#: the packs routing can choose among (those with a stopword list)
ROUTABLE = frozenset(STOPWORDS)
#: a language wins with at least this many of its stopwords in the band ...
MIN_HITS = 4
#: ... and at least this many times as many as the runner-up
MIN_RATIO = 2.0
#: the band read by the first pass: this tall (inches), ...
BAND_INCHES = 0.7
#: ... this share of the text's width (from its left edge), ...
BAND_WIDTH = 0.5
#: ... at about this resolution
PROBE_DPI = 150
#: Tesseract's options for the first pass (with ``--dpi``): one block of text, and no second
#: recognition of each line inverted (white on black), which a band of body text never needs
PROBE_CONFIG = "--psm 6 -c tessedit_do_invert=0"
#: where the band starts, as a share of the height the ink spans (the body, past headers)
BAND_START = 0.3

_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` with accents stripped: ``Déjà vu`` -> ``deja``, ``vu``."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return _WORD.findall("".join(c for c in decomposed if not unicodedata.combining(c)))


def scores(text: str, candidates: list[str]) -> dict[str, int]:
    """How many words of ``text`` are stopwords of each candidate pack."""
    found = words(text)
    return {lang: sum(w in STOPWORDS[lang] for w in found) for lang in candidates}


def guess(text: str, candidates: list[str]) -> str | None:
    """The candidate pack ``text`` is written in, or ``None`` when none clearly wins."""
    ranked = sorted(scores(text, candidates).items(), key=lambda kv: kv[1], reverse=True)
    best, hits = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0
    if hits >= MIN_HITS and hits >= MIN_RATIO * runner_up:
        return best
    return None


def probe_band(image: Image.Image, dpi: float) -> tuple[Image.Image, float]:
    """The band of ``image`` (8-bit grey, rendered at ``dpi``) the first pass reads, and the
    resolution it has: whole lines of the upper middle of the text, at about PROBE_DPI."""
    import numpy as np
    from PIL import Image as PILImage

    pixels = np.asarray(image)
    paper = int(np.bincount(pixels.ravel(), minlength=256).argmax())
    ink = np.abs(pixels.astype(np.int16) - paper) > 64
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if len(rows) == 0:
        return image, dpi
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    height = round(BAND_INCHES * dpi)
    if bottom - top <= height * 1.5:  # little text: read all of it
        y0, y1 = top, bottom
    else:
        per_row = ink[:, left:right].sum(axis=1)
        slack = max(1, round(0.12 * dpi))  # about a line: move each edge into the gap between lines
        y0 = _quietest(per_row, top + round(BAND_START * (bottom - top - height)), slack)
        y1 = _quietest(per_row, min(bottom, y0 + height), slack)
    x1 = left + max(1, round(BAND_WIDTH * (right - left)))
    margin = max(1, round(0.05 * dpi))
    band = image.crop((max(0, left - margin), max(0, y0 - margin), min(image.width, x1 + margin),
                       min(image.height, y1 + margin)))
    scale = dpi / PROBE_DPI
    if scale > 1.3:
        band = band.resize((max(1, round(band.width / scale)), max(1, round(band.height / scale))),
                           PILImage.Resampling.BILINEAR)
        return band, dpi / scale
    return band, dpi


def _quietest(per_row: object, around: int, slack: int) -> int:
    """The row with the least ink within ``slack`` rows of ``around``."""
    import numpy as np

    counts = np.asarray(per_row)
    lo, hi = max(0, around - slack), min(len(counts), around + slack + 1)
    if lo >= hi:
        return min(max(0, around), len(counts))
    return lo + int(np.argmin(counts[lo:hi]))
