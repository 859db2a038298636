"""Is a rendered page blank? Decided from its pixels in milliseconds, before Tesseract.

Tesseract takes about half a second on a blank page at 300 dpi (2.1 pages/s on 2
cores for a 3,000-page PDF of blank pages, some 24 minutes) to find no words. A
blank page is found here instead, and Tesseract never runs on it.

The verdict leans one way: a page called blank loses its text, a page wrongly
OCR'd only costs time. So a page is blank only when next to nothing on it differs
from its paper:

* the paper is the commonest grey level (a dark page with light text works alike);
* the scan's noise is measured on the paper (the median distance from it of the
  pixels near it), and a pixel is *ink* when it differs from the paper by more than
  6 times that noise, but never less than :data:`MIN_CONTRAST` nor more than
  :data:`MAX_CONTRAST` grey levels: light-grey text on clean paper is ink, the grain
  of a noisy scan is not, and black text is ink however noisy the scan;
* an ink pixel with no ink among its 8 neighbours is a speck of dust or noise, not
  text (a stroke of text is never one pixel on its own);
* the page is blank when what ink is left covers less than :data:`MIN_INK_MM2`
  square millimetres of the page, a fraction of the ink of one small letter.

A page on which nothing at all is drawn (no text, image or path in its content) is
blank without being rendered: :func:`draws_nothing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pymupdf

#: grey levels (of 255) a pixel must differ from the paper by, at least, to be ink: light-grey
#: text (#c0c0c0) on white differs by 63, text at #e0e0e0 still by 31
MIN_CONTRAST = 20
#: ... and never needs to differ by more than this: mid-grey text is ink on the noisiest scan
MAX_CONTRAST = 48
#: ink is what differs from the paper by more than this many times the paper's noise
NOISE_FACTOR = 6.0
#: the paper's noise is measured on the pixels this close to it (grey levels)
_NOISE_WINDOW = 32
#: a page with less ink than this (square millimetres, specks left out) is blank; the dot of
#: an 'i' in 8 pt text is about 0.1 mm2, a '1' in 8 pt about 0.5 mm2
MIN_INK_MM2 = 0.05
#: more raw ink pixels than this and the page is not blank, without looking for specks
_SURELY_INKED = 20_000


def draws_nothing(page: pymupdf.Page) -> bool:
    """Whether nothing is drawn on ``page``: no text, image, path or shading in its content
    (its ``get_bboxlog`` is empty). No pixels are rendered."""
    return not page.get_bboxlog()


def is_blank(pixmap: pymupdf.Pixmap, dpi: float) -> bool:
    """Whether the 8-bit greyscale ``pixmap`` (no alpha), rendered at ``dpi``, has no ink."""
    import numpy as np

    if pixmap.n != 1 or pixmap.width == 0 or pixmap.height == 0:
        raise ValueError(f"is_blank needs an 8-bit greyscale pixmap without alpha, got n={pixmap.n}")
    pixels = np.frombuffer(pixmap.samples_mv, dtype=np.uint8)
    pixels = pixels.reshape(pixmap.height, pixmap.stride)[:, : pixmap.width]
    histogram = np.bincount(pixels.ravel(), minlength=256)
    paper = int(histogram.argmax())
    distance = np.abs(np.arange(256) - paper)
    near = distance <= _NOISE_WINDOW
    noise = _weighted_median(distance[near], histogram[near]) * 1.4826  # as a standard deviation
    contrast = min(MAX_CONTRAST, max(MIN_CONTRAST, NOISE_FACTOR * noise))
    inked = distance > contrast  # by grey level
    raw_ink = int(histogram[inked].sum())
    min_ink = max(2, round(MIN_INK_MM2 * (dpi / 25.4) ** 2))
    if raw_ink < min_ink:
        return True
    if raw_ink > max(_SURELY_INKED, 100 * min_ink):
        return False
    return _clustered(inked[pixels]) < min_ink


def _weighted_median(values: object, weights: object) -> float:
    import numpy as np

    order = np.argsort(values)  # type: ignore[call-overload]
    cumulative = np.cumsum(np.asarray(weights)[order])
    return float(np.asarray(values)[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _clustered(ink: object) -> int:
    """How many pixels of the boolean mask ``ink`` have an ink pixel among their 8 neighbours."""
    import numpy as np

    mask = np.pad(np.asarray(ink), 1)
    ys, xs = np.nonzero(mask)
    touching = np.zeros(len(ys), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                touching |= mask[ys + dy, xs + dx]
    return int(touching.sum())
