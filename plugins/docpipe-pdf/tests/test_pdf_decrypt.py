"""``pdf.decrypt`` over the committed samples and over PDFs made on the spot, then ``pdf.text``
on what it hands on, alone and in a whole flow."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docpipe_pdf
import pikepdf
import pymupdf
import pytest
from docpipe_pdf.decrypt import PASSWORD_ENV, PdfDecrypt, read_passwords_file
from docpipe_pdf.text import PdfText
from pydantic import ValidationError

from docpipe.blocks import Artifact, Result
from docpipe.errors import (
    BlockFailed,
    CorruptDocument,
    DocumentError,
    EncryptedDocument,
    PasswordRequired,
    WrongPassword,
    error_kind,
)
from docpipe.plugins import Registry
from docpipe.store import Store
from docpipe.testing import BlockContract, run_flow

SAMPLES = Path(__file__).resolve().parents[3] / "samples"
ENCRYPTED = SAMPLES / "encrypted.pdf"
PASSWORD = "docpipe"  # the user password of samples/encrypted.pdf (docs/samples.md)
OWNER_PASSWORD = "docpipe-owner"
#: memo text that only the decrypted samples/encrypted.pdf yields
MEMO = "Fabrikam Components"
WRITES = set(PdfDecrypt.manifest.writes)

Make = Callable[..., PdfDecrypt]


@pytest.fixture(autouse=True)
def _no_password_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


#: the run folder (the engine's ``work_dir`` input) each block made by ``make`` decrypts into
RUN_DIRS: weakref.WeakKeyDictionary[PdfDecrypt, Path] = weakref.WeakKeyDictionary()


@pytest.fixture
def make(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Make]:
    """Set up blocks with the given params, each with a run folder as the engine would give
    it; every one is torn down after the test."""
    blocks: list[PdfDecrypt] = []

    def make(**params: Any) -> PdfDecrypt:
        block = PdfDecrypt()
        block.setup(PdfDecrypt.Params(**params))
        run_dir = tmp_path_factory.mktemp("run")
        run_dir.chmod(0o700)
        RUN_DIRS[block] = run_dir
        blocks.append(block)
        return block

    yield make
    for block in blocks:
        block.teardown()


@pytest.fixture(scope="module")
def reader() -> PdfText:
    block = PdfText()
    block.setup(PdfText.Params())
    return block


def decrypt(block: PdfDecrypt, path: Path | str) -> Result:
    (result,) = block.run([{"path": str(path), "work_dir": str(RUN_DIRS[block])}], PdfDecrypt.Params())
    return result


def ok(result: Result) -> dict[str, Any]:
    assert isinstance(result, dict), f"expected a result, got {result!r}"
    assert set(result) == WRITES
    return result


def read_text(reader: PdfText, path: str) -> Result:
    (result,) = reader.run([{"path": path}], PdfText.Params())
    return result


def leaks(password: str, *things: object) -> list[str]:
    """Every rendering of ``things`` (str, repr, args, notes, JSON) that holds ``password``."""
    found = []
    for thing in things:
        renderings = [str(thing), repr(thing)]
        if isinstance(thing, BaseException):
            renderings += [repr(thing.args), "".join(getattr(thing, "__notes__", []))]
        else:
            renderings.append(json.dumps(thing, default=str))
        found += [r for r in renderings if password in r]
    return found


def encrypt(source: Path, target: Path, *, user: str, owner: str) -> Path:
    with pikepdf.open(source) as pdf:
        pdf.save(target, encryption=pikepdf.Encryption(user=user, owner=owner, R=6))
    return target


def memo(tmp_path: Path, password: str, name: str = "memo.pdf") -> Path:
    """samples/encrypted.pdf's memo, encrypted again with ``password``."""
    plain = tmp_path / f"plain-{name}"
    with pikepdf.open(ENCRYPTED, password=PASSWORD) as pdf:
        pdf.save(plain, encryption=False)
    return encrypt(plain, tmp_path / name, user=password, owner=password + "-owner")


# --- the contract ------------------------------------------------------------------------


class TestDecryptContract(BlockContract):
    block = PdfDecrypt
    params = {"password": PASSWORD}
    inputs = [{"path": str(SAMPLES / n)} for n in ("encrypted.pdf", "invoice.pdf", "scan.png", "corrupt.pdf")]


def test_manifest_and_registration() -> None:
    m = PdfDecrypt.manifest
    assert m.problems() == []
    assert (m.name, m.runtime) == ("pdf.decrypt", "process")
    assert m.reads == {"path": str, "work_dir": str}
    assert m.writes == {"pdf_path": Artifact, "encrypted": bool}
    registry = Registry(entry_points=False, extra=[docpipe_pdf])
    assert registry.broken == []
    assert registry.get("pdf.decrypt").cls is PdfDecrypt


def test_the_password_param_is_secret(tmp_path: Path) -> None:
    params = PdfDecrypt.Params(password="hunter2-secret")
    for shown in (repr(params), str(params), params.model_dump_json(), json.dumps(params.model_dump(mode="json"))):
        assert "hunter2-secret" not in shown
    assert params.password is not None and params.password.get_secret_value() == "hunter2-secret"
    schema = PdfDecrypt.params_schema()
    assert set(schema["properties"]) == {"password", "passwords_file", "password_env"}
    assert PdfDecrypt.Params().password_env == "DOCPIPE_PDF_PASSWORD"


def test_params_are_checked_before_any_document(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="is not a file"):
        PdfDecrypt.Params(passwords_file=str(tmp_path / "missing.txt"))
    with pytest.raises(ValidationError):
        PdfDecrypt.Params(pasword="x")  # type: ignore[call-arg]


def test_plugin_import_does_not_import_pikepdf() -> None:
    code = "import sys, docpipe_pdf; print('pikepdf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- decrypting --------------------------------------------------------------------------


@pytest.mark.parametrize("given_as", ["param", "file", "env"])
def test_the_right_password_decrypts(
    make: Make, reader: PdfText, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_as: str
) -> None:
    params: dict[str, Any] = {}
    if given_as == "param":
        params["password"] = PASSWORD
    elif given_as == "file":
        (tmp_path / "passwords.txt").write_text(PASSWORD + "\n")
        params["passwords_file"] = str(tmp_path / "passwords.txt")
    else:
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    block = make(**params)
    r = ok(decrypt(block, ENCRYPTED))
    assert r["encrypted"] is True
    copy = Path(r["pdf_path"])
    assert copy.parent == RUN_DIRS[block] and copy.suffix == ".pdf"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
    assert list(copy.parent.iterdir()) == [copy]  # no temporary file left behind
    text = read_text(reader, str(copy))
    assert isinstance(text, dict), text
    assert MEMO in text["text"] and text["page_count"] == 1
    assert text["metadata"]["encryption"] == ""
    assert text["metadata"]["title"] == "Confidential memo"


def test_a_variable_named_by_password_env(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PDF_PW", PASSWORD)
    assert ok(decrypt(make(password_env="MY_PDF_PW"), ENCRYPTED))["encrypted"] is True
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    r = decrypt(make(password_env=None), ENCRYPTED)
    assert isinstance(r, PasswordRequired)
    assert str(r).endswith(", or name an environment variable in password_env")


def test_the_owner_password_opens_it_too(make: Make, reader: PdfText) -> None:
    r = ok(decrypt(make(password=OWNER_PASSWORD), ENCRYPTED))
    text = read_text(reader, r["pdf_path"])
    assert isinstance(text, dict) and MEMO in text["text"]


def test_wrong_password(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong-from-env-77")
    r = decrypt(make(password="wrong-param-99"), ENCRYPTED)
    assert isinstance(r, WrongPassword) and isinstance(r, EncryptedDocument)
    assert str(r) == "encrypted, no password matched (tried 2)"
    assert error_kind(r) == "wrong_password"
    assert r.__traceback__ is None and r.__context__ is None
    assert leaks("wrong-param-99", r) == [] and leaks("wrong-from-env-77", r) == []


def test_no_password(make: Make) -> None:
    r = decrypt(make(), ENCRYPTED)
    assert isinstance(r, PasswordRequired) and isinstance(r, EncryptedDocument)
    assert error_kind(r) == "password_required"  # a configuration gap, not the document's fault
    assert str(r) == (
        "encrypted, no password given: give the step a password or passwords_file "
        "param, or set the DOCPIPE_PDF_PASSWORD environment variable"
    )


def test_a_passwords_file_is_tried_line_by_line(make: Make, reader: PdfText, tmp_path: Path) -> None:
    passwords = tmp_path / "passwords.txt"
    passwords.write_text(
        "# passwords of the Q1 archive\n\nfirst-wrong\n   \n  # indented comment\nsecond wrong\n"
        f"{PASSWORD}\nnever-reached\n",
        encoding="utf-8",
    )
    assert read_passwords_file(str(passwords)) == ["first-wrong", "second wrong", PASSWORD, "never-reached"]
    r = ok(decrypt(make(passwords_file=str(passwords)), ENCRYPTED))
    text = read_text(reader, r["pdf_path"])
    assert isinstance(text, dict) and MEMO in text["text"]


def test_passwords_are_tried_once_each(make: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passwords = tmp_path / "passwords.txt"
    # CRLF line ends and a byte-order mark, as a Windows editor writes them; a repeated line
    passwords.write_bytes("\ufeffalpha\r\nbeta\r\nalpha\r\n".encode())
    monkeypatch.setenv(PASSWORD_ENV, "beta")
    r = decrypt(make(password="alpha", passwords_file=str(passwords)), ENCRYPTED)
    assert isinstance(r, WrongPassword)
    assert str(r) == "encrypted, no password matched (tried 2)"


def test_owner_password_only_needs_no_password(make: Make, reader: PdfText, tmp_path: Path) -> None:
    path = encrypt(SAMPLES / "invoice.pdf", tmp_path / "restricted.pdf", user="", owner="owner-only-secret")
    with pikepdf.open(path) as pdf:
        assert pdf.is_encrypted
    r = ok(decrypt(make(), path))
    assert r["encrypted"] is True and r["pdf_path"] != str(path)
    with pikepdf.open(r["pdf_path"]) as pdf:
        assert not pdf.is_encrypted
    text = read_text(reader, r["pdf_path"])
    assert isinstance(text, dict) and "INV-2024-0042" in text["text"] and text["page_count"] == 2


# --- what passes through -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["invoice.pdf", "scanned.pdf", "scan.png"])
def test_what_is_not_encrypted_passes_through(make: Make, name: str) -> None:
    block = make(password=PASSWORD)
    r = ok(decrypt(block, SAMPLES / name))
    assert r == {"pdf_path": str(SAMPLES / name), "encrypted": False}
    assert list(RUN_DIRS[block].iterdir()) == []


def test_a_pdf_named_otherwise_is_still_decrypted(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "memo.png"
    shutil.copy(ENCRYPTED, path)
    assert ok(decrypt(make(password=PASSWORD), path))["encrypted"] is True


def test_zero_bytes_pass_through_for_pdf_text_to_report(make: Make, reader: PdfText, tmp_path: Path) -> None:
    # decided: pdf.decrypt only acts on what it recognises as a PDF; pdf.text judges the rest,
    # so an empty file reads the same with or without a decrypt step
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    r = ok(decrypt(make(), path))
    assert r == {"pdf_path": str(path), "encrypted": False}
    text = read_text(reader, r["pdf_path"])
    assert isinstance(text, CorruptDocument) and str(text) == "empty file (0 bytes)"


def test_not_a_pdf_named_pdf_passes_through(make: Make, reader: PdfText, tmp_path: Path) -> None:
    path = tmp_path / "notes.pdf"
    path.write_text("Meeting notes, not a PDF at all.\n")
    r = ok(decrypt(make(), path))
    assert r == {"pdf_path": str(path), "encrypted": False}
    assert "not a PDF" in str(read_text(reader, r["pdf_path"]))


# --- bad input ---------------------------------------------------------------------------


def test_the_truncated_sample_is_handed_to_pdf_text(make: Make, reader: PdfText) -> None:
    # qpdf cannot open it; PyMuPDF can (it makes up blank pages for the lost ones), so
    # pdf.decrypt hands it on and pdf.text, which finds the page objects missing, judges it
    path = SAMPLES / "corrupt.pdf"
    with pytest.raises(pikepdf.PdfError, match="unable to find any pages"):
        pikepdf.open(path)
    with pymupdf.open(path) as doc:
        assert doc.is_repaired and doc.page_count == 2
    r = ok(decrypt(make(password=PASSWORD), path))
    assert r == {"pdf_path": str(path), "encrypted": False}
    text = read_text(reader, r["pdf_path"])
    assert isinstance(text, CorruptDocument)
    assert str(text).startswith("damaged PDF: page 1 cannot be read, its object is missing from the file")
    assert str(text).endswith("; it is probably truncated (no %%EOF marker at its end: an incomplete download "
                              "or copy?)")


def test_a_pdf_qpdf_cannot_open_is_corrupt(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "garbage.pdf"
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20 + b"\n%%EOF\n")
    r = decrypt(make(password=PASSWORD), path)
    assert isinstance(r, CorruptDocument)
    assert str(r).startswith("damaged PDF, it cannot be opened: ")
    assert str(path) not in str(r)  # the record names the document already


def test_an_encrypted_pdf_whose_last_update_is_cut_off_is_rebuilt(
    make: Make, reader: PdfText, tmp_path: Path
) -> None:
    # an incremental update keeps a first trailer (with /Encrypt) when the end is cut off;
    # qpdf rebuilds the file from its objects, the update's included: nothing fails to read
    path = tmp_path / "updated.pdf"
    shutil.copy(ENCRYPTED, path)
    with pymupdf.open(path) as doc:
        assert doc.authenticate(PASSWORD)
        doc[0].insert_text((72, 700), "Appended later", fontsize=8)
        doc.saveIncr()
    data = path.read_bytes()
    assert data.count(b"%%EOF") == 2
    path.write_bytes(data[:-60])
    with pikepdf.open(path, password=PASSWORD) as pdf:
        assert pdf.is_encrypted and any("reconstruct cross-reference" in w for w in pdf.get_warnings())
    r = ok(decrypt(make(password=PASSWORD), path))
    assert r["encrypted"] is True
    text = read_text(reader, r["pdf_path"])
    assert isinstance(text, dict) and MEMO in text["text"] and "Appended later" in text["text"]


def test_certificate_encryption_is_named(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "pubsec.pdf"
    # qpdf finds the moved objects again after the length change
    path.write_bytes(ENCRYPTED.read_bytes().replace(b"/Filter/Standard", b"/Filter/Adobe.PubSec"))
    assert b"/Filter/Adobe.PubSec" in path.read_bytes()
    r = decrypt(make(password=PASSWORD), path)
    assert isinstance(r, EncryptedDocument)
    assert "security handler other than the standard password one" in str(r)


def test_missing_file_folder_and_wrong_type(make: Make, tmp_path: Path) -> None:
    block = make()
    run_dir = str(RUN_DIRS[block])
    missing, folder, wrong, no_run_dir = block.run(
        [{"path": str(tmp_path / "nope.pdf"), "work_dir": run_dir},
         {"path": str(tmp_path), "work_dir": run_dir}, {"path": None, "work_dir": run_dir},
         {"path": str(ENCRYPTED), "work_dir": None}], PdfDecrypt.Params()
    )
    assert type(missing) is DocumentError and "No such file" in str(missing)
    assert type(folder) is DocumentError and "folder" in str(folder)
    assert isinstance(wrong, BlockFailed)
    assert isinstance(no_run_dir, BlockFailed) and "'work_dir' must be a string" in str(no_run_dir)


def test_an_unexpected_error_is_returned_without_the_password(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fault injection: a library that put the password in its message must not leak it
    def careless_open(path: str, password: str = "", **kwargs: Any) -> Any:
        if not password:
            raise pikepdf.PasswordError("invalid password")
        raise RuntimeError(f"cannot open {path} with password {password!r}")

    block = make(password="Sesame-Open-42")
    monkeypatch.setattr(pikepdf, "open", careless_open)
    r = decrypt(block, ENCRYPTED)
    assert isinstance(r, BlockFailed) and error_kind(r) == "block_error"
    assert "RuntimeError: cannot open" in str(r) and "***" in str(r)
    assert leaks("Sesame-Open-42", r) == []
    assert "in the worker:" in "".join(r.__notes__)


# --- the working folder -------------------------------------------------------------------


def test_a_rerun_reuses_the_copy_and_a_changed_source_gets_a_new_one(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "memo.pdf"
    shutil.copy(ENCRYPTED, path)
    block = make(password=PASSWORD)
    first = ok(decrypt(block, path))["pdf_path"]
    written = os.stat(first).st_mtime_ns
    assert ok(decrypt(block, path))["pdf_path"] == first
    assert os.stat(first).st_mtime_ns == written  # not written again
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1_000_000_000))
    assert ok(decrypt(block, path))["pdf_path"] != first


def test_a_copy_is_never_written_into_a_folder_that_is_gone(make: Make, tmp_path: Path) -> None:
    block = make(password=PASSWORD)
    RUN_DIRS[block].rmdir()  # the run ended (or was swept) while this call was on its way
    r = decrypt(block, ENCRYPTED)
    assert isinstance(r, DocumentError) and "work folder is gone" in str(r)
    assert not RUN_DIRS[block].exists()


# --- in a flow ----------------------------------------------------------------------------


def decrypt_flow() -> dict[str, Any]:
    step_params: dict[str, Any] = {"password": "${params.pdf_password}"}
    return {
        "name": "decrypt-then-text",
        "version": "1",
        "params": {"pdf_password": None},
        "outputs": ["encrypted", "page_count", "text"],
        "steps": [
            {"id": "decrypt", "block": "pdf.decrypt", "params": step_params},
            {"id": "text", "block": "pdf.text", "inputs": {"path": "pdf_path"}},
        ],
    }


@pytest.mark.slow
def test_flow_over_the_samples(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    documents = sorted(SAMPLES.iterdir())
    result = run_flow(decrypt_flow(), documents, params={"pdf_password": PASSWORD}, workers=1,
                      work_dir=work)
    by_name = {Path(r.document).name: r for r in result.results}
    assert set(by_name) == {p.name for p in documents}
    memo_run = by_name["encrypted.pdf"]
    assert memo_run.status == "succeeded", memo_run.error
    assert memo_run.outputs["encrypted"] is True
    assert MEMO in memo_run.outputs["text"]
    assert by_name["invoice.pdf"].outputs["encrypted"] is False
    assert "INV-2024-0042" in by_name["invoice.pdf"].outputs["text"]
    assert by_name["scan.png"].status == "succeeded"
    corrupt = by_name["corrupt.pdf"]
    # qpdf cannot open it, PyMuPDF can (its pages are gone): handed on, pdf.text says so
    assert (corrupt.status, corrupt.error_kind, corrupt.step) == ("failed", "corrupt", "text")
    assert [r.document for r in result.failed] == [str(SAMPLES / "corrupt.pdf")]
    # the password is nowhere in what the run hands back
    assert leaks(PASSWORD, *[[r.outputs, r.error] for r in result.results]) == []
    # every run ended: its folder (and the decrypted copy in it) is gone; no engine lock is left
    assert [p.name for p in work.iterdir()] == ["owners"]
    assert list((work / "owners").iterdir()) == []


@pytest.mark.slow
def test_flow_without_a_password() -> None:
    result = run_flow(decrypt_flow(), [ENCRYPTED, SAMPLES / "invoice.pdf"], workers=1)
    memo_run, invoice = result.results
    assert (memo_run.status, memo_run.error_kind, memo_run.step) == ("failed", "password_required", "decrypt")
    assert memo_run.error and memo_run.error.startswith("encrypted, no password given: ")
    assert invoice.status == "succeeded"


@pytest.mark.slow
def test_flow_records_never_hold_the_password(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    secret = "Zebra-Quartz-7731!"  # unlike "docpipe", found nowhere else (paths, module names)
    docs = [memo(tmp_path, secret, "right.pdf"), memo(tmp_path, "another-one", "wrong.pdf"),
            SAMPLES / "corrupt.pdf", SAMPLES / "scan.png"]
    db = tmp_path / "runs.db"
    with Store(f"sqlite:///{db}") as store:
        result = run_flow(decrypt_flow(), docs, params={"pdf_password": secret}, workers=1, store=store)
        batches = store.list_batches()
        runs = [store.get_run(r.run_id) for r in result.results]
    right, wrong, corrupt, png = result.results
    assert right.status == "succeeded" and MEMO in right.outputs["text"]
    assert (wrong.error_kind, wrong.error) == ("wrong_password", "encrypted, no password matched (tried 1)")
    assert corrupt.error_kind == "corrupt" and png.status == "succeeded"
    assert batches[0]["params"] == {"pdf_password": "***"}
    records = [[r.outputs, r.error, r.traceback, r.error_kind] for r in result.results]
    assert leaks(secret, *records, runs, batches) == []
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("runs.db*"))
    assert stored and secret.encode() not in stored
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err
