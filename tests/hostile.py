"""A hostile-input corpus, built at test time (no committed binaries), with the verdict each
file must get through ``flows/idp.json``: used by tests/test_hostile.py and by
benchmarks/hostile_corpus.py (which times each case alone and reports its peak memory).

Every case is one input of ONE batch, beside good documents: each must get exactly one row,
a clear typed error or a success, and nothing may hang or take the machine.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pikepdf
import pymupdf

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
#: the password the batch is given (samples/encrypted.pdf's user password)
PASSWORD = "docpipe"


@dataclass(frozen=True)
class Case:
    name: bytes  # a file name is bytes: some are not UTF-8
    build: Callable[[Path], None]
    #: the verdicts allowed: "succeeded" or the error kind of a failure
    verdicts: frozenset[str]
    what: str


def _copy(sample: str) -> Callable[[Path], None]:
    return lambda path: shutil.copyfile(SAMPLES / sample, path)


def _bytes(data: Callable[[], bytes]) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data())


def _invoice() -> bytes:
    return (SAMPLES / "invoice.pdf").read_bytes()


def _huge_page(path: Path) -> None:
    """A 20000 x 20000 point page with no text: rendered for OCR it would be 83333 px a side."""
    with pymupdf.open() as doc:
        doc.new_page(width=20000, height=20000)
        doc.save(path)


def _cyclic(path: Path) -> None:
    """The invoice with a page-tree node whose /Kids points back at the root (qpdf refuses)."""
    with pikepdf.open(SAMPLES / "invoice.pdf") as pdf:
        root = pdf.Root.Pages
        back = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Pages, Parent=root,
                                                    Kids=pikepdf.Array([root]), Count=0))
        root.Kids.append(back)
        pdf.save(path)


def _encrypted(user: str, owner: str) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        with pikepdf.open(SAMPLES / "encrypted.pdf", password=PASSWORD) as pdf:
            pdf.save(path, encryption=pikepdf.Encryption(user=user, owner=owner))
    return build


def _blank_pages(path: Path, pages: int = 40) -> None:
    with pymupdf.open() as doc:
        for _ in range(pages):
            doc.new_page()
        doc.save(path)


def _symlink_loop(path: Path) -> None:
    path.symlink_to(path)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def bomb_png(path: Path, side: int = 26000) -> None:
    """A ``side`` x ``side`` white greyscale PNG: 26000 px is ~1 MB on disk, 676 MB decoded.
    One block of rows is compressed once and repeated (deflate blocks after a full flush)."""
    row = b"\x00" + b"\xff" * side
    rows = 100
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(row * rows) + deflate.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(side, rows)
    end = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = end.compress(row * rest) + end.flush(zlib.Z_FINISH)
    adler = 1
    for _ in range(whole):
        adler = zlib.adler32(row * rows, adler)
    adler = zlib.adler32(row * rest, adler)
    idat = b"\x78\xda" + block * whole + last + struct.pack(">I", adler)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))


OK = frozenset({"succeeded"})

CASES: list[Case] = [
    # good documents, some under awkward names
    Case(b"invoice with spaces.pdf", _copy("invoice.pdf"), OK, "a good PDF, spaces in its name"),
    Case(b"-leading-dash.pdf", _copy("security_policy.pdf"), OK, "a name that looks like an option"),
    Case(b"new\nline.pdf", _copy("lettre_fr.pdf"), OK, "a newline in the name"),
    Case(b"not-utf8-\xff\xfe.pdf", _copy("report_de.pdf"), OK, "a name that is not UTF-8"),
    Case(b"scanned.pdf", _copy("scanned.pdf"), OK, "a scan: the OCR route"),
    Case(b"minutes.md", _bytes(lambda: b"# Minutes\n\nThe board approved the budget for 2027. "
                                        b"Next meeting: 12 March.\n"), OK,
         "a Markdown file (text files are documents)"),
    Case(b"encrypted.pdf", _copy("encrypted.pdf"), OK, "encrypted, the batch has its password"),
    Case(b"owner-password-only.pdf", _encrypted("", "owner-only-7"), OK,
         "encrypted with no user password (permissions only)"),
    # padding and repairs are normal
    Case(b"garbage-after-eof.pdf", _bytes(lambda: _invoice() + b"\n<html>junk</html>\n" * 200), OK,
         "text after %%EOF"),
    Case(b"nul-padding.pdf", _bytes(lambda: _invoice() + b"\0" * 65536), OK, "64 KiB of NULs after %%EOF"),
    Case(b"png-named.pdf", _copy("scan.png"), OK, "a PNG named .pdf (read by its content)"),
    Case(b"cyclic-page-tree.pdf", _cyclic, OK, "a loop in the page tree (PyMuPDF reads it)"),
    Case(b"blank-40-pages.pdf", _blank_pages, OK, "40 blank pages (skipped before Tesseract)"),
    Case(b"huge-page.pdf", _huge_page, frozenset({"succeeded", "unsupported"}),
         "one 20000 x 20000 pt page"),
    # what must fail, each with its own kind
    Case(b"empty.pdf", _bytes(lambda: b""), frozenset({"corrupt"}), "0 bytes"),
    Case(b"truncated.pdf", _bytes(lambda: _invoice()[: len(_invoice()) // 2]), frozenset({"corrupt"}),
         "cut in half"),
    Case(b"random.pdf", _bytes(lambda: random.Random(13).randbytes(50_000)), frozenset({"unsupported"}),
         "random bytes"),
    Case(b"word.docx.pdf", _bytes(lambda: b"PK\x03\x04" + bytes(2000)), frozenset({"unsupported"}),
         "a ZIP (DOCX) named .pdf"),
    Case(b"wrong-password.pdf", _encrypted("another-pw-9", "another-owner-9"),
         frozenset({"wrong_password"}), "encrypted, none of the batch's passwords opens it"),
    Case(b"bomb.png", bomb_png, frozenset({"unsupported"}), "a 26000 x 26000 PNG (decompression bomb)"),
    Case(b"symlink-loop.pdf", _symlink_loop, frozenset({"document_error"}), "a link to itself"),
    Case(b"fifo.pdf", _fifo, frozenset({"unsupported"}), "a named pipe (would block its reader)"),
]


def build(folder: Path, cases: list[Case] = CASES) -> dict[str, Case]:
    """Make every case in ``folder``; return the cases by the path the batch names them with
    (as ``docpipe run`` shows and records it: undecodable bytes as ``\\xff``)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Case] = {}
    for case in cases:
        path = Path(os.fsdecode(os.path.join(os.fsencode(folder), case.name)))
        case.build(path)
        shown = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        out[shown] = case
    return out


def paths(folder: Path, cases: list[Case] = CASES) -> list[str]:
    """The cases' paths as arguments for ``docpipe run`` (``os.fsdecode`` of the bytes)."""
    return [os.fsdecode(os.path.join(os.fsencode(folder), c.name)) for c in cases]
