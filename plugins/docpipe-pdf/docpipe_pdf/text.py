"""``pdf.text``: the text layer, page sizes and metadata of a PDF or a page image.

A document is a file path. Its type is decided by its first bytes, never by its
name: PDF, or a page image (PNG, JPEG, TIFF including multi-page TIFF), whose
pages all need OCR. Every page whose text layer has fewer than ``min_chars``
usable characters is listed in ``needs_ocr_pages``, for an OCR step to map over.

Bad input is a typed failure of that one document, returned in its result slot:

* an empty file, a PDF or image the library cannot open, a PDF page it cannot read
  (its object is missing: a file cut short) -> :class:`CorruptDocument`. Only
  MuPDF failing makes that verdict, never the bytes alone: a PDF whose ``%%EOF``
  marker is missing or followed by padding or other text, or one MuPDF had to
  repair, is read like any other when its pages read. "probably truncated" in a
  message only explains such a failure, when no ``%%EOF`` ends the file either
* an unknown file type (whatever its name says), more pages than ``max_pages``
  -> :class:`UnsupportedDocument`
* a PDF that needs a password -> :class:`PasswordRequired` (decrypting is
  ``pdf.decrypt``'s job: put it first and read its ``pdf_path``)
* a file that cannot be read (missing, a folder, no permission) -> :class:`DocumentError`

PyMuPDF is imported when the block first runs, not when the plugin loads: it
takes about a second to import and ``docpipe blocks`` should not wait for it.
"""

from __future__ import annotations

import os
import re
import traceback
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from docpipe.blocks import Block, Manifest, Result, State, library_path
from docpipe.errors import (
    BlockFailed,
    CorruptDocument,
    DocumentError,
    PasswordRequired,
    UnsupportedDocument,
)
from docpipe_pdf.sniff import TRUNCATED_NOTE, FileType, describe, has_eof_marker, read_head, sniff

if TYPE_CHECKING:
    import pymupdf

class PdfText(Block):
    """Text layer, page sizes and metadata of a PDF or page image; flags the pages that need OCR."""

    manifest = Manifest(
        name="pdf.text",
        version="1.0",
        reads={"path": str},
        writes={
            "pages": list[dict],
            "page_count": int,
            "text": str,
            "metadata": dict,
            "needs_ocr_pages": list[int],
            "mime": str,
        },
        # MuPDF parsing is CPU-bound and holds the GIL
        runtime="process",
        batch=1,
        # MuPDF's caches (fonts, images) grow a long-lived worker's memory: a fresh worker every
        # 500 files costs one cheap set-up and keeps it flat (a step may override it)
        max_tasks_per_worker=500,
        description=(
            "Reads a PDF, PNG, JPEG or TIFF (type by content, not name): per-page text "
            "{number, text, needs_ocr, width, height} in points, the joined text, metadata, "
            "the page numbers without a usable text layer, and the MIME type."
        ),
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        max_pages: int = Field(
            default=5000,
            ge=1,
            description="a document with more pages fails as unsupported instead of being read",
        )
        min_chars: int = Field(
            default=8,
            ge=0,
            description=(
                "a PDF page whose text layer has fewer non-whitespace characters needs OCR; "
                "0 marks no PDF page (image pages always need OCR)"
            ),
        )

    def setup(self, params: BaseModel) -> None:
        import pymupdf

        # damaged files make MuPDF print to stderr; its errors become our typed failures
        pymupdf.TOOLS.mupdf_display_errors(False)
        pymupdf.TOOLS.mupdf_display_warnings(False)

    def run(self, batch: list[State], params: Params) -> list[Result]:
        return [read_guarded(state["path"], params) for state in batch]


def read_guarded(path: Any, params: PdfText.Params) -> Result:
    """:func:`read_document`, with every failure returned instead of raised."""
    import pymupdf

    try:
        if not isinstance(path, str | os.PathLike):
            return BlockFailed(f"'path' must be a string, got {type(path).__name__}")
        return read_document(os.fspath(path), params)
    except Exception as exc:  # noqa: BLE001 - one document must never fail the batch
        # a typed failure or not: the traceback object does not cross the process boundary,
        # a note does (where the verdict was made shows in the run record)
        exc.add_note("in the worker:\n" + "".join(traceback.format_tb(exc.__traceback__)))
        return exc
    finally:
        # MuPDF keeps every warning in a list for the life of the process
        pymupdf.TOOLS.reset_mupdf_warnings()


def read_document(path: str, params: PdfText.Params) -> dict[str, Any]:
    """What ``pdf.text`` writes for the file at ``path``; raises a :class:`DocumentError`."""
    import pymupdf

    head, stat = read_head(path)
    if stat.st_size == 0:
        raise CorruptDocument("empty file (0 bytes)")
    ftype = sniff(head)
    if ftype is None:
        if describe(head) == "plain text" and not path.lower().endswith(".pdf"):
            return read_text_file(path, stat.st_size, params)
        raise UnsupportedDocument(_unsupported(path, head))

    try:
        with library_path(path) as name:  # a name that is not UTF-8 reaches MuPDF too
            doc = pymupdf.open(name, filetype=ftype.mupdf)
    except (pymupdf.FileDataError, pymupdf.mupdf.FzErrorBase) as exc:
        failure = _mupdf_failure(exc, f"damaged {ftype.label}, it cannot be opened", ftype, path)
        if failure is None:
            raise
        raise failure from exc

    with doc:
        # a repaired PDF (doc.is_repaired) is fine: what counts is whether its pages read
        if ftype.is_pdf and doc.needs_pass:
            raise PasswordRequired("encrypted, no password given: put a pdf.decrypt step with a "
                                   "password before this one")
        count = _page_count(doc, ftype, path)
        if count == 0:
            raise CorruptDocument(f"damaged {ftype.label}: it has no pages")
        if count > params.max_pages:
            raise UnsupportedDocument(
                f"{count} pages, more than max_pages={params.max_pages}; "
                "raise the step's max_pages param to read it"
            )
        pages = [_page(doc, number, ftype, params, path) for number in range(1, count + 1)]
        metadata = _metadata(doc, ftype)

    return {
        "pages": pages,
        "page_count": count,
        "text": "\n\n".join(p["text"] for p in pages if p["text"]),
        "metadata": metadata,
        "needs_ocr_pages": [p["number"] for p in pages if p["needs_ocr"]],
        "mime": ftype.mime,
    }


#: the largest plain-text file read (a text file of this size is a data dump, not a document)
MAX_TEXT_BYTES = 50 * 2**20


def read_text_file(path: str, size: int, params: PdfText.Params) -> dict[str, Any]:
    """A plain-text or Markdown file (UTF-8; recognised by its content, not its name) as a
    document: one page per form feed (``\f``), or one page; no page needs OCR."""
    if size > MAX_TEXT_BYTES:
        raise UnsupportedDocument(f"a text file of {size:,} bytes, more than pdf.text reads "
                                  f"({MAX_TEXT_BYTES // 2**20} MiB)")
    with open(path, "rb") as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    text = data.decode("utf-8-sig", errors="replace").replace("\r\n", "\n")
    chunks = text.split("\f") if "\f" in text else [text]
    if len(chunks) > params.max_pages:
        raise UnsupportedDocument(f"{len(chunks)} pages (form feeds), more than "
                                  f"max_pages={params.max_pages}; raise the step's max_pages param")
    texts = [chunk.strip() for chunk in chunks]
    pages = [{"number": n, "text": page, "needs_ocr": False, "width": None, "height": None}
             for n, page in enumerate(texts, start=1)]
    markdown = path.lower().endswith((".md", ".markdown"))
    metadata = {ours: "" for ours in _METADATA_KEYS.values()}
    metadata["format"] = "Markdown" if markdown else "text"
    return {
        "pages": pages,
        "page_count": len(pages),
        "text": "\n\n".join(t for t in texts if t),
        "metadata": metadata,
        "needs_ocr_pages": [],
        "mime": "text/markdown" if markdown else "text/plain",
    }


def usable_chars(text: str) -> int:
    """Characters of a text layer that carry text: not whitespace, control or U+FFFD."""
    return sum(1 for c in text if c.isprintable() and not c.isspace() and c != "\ufffd")


def iso_date(raw: str) -> str:
    """A PDF date (``D:20240102030405+01'00'``) as ISO 8601; anything else unchanged."""
    m = _PDF_DATE.match(raw.strip())
    if m is None:
        return raw
    year, month, day, hour, minute, second, utc, sign, tz_hour, tz_minute = m.groups()
    iso = f"{year}-{month or '01'}-{day or '01'}T{hour or '00'}:{minute or '00'}:{second or '00'}"
    if utc:
        iso += "+00:00"
    elif sign:
        iso += f"{sign}{tz_hour}:{tz_minute or '00'}"
    try:
        datetime.fromisoformat(iso)
    except ValueError:
        return raw
    return iso


_PDF_DATE = re.compile(
    r"(?:D:)?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?"
    r"(?:(Z)|([+-])(\d{2})'?(?:(\d{2})'?)?)?$"
)

# PDF info keys -> ours
_METADATA_KEYS = {
    "format": "format",
    "title": "title",
    "author": "author",
    "subject": "subject",
    "keywords": "keywords",
    "creator": "creator",
    "producer": "producer",
    "creationDate": "creation_date",
    "modDate": "mod_date",
    "encryption": "encryption",
}


def _unsupported(path: str, head: bytes) -> str:
    what = describe(head)
    if path.lower().endswith(".pdf"):
        return f"named .pdf but is not a PDF (no %PDF- header): it looks like {what}"
    return f"unsupported file type: {what}; pdf.text reads PDF, PNG, JPEG, TIFF and plain text"


def _mupdf_failure(exc: Exception, what: str, ftype: FileType, path: str) -> DocumentError | None:
    """The typed document failure for an error MuPDF raised; ``None`` when it is not the file's."""
    import pymupdf

    mupdf = pymupdf.mupdf
    if isinstance(exc, mupdf.FzErrorSystem | mupdf.FzErrorAbort | mupdf.FzErrorTrylater):
        return None  # out of memory, I/O, interrupted: not the document's fault
    message = re.sub(r"^code=\d+: ", "", str(exc))
    if isinstance(exc, pymupdf.FileDataError):
        message = ""  # "Failed to open file '...' as type pdf." says nothing new
    text = f"{what}: {message}" if message else what
    if ftype.is_pdf and not has_eof_marker(path):
        text += f"; {TRUNCATED_NOTE}"
    if isinstance(exc, mupdf.FzErrorUnsupported):
        return UnsupportedDocument(text)
    return CorruptDocument(text)


def _page_count(doc: pymupdf.Document, ftype: FileType, path: str) -> int:
    import pymupdf

    try:
        return int(doc.page_count)
    except pymupdf.mupdf.FzErrorBase as exc:
        failure = _mupdf_failure(exc, f"damaged {ftype.label}, its pages cannot be counted", ftype, path)
        if failure is None:
            raise
        raise failure from exc
    except RuntimeError as exc:
        # PyMuPDF's own check of a page tree whose /Count is absurd ("Invalid number of pages")
        message = re.sub(r"^code=\d+: ", "", str(exc))
        raise CorruptDocument(f"damaged {ftype.label}: its page tree is broken ({message})") from exc


def _page(
    doc: pymupdf.Document, number: int, ftype: FileType, params: PdfText.Params, path: str
) -> dict[str, Any]:
    import pymupdf

    try:
        page = doc.load_page(number - 1)
        if ftype.is_pdf and _page_object_missing(doc, number):
            message = f"damaged PDF: page {number} cannot be read, its object is missing from the file"
            if not has_eof_marker(path):
                message += f"; {TRUNCATED_NOTE}"
            raise CorruptDocument(message)
        rect = page.rect
        # ligatures expanded (ﬁ -> fi), whitespace normalised, text off the page dropped,
        # glyphs without a Unicode mapping as U+FFFD (which usable_chars does not count)
        flags = pymupdf.TEXT_MEDIABOX_CLIP
        text = page.get_text("text", flags=flags).strip() if ftype.is_pdf else ""
    except ValueError:  # load_page: "page not in document"
        raise CorruptDocument(
            f"damaged {ftype.label}: page {number} is missing "
            "(its page tree counts more pages than it holds)"
        ) from None
    except pymupdf.mupdf.FzErrorBase as exc:
        failure = _mupdf_failure(exc, f"damaged {ftype.label}, page {number}", ftype, path)
        if failure is None:
            raise
        raise failure from exc
    return {
        "number": number,
        "text": text,
        "needs_ocr": not ftype.is_pdf or usable_chars(text) < params.min_chars,
        "width": round(float(rect.width), 2),
        "height": round(float(rect.height), 2),
    }


def _page_object_missing(doc: pymupdf.Document, number: int) -> bool:
    """Whether page ``number``'s object is absent from the file, though its page tree names
    it: MuPDF then makes up a blank page (with a default size) instead of failing. A file
    cut short loses its later objects this way."""
    xref = doc.page_xref(number - 1)
    return not 0 < xref < doc.xref_length() or doc.xref_object(xref, compressed=True) == "null"


def _metadata(doc: pymupdf.Document, ftype: FileType) -> dict[str, str]:
    raw = doc.metadata or {}
    meta = {ours: str(raw.get(theirs) or "") for theirs, ours in _METADATA_KEYS.items()}
    meta["creation_date"] = iso_date(meta["creation_date"])
    meta["mod_date"] = iso_date(meta["mod_date"])
    if not ftype.is_pdf:
        meta["format"] = ftype.label
    return meta
