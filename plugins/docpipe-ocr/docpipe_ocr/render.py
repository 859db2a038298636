"""Open a document and render one of its pages to a greyscale image Tesseract can read.

Everything here runs inside the OCR worker process: the worker gets a path and
a page number, never pixels, so no image ever crosses a process boundary.

The rendered size is bounded. A PDF page may be up to 14400 x 14400 pt (200
inches square); at 300 dpi that is 3.6 billion pixels, several gigabytes for one
greyscale image. :func:`render_scale` lowers the resolution of such a page until
it fits ``max_pixels`` and Tesseract's own limit of :data:`MAX_SIDE` pixels a side.

PDF pages are rendered at the requested ``dpi``. Images (PNG, JPEG, TIFF frames)
are OCR'd at their own pixel size: resampling a scan only invents pixels, and
Tesseract's line recogniser rescales text lines itself. Both are bounded alike.

The decoded size is bounded too. MuPDF decodes a PNG, JPEG or TIFF file whole
before it scales it: a 26000 x 26000 PNG, 2 MB on disk, took 2.1 GB of memory
to render at 40 million pixels. :func:`check_decoded_size` reads every image's
size from its header (``get_image_info`` decodes nothing) and refuses one over
``max_image_pixels`` with :class:`UnsupportedDocument` before any pixel is
decoded. Images *inside a PDF* are decoded row by row and subsampled as they
come (the same 26000 x 26000 image drawn on an A4 page rendered in 0.2 GB), so
only the PDF filters whose decoders hold the whole image (JPEG 2000, JBIG2)
are bounded there.

The file type comes from the file's first bytes, never from its name, as in
``pdf.text``. PyMuPDF opens images as one-page documents (multi-page TIFF: one
page per frame), so PDFs and images share one code path.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from docpipe.blocks import library_path
from docpipe.errors import CorruptDocument, DocumentError, PasswordRequired, UnsupportedDocument

if TYPE_CHECKING:
    import pymupdf

#: Tesseract refuses images wider or taller than this ("Image too large")
MAX_SIDE = 32767

#: the most pixels an image may have to be decoded whole; Pillow refuses 179 million by default.
#: 150 million is an A0 scan at 300 dpi, about 450 MB decoded in colour.
MAX_IMAGE_PIXELS = 150_000_000

#: PDF image filters whose MuPDF decoders hold the whole image in memory (the others stream)
_WHOLE_IMAGE_FILTERS = frozenset({"JPXDecode", "JBIG2Decode"})

#: (leading bytes, label, PyMuPDF ``filetype``)
_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG", "png"),
    (b"\xff\xd8\xff", "JPEG", "jpeg"),
    (b"II*\x00", "TIFF", "tiff"),
    (b"MM\x00*", "TIFF", "tiff"),
)
_HEAD_SIZE = 1024


@dataclass(frozen=True)
class Rendered:
    """A rendered page: 8-bit greyscale pixels and the resolution they represent."""

    pixmap: pymupdf.Pixmap
    #: pixels per inch of the page as rendered (what Tesseract is told with ``--dpi``)
    dpi: float
    #: whether the page was rendered at less than the resolution asked for, to bound its size
    reduced: bool


def file_type(path: str) -> tuple[str, str]:
    """``(label, PyMuPDF filetype)`` of the file at ``path``, from its first bytes.

    Raises :class:`DocumentError` when the file cannot be read, :class:`CorruptDocument`
    when it is empty and :class:`UnsupportedDocument` when it is none of PDF, PNG, JPEG, TIFF.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_SIZE)
    except IsADirectoryError:
        raise DocumentError("cannot read the file: it is a folder") from None
    except OSError as exc:
        raise DocumentError(f"cannot read the file: {exc.strerror or exc}") from None
    if not head:
        raise CorruptDocument("empty file (0 bytes)")
    for magic, label, mupdf in _MAGIC:
        if head.startswith(magic):
            return label, mupdf
    if b"%PDF-" in head:  # readers accept junk before the header within the first 1024 bytes
        return "PDF", "pdf"
    raise UnsupportedDocument(
        f"unsupported file type (starts with {head[:8].hex(' ')}); "
        "ocr.tesseract reads PDF, PNG, JPEG and TIFF"
    )


def open_document(path: str | os.PathLike[str]) -> tuple[pymupdf.Document, str]:
    """Open a PDF or image with PyMuPDF; ``(document, type label)``. Typed errors only."""
    import pymupdf

    path = os.fspath(path)
    label, mupdf = file_type(path)
    try:
        with library_path(path) as name:  # a name that is not UTF-8 reaches MuPDF too
            doc = pymupdf.open(name, filetype=mupdf)
    except (pymupdf.FileDataError, pymupdf.mupdf.FzErrorBase) as exc:
        failure = _typed(exc, f"damaged {label}, it cannot be opened")
        if failure is None:
            raise
        raise failure from exc
    if doc.needs_pass:
        doc.close()
        raise PasswordRequired("encrypted, no password given: put a pdf.decrypt step with a password before this one")
    if doc.page_count == 0:
        doc.close()
        raise CorruptDocument(f"damaged {label}: it has no pages")
    return doc, label


def render_scale(width: float, height: float, dpi: float, max_pixels: int) -> float:
    """The zoom (pixels per point) to render a ``width`` x ``height`` pt page at.

    ``dpi / 72`` unless the image would exceed ``max_pixels`` pixels or
    :data:`MAX_SIDE` pixels a side; then the largest zoom that fits.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"page has no area ({width} x {height} pt)")
    # Rounding a page that does not start on a whole pixel out to whole pixels adds up to
    # 2 pixels a side: solve (width*z + 2) * (height*z + 2) = max_pixels for z.
    a, b, c = width * height, 2 * (width + height), 4 - max_pixels
    fit = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return min(dpi / 72, fit, (MAX_SIDE - 2) / width, (MAX_SIDE - 2) / height)


def render_page(
    doc: pymupdf.Document, number: int, label: str, dpi: float, max_pixels: int,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> Rendered:
    """Page ``number`` (1-based) of ``doc`` as a greyscale pixmap, at ``dpi`` for a PDF page
    and at the image's own resolution for an image, bounded by ``max_pixels``; an image that
    would be decoded whole with more than ``max_image_pixels`` pixels is refused first."""
    import pymupdf

    count = doc.page_count
    if not 1 <= number <= count:
        pages = "1 page" if count == 1 else f"{count} pages"
        raise DocumentError(f"page {number} does not exist: the document has {pages}")
    try:
        page = doc.load_page(number - 1)
        rect = page.rect
        images = [] if doc.is_pdf else page.get_image_info()  # sizes from headers: nothing decoded
        check_decoded_size(doc, page, images, label, number, max_image_pixels)
        wanted = dpi if doc.is_pdf else _native_dpi(page, images, dpi)
        try:
            zoom = render_scale(rect.width, rect.height, wanted, max_pixels)
        except ValueError as exc:
            raise CorruptDocument(f"damaged {label}: page {number}: {exc}") from None
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csGRAY, alpha=False)
    except pymupdf.mupdf.FzErrorBase as exc:
        failure = _typed(exc, f"damaged {label}, page {number} cannot be rendered")
        if failure is None:
            raise
        raise failure from exc
    return Rendered(pix, zoom * 72, zoom * 72 < wanted - 1e-6)


def check_decoded_size(
    doc: pymupdf.Document, page: pymupdf.Page, images: list[dict], label: str, number: int,
    max_image_pixels: int,
) -> None:
    """Raise :class:`UnsupportedDocument` when rendering page ``number`` would decode an image
    of more than ``max_image_pixels`` pixels whole: the image of an image file (``images``:
    its ``get_image_info()``), a JPEG 2000 or JBIG2 image of a PDF page. Only headers and
    object dictionaries are read (``get_image_info(xrefs=True)`` would decode the images)."""
    if doc.is_pdf:
        # (xref, smask, width, height, bpc, colorspace, alt. colorspace, name, filter, ...)
        found = [(item[2], item[3], 1, item[8]) for item in page.get_images(full=True)
                 if item[8] in _WHOLE_IMAGE_FILTERS]
    else:
        found = [(int(i.get("width") or 0), int(i.get("height") or 0), int(i.get("colorspace") or 1), "")
                 for i in images]
    for width, height, components, filter_name in found:
        if width * height <= max_image_pixels:
            continue
        if filter_name:
            what = f"page {number} holds a {filter_name.removesuffix('Decode')} image"
        else:
            what = f"{label} image" if doc.page_count == 1 else f"{label} frame {number}"
        decoded = width * height * max(1, components)
        memory = f"{decoded / 1e9:.1f} GB" if decoded >= 1e9 else f"{decoded / 1e6:.0f} MB"
        raise UnsupportedDocument(
            f"{what} of {width} x {height} pixels ({width * height / 1e6:,.0f} million) is over "
            f"max_image_pixels={max_image_pixels:,}: decoding it takes over {memory}; "
            "raise the step's max_image_pixels param to read it"
        )


def _native_dpi(page: pymupdf.Page, info: list[dict], fallback: float) -> float:
    """The resolution at which an image page renders at its own pixel size."""
    if not info or not info[0].get("width") or page.rect.width <= 0:
        return fallback
    return float(info[0]["width"]) * 72 / page.rect.width


def _typed(exc: Exception, what: str) -> DocumentError | None:
    """The typed document failure for an error MuPDF raised; ``None`` when the error is
    not the document's fault (out of memory, I/O, interrupted)."""
    import pymupdf

    mupdf = pymupdf.mupdf
    if isinstance(exc, mupdf.FzErrorSystem | mupdf.FzErrorAbort | mupdf.FzErrorTrylater):
        return None
    message = "" if isinstance(exc, pymupdf.FileDataError) else re.sub(r"^code=\d+: ", "", str(exc))
    text = f"{what}: {message}" if message else what
    if isinstance(exc, mupdf.FzErrorUnsupported):
        return UnsupportedDocument(text)
    return CorruptDocument(text)
