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
* ink pixels that touch (8 neighbours) make a *mark*; the page is blank when no mark
  covers :data:`MIN_MARK_MM2` square millimetres (a hyphen or a '1' in 6 pt text
  covers twice that; specks of dust and the grain of a scan cover less) and all its
  marks of more than one pixel cover less than :data:`MAX_SPECKS_MM2` together
  (halftoned text is made of dots: many of them are ink, however small).

A page on which nothing at all is drawn (no text, image or path in its content) is
blank without being rendered: :func:`draws_nothing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy.typing as npt
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
#: a mark (touching ink pixels) this big (square millimetres) is ink, not a speck: a full stop
#: in 8 pt text is about 0.1 mm2, a hyphen in 8 pt or a '1' in 6 pt about 0.2 mm2
MIN_MARK_MM2 = 0.12
#: smaller marks of more than one pixel, together this big, are ink too
MAX_SPECKS_MM2 = 4.0
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
    px_per_mm2 = (dpi / 25.4) ** 2
    min_mark = max(2, round(MIN_MARK_MM2 * px_per_mm2))
    if raw_ink < min_mark:
        return True
    if raw_ink > _SURELY_INKED:
        return False
    sizes = _mark_sizes(inked[pixels])
    return int(sizes.max()) < min_mark and int(sizes[sizes > 1].sum()) < MAX_SPECKS_MM2 * px_per_mm2


def _weighted_median(values: npt.ArrayLike, weights: npt.ArrayLike) -> float:
    import numpy as np

    order = np.argsort(values)
    cumulative = np.cumsum(np.asarray(weights)[order])
    return float(np.asarray(values)[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _mark_sizes(ink: Any) -> Any:
    """The sizes (pixels) of the marks of the boolean image ``ink``: its 8-connected components.
    Only called with few ink pixels (at most :data:`_SURELY_INKED`): they are labelled as a
    sparse graph, by propagating the smallest label along edges and pointer jumping."""
    import numpy as np

    mask = np.pad(ink, 1)
    width = mask.shape[1]
    where = np.flatnonzero(mask)  # sorted
    firsts, seconds = [], []
    for offset in (1, width - 1, width, width + 1):  # right, and the three below
        pos = np.searchsorted(where, where + offset)
        found = pos < len(where)
        found[found] = where[pos[found]] == where[found] + offset
        firsts.append(np.flatnonzero(found))
        seconds.append(pos[found])
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    labels = np.arange(len(where))
    while True:
        low = np.minimum(labels[a], labels[b])
        new = labels.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]  # pointer jumping: a label's own label
        if np.array_equal(new, labels):
            return np.bincount(labels)
        labels = new
