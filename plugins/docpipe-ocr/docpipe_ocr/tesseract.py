"""``ocr.tesseract``: the text of one page of a PDF or image, read by Tesseract.

A flow maps it over the pages ``pdf.text`` found without a usable text layer::

    {"id": "ocr", "map": "needs_ocr_pages", "as": "page", "block": "ocr.tesseract"}

Each call gets a file path and a 1-based page number (for an image: the frame
number) and renders that page *in the worker* (:mod:`docpipe_ocr.render`), so only
a path and a number travel to the worker and only text travels back.

One ``pytesseract.image_to_data`` call per page gives both the words with their
confidences and their layout (block, paragraph, line numbers), from which the
text is rebuilt: words joined by spaces, lines by newlines, paragraphs by a blank
line -- what ``tesseract ... txt`` would print, without running Tesseract twice.

With ``languages: "auto"`` each page is read with the pack of its own language among
``candidates``, chosen by a cheap first pass over a band of the page
(:mod:`docpipe_ocr.route`); ``ocr_language`` records the pack(s) every page was read with.

A blank page never reaches Tesseract (:mod:`docpipe_ocr.blank`): a page on which
nothing is drawn, or whose rendered pixels hold no ink, gives an empty text, a
confidence of -1 (no words, as Tesseract would say) and ``ocr_blank`` true.

The rendered page goes to Tesseract as an uncompressed BMP, not pytesseract's
default PNG: encoding a 300 dpi A4 page as PNG and decoding it again in Leptonica
costs about 0.3 s, a quarter of the OCR time of a whole page on this hardware.

Bad input is a typed failure of that one page, returned in its result slot: a page
number out of range -> :class:`DocumentError`, an empty or damaged file ->
:class:`CorruptDocument`, an unknown file type -> :class:`UnsupportedDocument`, a
password -> :class:`EncryptedDocument`, an image file too big to decode safely
(``max_image_pixels``) -> :class:`UnsupportedDocument`, Tesseract over ``timeout`` ->
:class:`BlockTimeout`, Tesseract failing -> :class:`BlockFailed`.

PyMuPDF and pytesseract are imported in ``setup()``, not when the plugin loads.
"""

from __future__ import annotations

import functools
import os
import re
import traceback
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from docpipe.blocks import Block, Manifest, Result, State
from docpipe.errors import BlockFailed, BlockTimeout, DocumentError, MissingDependency
from docpipe_ocr.blank import draws_nothing, is_blank
from docpipe_ocr.render import MAX_IMAGE_PIXELS, open_document, render_page
from docpipe_ocr.route import PROBE_CONFIG, ROUTABLE, guess, probe_band

#: Tesseract's page segmentation modes that produce text (0 is orientation only, 2 is not implemented)
PSM_MODES = frozenset({1, *range(3, 14)})

#: the ``languages`` value that routes each page to the pack of its own language
AUTO = "auto"

#: language names as pytesseract.get_languages() lists them (it leaves out script/... models)
_LANGUAGES = re.compile(r"^[a-z_]+(\+[a-z_]+)*$")


class TesseractOcr(Block):
    """OCR of one page of a PDF or image with Tesseract: its text and mean word confidence."""

    manifest = Manifest(
        name="ocr.tesseract",
        version="1.1",
        reads={"path": str, "page": int},
        writes={"ocr_text": str, "ocr_confidence": float, "ocr_blank": bool, "ocr_language": str},
        # Tesseract is a CPU-bound subprocess per page; a pool of processes runs pages in parallel
        runtime="process",
        device="cpu",
        # one thread per page: Tesseract's own OpenMP threading is ~6x slower on small machines,
        # and pages in parallel workers use the cores better (OMP_THREAD_LIMIT=1 in each worker)
        threads=1,
        # Tesseract processes one image per call: a bigger batch would only hold pages back in one
        # worker while another sits idle, and the per-call hand-off is microseconds against seconds
        batch=1,
        # MuPDF (its caches, fonts) and Tesseract grow a long-lived worker's memory: a fresh
        # worker every 500 pages/files costs one set-up and keeps it flat (steps override it)
        max_tasks_per_worker=500,
        description=(
            "Renders page `page` (1-based; a frame for images) of the PDF or image at `path` in the "
            "worker and reads it with Tesseract: the text (lines and paragraphs kept) and the mean "
            "word confidence (0-100, -1 when no words); a blank page (no ink) skips Tesseract and "
            "has ocr_blank true. ocr_language: the Tesseract pack(s) the page was read with ('' "
            "when blank); with languages 'auto' each page is routed to the pack of its own "
            "language among `candidates`."
        ),
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        languages: str = Field(
            default="eng",
            description=(
                "Tesseract language packs, '+'-separated (eng+deu); each must be installed. "
                "'auto': each page is read with the pack of its own language among `candidates`, "
                "found by a cheap first pass over a band of the page (docpipe_ocr.route)"
            ),
        )
        candidates: str = Field(
            default="eng+deu+fra+spa",
            description=(
                "languages 'auto' only: the packs a page may be routed to, '+'-separated, each "
                f"installed and one of {', '.join(sorted(ROUTABLE))}; the first reads the first "
                "pass; a page whose language is unclear is read with all of them joined"
            ),
        )
        dpi: int = Field(default=300, ge=10, le=2400, description="resolution PDF pages are rendered at")
        max_pixels: int = Field(
            default=40_000_000,
            ge=100_000,
            description="most pixels one rendered page may have; a bigger page is rendered at a lower dpi",
        )
        max_image_pixels: int = Field(
            default=MAX_IMAGE_PIXELS,
            ge=1_000_000,
            description=(
                "most pixels an image file (PNG, JPEG, TIFF frame) may have: it is decoded whole, "
                "about 3 bytes a pixel in colour; a bigger one fails as unsupported before decoding"
            ),
        )
        skip_blank: bool = Field(
            default=True, description="give blank pages (no ink) an empty text without running Tesseract"
        )
        psm: int = Field(default=3, description="Tesseract page segmentation mode (--psm): 1, 3-13")
        timeout: float = Field(default=300, gt=0, description="seconds Tesseract may take on one page")

        @field_validator("languages")
        @classmethod
        def _languages_syntax(cls, value: str) -> str:
            if value == AUTO:
                return value
            if AUTO in value.split("+"):
                raise ValueError(f"{value!r}: 'auto' stands alone (it routes among `candidates`)")
            if not _LANGUAGES.match(value):
                raise ValueError(f"{value!r} is not Tesseract language syntax: names joined by '+', e.g. eng+deu")
            return value

        @field_validator("candidates")
        @classmethod
        def _routable(cls, value: str) -> str:
            if not _LANGUAGES.match(value):
                raise ValueError(f"{value!r} is not Tesseract language syntax: names joined by '+', e.g. eng+fra")
            unknown = [lang for lang in value.split("+") if lang not in ROUTABLE]
            if unknown:
                raise ValueError(f"cannot route to {', '.join(unknown)}: routing knows the stopwords of "
                                 f"{', '.join(sorted(ROUTABLE))} only")
            if len(set(value.split("+"))) != len(value.split("+")):
                raise ValueError(f"{value!r} names a pack twice")
            return value

        @field_validator("psm")
        @classmethod
        def _psm_gives_text(cls, value: int) -> int:
            if value not in PSM_MODES:
                raise ValueError(f"psm {value} gives no text; use 1 or 3-13 (3: automatic, the default)")
            return value

    @classmethod
    def identity(cls, params: Params) -> dict[str, Any] | None:
        """Tesseract's version and a fingerprint of each language pack the step may read with
        (its size, first and last MiB; ``None`` for a pack that is not installed: the step's
        setup says so)."""
        from docpipe.provenance import sample_digest

        version, tessdata = tesseract_install()
        languages = params.candidates if params.languages == AUTO else params.languages
        packs = {lang: sample_digest(os.path.join(tessdata, f"{lang}.traineddata")) if tessdata else None
                 for lang in sorted(set(languages.split("+")))}
        return {"tesseract": version, "packs": packs}

    def setup(self, params: Params) -> None:
        # One Tesseract thread per worker. Its OpenMP threading, with several workers on a
        # 2-core machine, measured about 6x slower than one thread each: the pool is the
        # parallelism. pytesseract passes os.environ to the tesseract subprocess.
        os.environ["OMP_THREAD_LIMIT"] = "1"
        import pymupdf

        # damaged files make MuPDF print to stderr; its errors become typed failures instead
        pymupdf.TOOLS.mupdf_display_errors(False)
        pymupdf.TOOLS.mupdf_display_warnings(False)
        check_tesseract(params.candidates if params.languages == AUTO else params.languages)

    def run(self, batch: list[State], params: Params) -> list[Result]:
        import pymupdf

        try:
            return [ocr_guarded(state["path"], state["page"], params) for state in batch]
        finally:
            # MuPDF caches decoded objects of every document it opened (its "store", up to
            # 256 MiB): a worker's memory grew ~100 MiB over 120 pages and stayed. Emptied after
            # each call it stays flat (152 -> 251 MiB over 200 renders; 153 MiB emptied)
            pymupdf.TOOLS.store_shrink(100)


@functools.cache
def tesseract_install() -> tuple[str | None, str | None]:
    """The installed Tesseract's version line and its tessdata folder (``None`` for what
    cannot be found); asked once per process (two short ``tesseract`` runs)."""
    import shutil
    import subprocess

    exe = shutil.which("tesseract")
    if exe is None:
        return None, None
    try:
        shown = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
        listed = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None, None
    lines = (shown.stdout or shown.stderr).splitlines()
    found = re.search(r'"([^"]+)"', (listed.stdout or listed.stderr).split("\n", 1)[0])
    return (lines[0].strip() if lines else None), (found.group(1) if found else None)


def check_tesseract(languages: str) -> None:
    """Raise :class:`MissingDependency` unless the tesseract binary and every pack in
    ``languages`` are installed, saying what to install."""
    import pytesseract

    try:
        pytesseract.get_tesseract_version()
        installed = set(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractNotFoundError, FileNotFoundError, PermissionError):
        raise MissingDependency("tesseract not found: apt-get install tesseract-ocr") from None
    missing = [lang for lang in languages.split("+") if lang not in installed]
    if missing:
        packages = " ".join(apt_package(lang) for lang in missing)
        what = "pack" if len(missing) == 1 else "packs"
        have = ", ".join(sorted(installed - {"osd"})) or "none"
        raise MissingDependency(
            f"Tesseract language {what} {', '.join(missing)} not installed (installed: {have}): "
            f"apt-get install {packages}"
        )


def apt_package(language: str) -> str:
    """The Debian package of a Tesseract language pack: chi_sim -> tesseract-ocr-chi-sim."""
    return "tesseract-ocr-" + language.replace("_", "-")


def ocr_guarded(path: Any, page: Any, params: TesseractOcr.Params) -> Result:
    """:func:`ocr_page`, with every failure returned instead of raised."""
    import pymupdf

    try:
        if not isinstance(path, str | os.PathLike):
            return BlockFailed(f"'path' must be a string, got {type(path).__name__}")
        if not isinstance(page, int) or isinstance(page, bool):
            return BlockFailed(f"'page' must be a 1-based page number, got {page!r}")
        return ocr_page(os.fspath(path), page, params)
    except DocumentError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - one page must never fail the batch
        # the traceback object does not cross the process boundary, a note does
        exc.add_note("in the worker:\n" + "".join(traceback.format_tb(exc.__traceback__)))
        return exc
    finally:
        # MuPDF keeps every warning in a list for the life of the process
        pymupdf.TOOLS.reset_mupdf_warnings()


def ocr_page(path: str, page: int, params: TesseractOcr.Params) -> dict[str, Any]:
    """What ``ocr.tesseract`` writes for page ``page`` of ``path``; raises a :class:`DocumentError`."""
    from PIL import Image

    doc, label = open_document(path)
    with doc:
        if params.skip_blank and doc.is_pdf and 1 <= page <= doc.page_count and draws_nothing(doc[page - 1]):
            return dict(BLANK)
        rendered = render_page(doc, page, label, params.dpi, params.max_pixels, params.max_image_pixels)
    pix, rendered_dpi = rendered.pixmap, rendered.dpi
    if params.skip_blank and is_blank(pix, rendered_dpi):
        return dict(BLANK)
    image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    del pix, rendered  # the pixmap's memory goes now, not after Tesseract
    image.format = "BMP"  # pytesseract writes the image in this format for tesseract to read
    languages = params.languages
    if languages == AUTO:
        languages = route(image, rendered_dpi, page, params)
    config = f"--psm {params.psm} --dpi {max(1, round(rendered_dpi))}"
    tsv = tesseract_tsv(image, languages, config, page, params.timeout)
    text, confidence = text_and_confidence(tsv)
    return {"ocr_text": text, "ocr_confidence": confidence, "ocr_blank": False, "ocr_language": languages}


def route(image: Any, dpi: float, page: int, params: TesseractOcr.Params) -> str:
    """The pack(s) to read ``image`` with: the candidate whose stopwords the first pass over a
    band of the page found (:mod:`docpipe_ocr.route`), else all the candidates joined."""
    candidates = params.candidates.split("+")
    if len(candidates) == 1:
        return candidates[0]
    band, band_dpi = probe_band(image, dpi)
    band.format = "BMP"
    probe = tesseract_tsv(band, candidates[0], f"{PROBE_CONFIG} --dpi {max(1, round(band_dpi))}", page,
                          params.timeout)
    return guess(text_and_confidence(probe)[0], candidates) or params.candidates


def tesseract_tsv(image: Any, languages: str, config: str, page: int, timeout: float) -> str:
    """Tesseract's TSV for ``image``; its failures as typed errors of page ``page``."""
    import pytesseract

    try:
        return str(pytesseract.image_to_data(image, lang=languages, config=config, timeout=timeout))
    except pytesseract.TesseractError as exc:
        raise BlockFailed(f"tesseract failed on page {page} (exit status {exc.status}): {exc.message}") from None
    except RuntimeError as exc:
        if "timeout" not in str(exc):
            raise
        raise BlockTimeout(
            f"tesseract took longer than timeout={timeout:g} s on page {page}; "
            "raise the step's timeout param or lower its dpi"
        ) from None


#: what a blank page gives: what Tesseract would say about it, without running it
BLANK: dict[str, Any] = {"ocr_text": "", "ocr_confidence": -1.0, "ocr_blank": True, "ocr_language": ""}


def text_and_confidence(tsv: str) -> tuple[str, float]:
    """The text and mean word confidence of Tesseract's TSV output.

    Words (level 5 rows with text) are joined by spaces within a line, lines by
    ``\\n`` within a paragraph, paragraphs (and blocks) by a blank line. The
    confidence is the mean over words Tesseract scored (0-100), ``-1.0`` when there
    are none.
    """
    paragraphs: dict[tuple[str, str, str], dict[str, list[str]]] = {}
    confidences: list[float] = []
    for row in tsv.splitlines()[1:]:  # the first row is the header
        cells = row.split("\t", 11)
        if len(cells) < 12 or cells[0] != "5":
            continue
        word = cells[11].strip()
        if not word:
            continue
        page_num, block_num, par_num, line_num = cells[1:5]
        paragraphs.setdefault((page_num, block_num, par_num), {}).setdefault(line_num, []).append(word)
        try:
            confidence = float(cells[10])
        except ValueError:
            continue
        if confidence >= 0:
            confidences.append(confidence)
    text = "\n\n".join(
        "\n".join(" ".join(words) for words in lines.values()) for lines in paragraphs.values()
    )
    mean = round(sum(confidences) / len(confidences), 2) if confidences else -1.0
    return text, mean
