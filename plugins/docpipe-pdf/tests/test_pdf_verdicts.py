"""Odd but whole PDFs and truly damaged ones, built on the spot, through ``pdf.decrypt`` and
``pdf.text``, alone and in a flow: ``corrupt`` comes from the PDF libraries failing to open a
file or read a page, never from its bytes alone.

Each builder's library facts (what qpdf and PyMuPDF make of the file) are asserted too, so a
test that passes says the file really is what its name claims."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pikepdf
import pymupdf
import pytest
from docpipe_pdf.decrypt import PASSWORD_ENV, PdfDecrypt
from docpipe_pdf.sniff import EOF_WINDOW, has_eof_marker
from docpipe_pdf.text import PdfText

from docpipe.blocks import Result
from docpipe.errors import (
    CorruptDocument,
    EncryptedDocument,
    PasswordRequired,
    WrongPassword,
    error_kind,
)
from docpipe.testing import run_flow

SAMPLES = Path(__file__).resolve().parents[3] / "samples"
INVOICE = SAMPLES / "invoice.pdf"  # 2 pages, "INV-2024-0042" on the first
ENCRYPTED = SAMPLES / "encrypted.pdf"  # user password "docpipe" (docs/samples.md)
PASSWORD = "docpipe"
MEMO = "Fabrikam Components"  # only the decrypted memo holds it
TRUNCATED = "; it is probably truncated (no %%EOF marker at its end: an incomplete download or copy?)"


@pytest.fixture(autouse=True)
def _no_password_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


@pytest.fixture(scope="module")
def reader() -> PdfText:
    block = PdfText()
    block.setup(PdfText.Params())
    return block


def decrypt(path: Path, run_dir: Path, **params: Any) -> Result:
    """``pdf.decrypt`` on one file, its copy (if any) going into ``run_dir`` as the engine's
    ``work_dir`` input would have it."""
    run_dir.mkdir(mode=0o700, exist_ok=True)
    block = PdfDecrypt()
    block.setup(PdfDecrypt.Params(**params))
    try:
        (result,) = block.run([{"path": str(path), "work_dir": str(run_dir)}], PdfDecrypt.Params(**params))
    finally:
        block.teardown()
    return result


def read_text(reader: PdfText, path: str | Path) -> Result:
    (result,) = reader.run([{"path": str(path)}], PdfText.Params())
    return result


def qpdf_opens(path: Path, password: str = "") -> list[str]:
    """qpdf's warnings on opening ``path`` (it raises when it cannot)."""
    with pikepdf.open(path, password=password) as pdf:
        assert len(pdf.pages) >= 1
        return pdf.get_warnings()


def mupdf_reads(path: Path, password: str | None = None) -> tuple[bool, str]:
    """Whether PyMuPDF had to repair ``path``, and the text of all its pages."""
    with pymupdf.open(path) as doc:
        assert bool(doc.needs_pass) is (password is not None)
        if password is not None:
            assert doc.authenticate(password)
        return doc.is_repaired, "".join(page.get_text() for page in doc)


# --- the files ----------------------------------------------------------------------------


def looped(target: Path, source: Path = INVOICE, encryption: pikepdf.Encryption | None = None) -> Path:
    """``source`` with a second node in its page tree whose /Kids points back at the root:
    a loop. The root's /Count stays right, so PyMuPDF reads the real pages; qpdf refuses."""
    with pikepdf.open(source) as pdf:
        root = pdf.Root.Pages
        back = pdf.make_indirect(
            pikepdf.Dictionary(Type=pikepdf.Name.Pages, Parent=root, Kids=pikepdf.Array([root]), Count=0)
        )
        root.Kids.append(back)
        pdf.save(target, encryption=encryption or False)
    return target


def padded(target: Path, padding: bytes, source: Path = INVOICE) -> Path:
    """``source`` with ``padding`` after its ``%%EOF``."""
    target.write_bytes(source.read_bytes() + padding)
    return target


def without_eof(target: Path) -> Path:
    """The invoice cut before its last ``startxref``: no pointer to the xref, no ``%%EOF``."""
    data = INVOICE.read_bytes()
    target.write_bytes(data[: data.rindex(b"startxref")])
    return target


def updated(target: Path, source: Path = INVOICE, password: str | None = None) -> Path:
    """``source`` with an incremental update appended: a second xref section and trailer."""
    shutil.copy(source, target)
    with pymupdf.open(target) as doc:
        if password is not None:
            assert doc.authenticate(password)
        doc[0].insert_text((72, 700), "Appended later", fontsize=8)
        doc.saveIncr()
    data = target.read_bytes()
    assert data.count(b"%%EOF") == 2 and data.count(b"startxref") == 2
    return target


GARBAGE = b"Downloaded from the Example Corp document portal on 2024-05-01 by j.doe\r\n" * 60

#: name -> (builder, text on the first page, page count); all of them whole
WHOLE: dict[str, tuple[Callable[[Path], Path], str, int]] = {
    "loop-in-page-tree": (looped, "INV-2024-0042", 2),
    "4-KiB-of-NUL-after-EOF": (lambda p: padded(p, b"\0" * 4096), "INV-2024-0042", 2),
    "64-KiB-of-NUL-after-EOF": (lambda p: padded(p, b"\0" * 65536), "INV-2024-0042", 2),
    "text-after-EOF": (lambda p: padded(p, GARBAGE), "INV-2024-0042", 2),
    "no-EOF-repaired": (without_eof, "INV-2024-0042", 2),
    "incremental-update": (updated, "Appended later", 2),
    "incremental-update-then-NUL": (
        lambda p: padded(p, b"\0" * 8192, updated(p.with_name("u.pdf"))), "Appended later", 2),
}


@pytest.mark.parametrize("name", WHOLE)
def test_whole_pdfs_pass_decrypt_and_read(name: str, reader: PdfText, tmp_path: Path) -> None:
    build, marker, pages = WHOLE[name]
    path = build(tmp_path / f"{name}.pdf")
    # what the libraries make of it
    repaired, text = mupdf_reads(path)
    assert marker in text
    if name == "loop-in-page-tree":
        with pytest.raises(pikepdf.PdfError, match="Loop detected in /Pages structure"):
            pikepdf.open(path)
    else:
        warnings = qpdf_opens(path)
        assert bool(warnings) == repaired  # qpdf had to repair what PyMuPDF had to
    if "EOF" in name:
        assert repaired and b"%%EOF" not in path.read_bytes()[-1024:]  # what used to fail it
    # the verdicts
    r = decrypt(path, tmp_path / "run")
    assert r == {"pdf_path": str(path), "encrypted": False}
    out = read_text(reader, path)
    assert isinstance(out, dict), out
    assert out["page_count"] == pages and marker in out["text"]
    assert out["needs_ocr_pages"] == []


def test_encrypted_pdf_with_padding_is_decrypted(reader: PdfText, tmp_path: Path) -> None:
    path = padded(tmp_path / "memo.pdf", b"\0" * 65536, ENCRYPTED)
    assert qpdf_opens(path, PASSWORD)  # repaired
    assert mupdf_reads(path, PASSWORD)[0]
    r = decrypt(path, tmp_path / "run", password=PASSWORD)
    assert isinstance(r, dict) and r["encrypted"] is True and r["pdf_path"] != str(path)
    out = read_text(reader, r["pdf_path"])
    assert isinstance(out, dict) and MEMO in out["text"]


def test_encrypted_pdf_with_an_incremental_update_is_decrypted(reader: PdfText, tmp_path: Path) -> None:
    path = padded(tmp_path / "memo.pdf", GARBAGE, updated(tmp_path / "u.pdf", ENCRYPTED, PASSWORD))
    # qpdf rebuilding this file opens it with any password, without a key; writing it fails
    with pikepdf.open(path, password="") as pdf:
        assert pdf.is_encrypted and pdf.encryption.encryption_key == b""
        with pytest.raises(pikepdf.QpdfRuntimeError, match="unsupported key length"):
            pdf.save(tmp_path / "copy.pdf", encryption=False)
    none = decrypt(path, tmp_path / "run")
    assert isinstance(none, PasswordRequired), none
    wrong = decrypt(path, tmp_path / "run", password="nope")
    assert isinstance(wrong, WrongPassword), wrong
    r = decrypt(path, tmp_path / "run", password=PASSWORD)
    assert isinstance(r, dict) and r["encrypted"] is True
    out = read_text(reader, r["pdf_path"])
    assert isinstance(out, dict) and MEMO in out["text"] and "Appended later" in out["text"]


# --- encrypted, and qpdf cannot open it ---------------------------------------------------


def test_encrypted_loop(tmp_path: Path) -> None:
    path = looped(tmp_path / "loop.pdf", encryption=pikepdf.Encryption(user="pw-7", owner="own-7", R=6))
    with pytest.raises(pikepdf.PasswordError):  # without the password qpdf stops there
        pikepdf.open(path)
    with pytest.raises(pikepdf.PdfError, match="Loop detected"):  # with it, at the loop
        pikepdf.open(path, password="pw-7")
    assert "INV-2024-0042" in mupdf_reads(path, "pw-7")[1]

    none = decrypt(path, tmp_path / "run")
    assert isinstance(none, PasswordRequired) and error_kind(none) == "password_required"
    wrong = decrypt(path, tmp_path / "run", password="nope")
    assert isinstance(wrong, WrongPassword) and str(wrong) == "encrypted, no password matched (tried 1)"
    # decided: no copy written by another library; a typed failure that says what to do
    right = decrypt(path, tmp_path / "run", password="pw-7")
    assert type(right) is EncryptedDocument and error_kind(right) == "encrypted"
    assert str(right).startswith("encrypted, and a password given opens it, but qpdf cannot read the file")
    assert "Loop detected in /Pages structure" in str(right) and "mutool clean -D" in str(right)
    assert "pw-7" not in str(right) and list((tmp_path / "run").iterdir()) == []


def test_loop_with_an_owner_password_only_passes_through(reader: PdfText, tmp_path: Path) -> None:
    path = looped(tmp_path / "loop.pdf", encryption=pikepdf.Encryption(user="", owner="own-7", R=6))
    with pytest.raises(pikepdf.PdfError, match="Loop detected"):
        pikepdf.open(path)
    r = decrypt(path, tmp_path / "run")
    assert r == {"pdf_path": str(path), "encrypted": False}
    out = read_text(reader, path)
    assert isinstance(out, dict) and "INV-2024-0042" in out["text"]
    assert out["metadata"]["encryption"].startswith("Standard")


# --- truly damaged ------------------------------------------------------------------------


RANDOM = b"%PDF-1.7\n" + bytes(range(256)) * 20


@pytest.mark.parametrize(
    ("tail", "truncated"),
    [(b"\n%%EOF\n", False), (b"", True), (b"\n%%EOF\n" + b"\0" * 65536, False), (b"\0" * 65536, True)],
    ids=["eof", "no-eof", "eof-then-NUL", "NUL-only"],
)
def test_random_bytes_after_a_header_are_corrupt(
    reader: PdfText, tmp_path: Path, tail: bytes, truncated: bool
) -> None:
    path = tmp_path / "random.pdf"
    path.write_bytes(RANDOM + tail)
    with pytest.raises(pikepdf.PdfError):
        pikepdf.open(path)
    with pytest.raises(pymupdf.FileDataError):
        pymupdf.open(path)
    r = decrypt(path, tmp_path / "run")
    assert isinstance(r, CorruptDocument), r
    assert str(r).startswith("damaged PDF, it cannot be opened: ")
    assert str(r).endswith(TRUNCATED) is truncated
    out = read_text(reader, path)
    assert isinstance(out, CorruptDocument)
    assert str(out).startswith("damaged PDF, it cannot be opened")
    assert str(out).endswith(TRUNCATED) is truncated


@pytest.mark.parametrize("padding", [b"", b"\0" * 65536], ids=["cut", "cut-then-NUL"])
def test_a_pdf_cut_in_half_is_corrupt(reader: PdfText, tmp_path: Path, padding: bytes) -> None:
    data = INVOICE.read_bytes()
    path = tmp_path / "half.pdf"
    path.write_bytes(data[: len(data) // 2] + padding)
    with pytest.raises(pikepdf.PdfError, match="unable to find any pages"):
        pikepdf.open(path)
    with pymupdf.open(path) as doc:  # opens, and makes up blank pages for the lost ones
        assert doc.is_repaired and doc.page_count == 2 and doc[0].get_text() == ""
    r = decrypt(path, tmp_path / "run")
    assert r == {"pdf_path": str(path), "encrypted": False}  # PyMuPDF opens it: pdf.text judges
    out = read_text(reader, path)
    assert isinstance(out, CorruptDocument)
    assert str(out) == (
        "damaged PDF: page 1 cannot be read, its object is missing from the file" + TRUNCATED
    )


def test_an_encrypted_pdf_cut_in_half_is_corrupt(reader: PdfText, tmp_path: Path) -> None:
    # its /Encrypt was in the trailer, cut off with the rest
    data = ENCRYPTED.read_bytes()
    path = tmp_path / "half.pdf"
    path.write_bytes(data[: len(data) // 2])
    r = decrypt(path, tmp_path / "run", password=PASSWORD)
    assert r == {"pdf_path": str(path), "encrypted": False}
    out = read_text(reader, path)
    assert isinstance(out, CorruptDocument) and "page 1 cannot be read" in str(out)


# --- the %%EOF search ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"%PDF-1.7\n...\n%%EOF\n", True),
        (b"%PDF-1.7\n...\n%%EOF", True),
        (b"%PDF-1.7\n...\n%%EOF\r\n" + b"\0" * (3 << 16) + b" \r\n\t", True),
        (b"%PDF-1.7\n...\n%%EOF\n" + GARBAGE, True),
        (b"%PDF-1.7\n...\n%%EOF\n" + b"x" * EOF_WINDOW, False),  # more text than it looks past
        (b"%PDF-1.7\n...\n", False),
        (b"%PDF-1.7\n..." + b"\0" * 100_000, False),
        (b"", False),
    ],
    ids=["eof", "eof-no-newline", "NUL-and-whitespace", "text", "too-much-text", "none", "NUL-only", "empty"],
)
def test_has_eof_marker(tmp_path: Path, content: bytes, expected: bool) -> None:
    path = tmp_path / "f.pdf"
    path.write_bytes(content)
    assert has_eof_marker(str(path)) is expected


# --- in a flow ----------------------------------------------------------------------------


@pytest.mark.slow
def test_flow_verdicts(tmp_path: Path) -> None:
    docs = [build(tmp_path / f"{name}.pdf") for name, (build, _, _) in WHOLE.items()]
    docs.append(padded(tmp_path / "memo.pdf", b"\0" * 65536, ENCRYPTED))
    half = tmp_path / "half.pdf"
    half.write_bytes(INVOICE.read_bytes()[: INVOICE.stat().st_size // 2])
    random = tmp_path / "random.pdf"
    random.write_bytes(RANDOM)
    docs += [half, random]
    flow = {
        "name": "decrypt-then-text", "version": "1",
        "params": {"pdf_password": None},
        "outputs": ["encrypted", "page_count"],
        "steps": [
            {"id": "decrypt", "block": "pdf.decrypt", "params": {"password": "${params.pdf_password}"}},
            {"id": "text", "block": "pdf.text", "inputs": {"path": "pdf_path"}},
        ],
    }
    result = run_flow(flow, docs, params={"pdf_password": PASSWORD}, workers=1, work_dir=tmp_path / "work")
    by_name = {Path(r.document).name: r for r in result.results}
    for name, (_, _, pages) in WHOLE.items():
        run = by_name[f"{name}.pdf"]
        assert (run.status, run.outputs["page_count"]) == ("succeeded", pages), (name, run.error)
    assert by_name["memo.pdf"].outputs == {"encrypted": True, "page_count": 1}
    verdicts = {n: (by_name[n].status, by_name[n].error_kind, by_name[n].step) for n in ("half.pdf", "random.pdf")}
    assert verdicts == {"half.pdf": ("failed", "corrupt", "text"), "random.pdf": ("failed", "corrupt", "decrypt")}


@pytest.mark.slow
def test_the_idp_flow_with_a_passwords_file(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords.txt"
    passwords.write_text("# the team's list\nnot-this-one\ndocpipe\n", encoding="utf-8")
    other = tmp_path / "other.pdf"
    with pikepdf.open(ENCRYPTED, password=PASSWORD) as pdf:
        pdf.save(other, encryption=pikepdf.Encryption(user="not-in-the-list", owner="o-9", R=6))
    half = tmp_path / "half.pdf"
    half.write_bytes(INVOICE.read_bytes()[: INVOICE.stat().st_size // 2])
    docs = [looped(tmp_path / "loop.pdf"), padded(tmp_path / "nul.pdf", b"\0" * 65536),
            without_eof(tmp_path / "no-eof.pdf"), padded(tmp_path / "memo.pdf", b"\0" * 65536, ENCRYPTED),
            other, half]
    flow = Path(__file__).resolve().parents[3] / "flows" / "idp.json"
    result = run_flow(flow, docs, params={"pdf_passwords_file": str(passwords)}, workers=1,
                      work_dir=tmp_path / "work")
    by_name = {Path(r.document).name: r for r in result.results}
    for name in ("loop.pdf", "nul.pdf", "no-eof.pdf"):
        run = by_name[name]
        assert (run.status, run.outputs["page_count"], run.outputs["doc_class"]) == ("succeeded", 2, "invoice")
    memo = by_name["memo.pdf"]
    assert memo.status == "succeeded" and memo.outputs["encrypted"] is True
    assert (by_name["other.pdf"].error_kind, by_name["other.pdf"].error) == (
        "wrong_password", "encrypted, no password matched (tried 2)")
    assert (by_name["half.pdf"].error_kind, by_name["half.pdf"].step) == ("corrupt", "text")
