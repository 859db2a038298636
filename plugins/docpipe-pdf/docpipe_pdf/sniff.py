"""What kind of file is this? Decided by its first bytes, never by its name."""

from __future__ import annotations

import os
from dataclasses import dataclass

from docpipe.errors import DocumentError

#: how many leading bytes :func:`sniff` and :func:`describe` need
HEAD_SIZE = 1024
#: how far before the end of a file, past its trailing padding, :func:`has_eof_marker` looks
EOF_WINDOW = 1 << 20
#: why a PDF the libraries cannot read may be damaged, when :func:`has_eof_marker` is false
TRUNCATED_NOTE = "it is probably truncated (no %%EOF marker at its end: an incomplete download or copy?)"


@dataclass(frozen=True)
class FileType:
    """A document type ``pdf.text`` reads."""

    label: str  # "PDF", "PNG", ...
    mime: str
    mupdf: str  # the ``filetype`` argument of ``pymupdf.open``

    @property
    def is_pdf(self) -> bool:
        return self.mupdf == "pdf"


PDF = FileType("PDF", "application/pdf", "pdf")
PNG = FileType("PNG", "image/png", "png")
JPEG = FileType("JPEG", "image/jpeg", "jpeg")
TIFF = FileType("TIFF", "image/tiff", "tiff")


def sniff(head: bytes) -> FileType | None:
    """The type of a file from its first :data:`HEAD_SIZE` bytes; ``None`` when unknown."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return TIFF
    # the PDF header may follow some junk; readers look for it in the first 1024 bytes
    if b"%PDF-" in head[:HEAD_SIZE]:
        return PDF
    return None


def read_head(path: str) -> tuple[bytes, os.stat_result]:
    """The first :data:`HEAD_SIZE` bytes of a file and its stat, without reading the rest;
    raises :class:`DocumentError` when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(HEAD_SIZE), os.fstat(f.fileno())
    except IsADirectoryError:
        raise DocumentError("cannot read the file: it is a folder") from None
    except OSError as exc:
        raise DocumentError(f"cannot read the file: {exc.strerror or exc}") from None


def has_eof_marker(path: str) -> bool:
    """Whether the end of a file holds a PDF's ``%%EOF`` marker.

    Trailing padding (NUL bytes, whitespace: some generators and download tools add
    kilobytes of it) is skipped however long it is, and the marker is looked for in the
    :data:`EOF_WINDOW` bytes before it (other text after the marker is common too). Only
    ever a reason given for a PDF the libraries cannot open or read: the PDF readers
    accept a file without the marker, so its absence is never a verdict by itself.
    """
    try:
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            while end > 0:  # back over the padding, a chunk at a time
                start = max(0, end - _CHUNK)
                f.seek(start)
                kept = len(f.read(end - start).rstrip(_PADDING))
                if kept:
                    end = start + kept
                    break
                end = start
            f.seek(max(0, end - EOF_WINDOW))
            return b"%%EOF" in f.read(end - max(0, end - EOF_WINDOW))
    except OSError:
        return True  # cannot tell: claim nothing


_CHUNK = 1 << 16
_PADDING = b"\x00\t\n\x0c\r "


# formats people hand to a PDF pipeline by mistake, named in the error message
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive (DOCX, XLSX, ODT, EPUB or plain ZIP)"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "an OLE2 file (legacy DOC, XLS or PPT, or an MSG e-mail)",
    ),
    (b"{\\rtf", "an RTF document"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image"),
    (b"II+\x00", "a BigTIFF image"),
    (b"MM\x00+", "a BigTIFF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"%!PS", "a PostScript file"),
)


def describe(head: bytes) -> str:
    """What an unsupported file looks like, for the error message."""
    for magic, what in _OTHER_MAGIC:
        if head.startswith(magic):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    text = _as_text(head)
    if text is not None:
        start = text.lstrip().lower()
        if start.startswith(("<!doctype html", "<html")):
            return "an HTML page"
        if start.startswith("<?xml") or start.startswith("<"):
            return "an XML or HTML file"
        return "plain text"
    return f"an unknown binary format (starts with {head[:8].hex(' ')})"


def _as_text(head: bytes) -> str | None:
    """``head`` decoded as UTF-8 text, or ``None`` when it is binary."""
    # a multi-byte character cut off at the end of the head is still text
    for cut in range(4):
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if all(c.isprintable() or c.isspace() for c in text.removeprefix("\ufeff")):  # a BOM is text
            return text
        return None
    return None
