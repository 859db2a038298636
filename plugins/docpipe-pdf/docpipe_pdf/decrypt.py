"""``pdf.decrypt``: open password-protected PDFs so the blocks after it can read them.

It reads ``path`` and writes ``pdf_path``, the file later blocks should read, and
``encrypted``:

* not an encrypted PDF (a plain PDF, a page image, any other file, an empty
  file) -> ``pdf_path`` is ``path`` itself, untouched, and ``encrypted`` is
  false. ``pdf.text`` judges those files, so a file gets the same verdict (for
  instance "empty file (0 bytes)") with or without this step in the flow;
* an encrypted PDF -> ``pdf_path`` is a decrypted copy, ``encrypted`` is true.
  A PDF with only an owner password (it opens without one, but its permissions
  restrict printing or copying) is decrypted without any password.

Passwords are tried in this order: the ``password`` param, each line of the
``passwords_file`` param, the environment variable ``password_env`` names
(``DOCPIPE_PDF_PASSWORD`` by default). No password given at all -> the document
fails with ``PasswordRequired`` (kind ``password_required``: a configuration gap,
the message says how to give one); passwords given, none matched ->
``WrongPassword("encrypted, no password matched (tried N)")`` (kind
``wrong_password``: the document's or the password list's problem). A password
never appears in a message, an output, a log line or a returned exception: the
param is a pydantic ``SecretStr`` (masked in reprs and JSON dumps) and every
message is scrubbed of the candidates before it leaves the block.

qpdf opens and decrypts. When qpdf cannot open a PDF (it is stricter than
PyMuPDF about some structures: a loop in the page tree, for one), PyMuPDF
decides: a PDF it reads without a password passes through untouched, for
``pdf.text`` to judge; one it needs a password for fails as above when no
password opens it, and as an ``EncryptedDocument`` that says so when one does
(the decrypted copy is written by qpdf, which cannot read this file). Only a PDF
neither library can open is a ``CorruptDocument``; "truncated" in its message is
an explanation added when no ``%%EOF`` ends the file (past any padding), never
a verdict by itself: padding or other text after ``%%EOF``, a missing ``%%EOF``
that the libraries repair, and incremental updates are all normal. One encrypted
with a security handler other than the standard password one (certificate
encryption) is an ``EncryptedDocument`` that says so.

**The decrypted copy is an artifact of the document's run** (see
:mod:`docpipe.artifacts`): it is written into the run's own folder, which the engine
gives this block as the ``work_dir`` input (mode 0700; the copy 0600), and the engine
removes that folder when the run ends, succeeded or failed. It has to be a file because
the blocks after this one run in other worker processes (or Ray actors) and open the
document by path (``pdf.text`` reads it, OCR renders its pages). It does not depend on
the worker that made it: a worker that is killed or recycled loses nothing, a resumed
run finds the copy again, and a run whose folder is gone (a retry after the run failed,
a sweep after its engine was killed) simply decrypts again. An engine killed with
``SIGKILL`` leaves the folder until the next engine starts on the same work area and
sweeps it. Point the work area (``DOCPIPE_WORK_DIR``) at a disk with room for the copies
of the runs in flight (about the size of their encrypted inputs).

A copy is named by a sha256 of the source's real path, size and modification time, so
a changed source gets a fresh copy. It is written to a temporary name and renamed into
place, so a reader never sees half a file.

pikepdf (qpdf) is imported in ``setup``, not when the plugin loads.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from docpipe.blocks import Artifact, Block, Manifest, Result, State, library_path
from docpipe.errors import (
    BlockFailed,
    CorruptDocument,
    DocpipeError,
    DocumentError,
    EncryptedDocument,
    MissingDependency,
    PasswordRequired,
    WrongPassword,
)
from docpipe_pdf.sniff import TRUNCATED_NOTE, has_eof_marker, read_head, sniff

if TYPE_CHECKING:
    import pikepdf

#: the default of the ``password_env`` param
PASSWORD_ENV = "DOCPIPE_PDF_PASSWORD"


class PdfDecrypt(Block):
    """Decrypt password-protected PDFs into a private working copy; other files pass through."""

    manifest = Manifest(
        name="pdf.decrypt",
        version="1.0",
        reads={"path": str, "work_dir": str},
        writes={"pdf_path": Artifact, "encrypted": bool},
        # qpdf's key derivation and rewriting are CPU-bound. A worker per core (cost 1), though
        # a file takes milliseconds: a worker costs ~0.3 s to start, and with one, the first
        # call (a damaged file sent to PyMuPDF, imported then) held up every document 7 s
        runtime="process",
        batch=1,
        description=(
            "pdf_path: a decrypted copy of an encrypted PDF (password from the password param, "
            "passwords_file or an environment variable), else the input path untouched; "
            "encrypted: whether the PDF was encrypted."
        ),
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        password: SecretStr | None = Field(
            default=None,
            description="the password to try first (never shown in records, reprs or dumps)",
        )
        passwords_file: str | None = Field(
            default=None,
            description=(
                "a UTF-8 file of passwords to try, one a line, in order; blank lines and lines "
                "starting with '#' are skipped, other lines are taken as they are"
            ),
        )
        password_env: str | None = Field(
            default=PASSWORD_ENV,
            description="the environment variable whose value is tried last; null to try none",
        )
        # checked when the flow is validated, before a document is touched
        @field_validator("passwords_file")
        @classmethod
        def _a_file(cls, value: str | None) -> str | None:
            if value is not None and not Path(value).is_file():
                raise ValueError(f"passwords_file {value!r} is not a file")
            return value

    _passwords: tuple[SecretStr, ...] = ()
    _env_name: str | None = PASSWORD_ENV

    def setup(self, params: BaseModel) -> None:
        assert isinstance(params, PdfDecrypt.Params)
        try:
            import pikepdf  # noqa: F401
        except ImportError as exc:
            raise MissingDependency(
                "pdf.decrypt needs pikepdf: pip install pikepdf (or reinstall docpipe-pdf)"
            ) from exc
        self._passwords = candidate_passwords(params)
        self._env_name = params.password_env

    def run(self, batch: list[State], params: Params) -> list[Result]:
        return [self._guarded(state.get("path"), state.get("work_dir")) for state in batch]

    # --- one document -------------------------------------------------------------------

    def _guarded(self, path: Any, work_dir: Any) -> Result:
        """:meth:`_decrypt`, with every failure returned (scrubbed of passwords) instead of raised."""
        for key, value in (("path", path), ("work_dir", work_dir)):
            if not isinstance(value, str | os.PathLike):
                return BlockFailed(f"'{key}' must be a string, got {type(value).__name__}")
        try:
            return self._decrypt(os.fspath(path), os.fspath(work_dir))
        except DocumentError as exc:
            # a fresh exception: no traceback frames (whose locals hold passwords), no chain;
            # where it was raised goes along as code lines only (no values)
            return _with_frames(type(exc)(self._scrub(str(exc))), exc)
        except Exception as exc:  # noqa: BLE001 - one document must never fail the batch
            return _with_frames(BlockFailed(self._scrub(f"{type(exc).__name__}: {exc}")), exc)

    def _decrypt(self, path: str, work_dir: str) -> dict[str, Any]:
        import pikepdf

        passthrough = {"pdf_path": path, "encrypted": False}
        head, stat = read_head(path)
        ftype = sniff(head)
        if stat.st_size == 0 or ftype is None or not ftype.is_pdf:
            return passthrough
        target = os.path.join(work_dir, copy_name(path, stat))
        if os.path.exists(target):
            return {"pdf_path": target, "encrypted": True}
        opened = self._open(path)
        if opened is None:  # qpdf cannot open it, PyMuPDF reads it without a password
            return passthrough
        with opened as pdf:
            # a PDF qpdf had to repair is fine: pdf.text judges whether its pages read
            if not pdf.is_encrypted:
                return passthrough
            try:
                self._write(pdf, target)
            except (pikepdf.PdfError, pikepdf.QpdfRuntimeError, pikepdf.DataDecodingError) as exc:
                # qpdf read the file but cannot write its content out: a damaged stream
                raise CorruptDocument(
                    f"damaged PDF, its decrypted copy cannot be written: {_qpdf_message(exc, path)}"
                ) from None
        return {"pdf_path": target, "encrypted": True}

    def _open(self, path: str) -> pikepdf.Pdf | None:
        """The PDF at ``path``, opened by qpdf with the first password that works (none
        first); ``None`` when qpdf cannot open it but PyMuPDF reads it without a password
        (see :meth:`_without_qpdf`): it is handed on untouched."""
        import pikepdf

        for secret in (None, *self._passwords):
            try:
                with library_path(path) as name:
                    pdf = pikepdf.open(name, password="" if secret is None else secret.get_secret_value())
            except pikepdf.PasswordError:
                continue
            except pikepdf.PdfError as exc:
                self._without_qpdf(path, _qpdf_message(exc, path))
                return None
            if pdf.is_encrypted and not pdf.encryption.encryption_key:
                # qpdf rebuilding a damaged encrypted file (padding after %%EOF and an
                # incremental update will do) can open it with a wrong password and no key,
                # and fail only when it writes the copy: that password did not open it
                pdf.close()
                continue
            return pdf
        raise self._no_password_matched()

    def _without_qpdf(self, path: str, refused: str) -> None:
        """PyMuPDF's verdict on a PDF qpdf cannot open (``refused`` says why): returns when
        PyMuPDF reads it without a password, raises the document's typed failure otherwise."""
        import pymupdf

        # damaged files make MuPDF print to stderr; its errors become our typed failures
        pymupdf.TOOLS.mupdf_display_errors(False)
        pymupdf.TOOLS.mupdf_display_warnings(False)
        try:
            with library_path(path) as name:
                doc = pymupdf.open(name, filetype="pdf")
        except (pymupdf.FileDataError, pymupdf.mupdf.FzErrorBase) as exc:
            mupdf = pymupdf.mupdf
            if isinstance(exc, mupdf.FzErrorSystem | mupdf.FzErrorAbort | mupdf.FzErrorTrylater):
                raise  # out of memory, I/O, interrupted: not the document's fault
            raise _open_failure(refused, path) from None  # neither library opens it
        finally:
            pymupdf.TOOLS.reset_mupdf_warnings()  # MuPDF keeps them for the life of the process
        with doc:
            if not doc.needs_pass:
                return
            if not any(doc.authenticate(s.get_secret_value()) for s in self._passwords):
                raise _encryption_failure(refused) or self._no_password_matched()
        raise EncryptedDocument(
            "encrypted, and a password given opens it, but qpdf cannot read the file to write "
            f"the decrypted copy: {refused}; decrypt it with another tool "
            "(mutool clean -D -p PASSWORD IN OUT) and run that copy"
        )

    def _no_password_matched(self) -> EncryptedDocument:
        if self._passwords:
            return WrongPassword(f"encrypted, no password matched (tried {len(self._passwords)})")
        env = (
            f"set the {self._env_name} environment variable"
            if self._env_name
            else "name an environment variable in password_env"
        )
        return PasswordRequired(
            f"encrypted, no password given: give the step a password or passwords_file param, or {env}"
        )

    def _write(self, pdf: pikepdf.Pdf, target: str) -> None:
        """Save ``pdf`` unencrypted at ``target`` (in the run's folder, which the engine made:
        never made here, so a copy cannot land in the folder of a run that already ended),
        atomically, readable by the owner only."""
        folder = os.path.dirname(target)
        if not os.path.isdir(folder):
            raise DocumentError("the run's work folder is gone (the run ended or was swept)")
        fd, part = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                pdf.save(f, encryption=False, deterministic_id=True)  # equal copies: reuse downstream
            os.replace(part, target)
        except BaseException:
            Path(part).unlink(missing_ok=True)
            raise

    def _scrub(self, message: str) -> str:
        """``message`` with every candidate password masked (belt and braces: none is ever put
        in a message on purpose)."""
        for secret in sorted(self._passwords, key=lambda s: -len(s.get_secret_value())):
            value = secret.get_secret_value()
            if value:
                message = message.replace(value, "***")
        return message


def candidate_passwords(params: PdfDecrypt.Params) -> tuple[SecretStr, ...]:
    """The passwords to try, in order, without repeats or empty ones (the empty password is
    always tried first anyway)."""
    values: list[str] = []
    if params.password is not None:
        values.append(params.password.get_secret_value())
    if params.passwords_file is not None:
        values += read_passwords_file(params.passwords_file)
    if params.password_env:
        values.append(os.environ.get(params.password_env, ""))
    return tuple(SecretStr(v) for v in dict.fromkeys(v for v in values if v))


def read_passwords_file(path: str) -> list[str]:
    """The passwords in a passwords file: one a line; blank and ``#`` lines skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DocpipeError(f"passwords_file {path!r} is not UTF-8 text") from None
    except OSError as exc:
        raise DocpipeError(f"cannot read passwords_file {path!r}: {exc.strerror or exc}") from None
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def copy_name(path: str, stat: os.stat_result) -> str:
    """The decrypted copy's file name: a digest of the source's real path, size and mtime."""
    key = f"{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest() + ".pdf"


def _with_frames(failure: Exception, cause: BaseException) -> Exception:
    """``failure`` with a note listing the code lines ``cause`` passed through (file, line,
    source; never values): the traceback object itself does not cross processes."""
    failure.add_note("in the worker:\n" + "".join(traceback.format_tb(cause.__traceback__)))
    return failure


def _qpdf_message(exc: Exception, path: str) -> str:
    """qpdf's message without the file name it starts with (the record names the document)."""
    message = str(exc)
    if message.startswith(path):
        message = message[len(path) :].lstrip(": ")
    else:  # opened through library_path: /proc/self/fd/N
        message = re.sub(r"^/(?:proc/self|dev)/fd/\d+:? *", "", message)
    return message or type(exc).__name__


def _open_failure(message: str, path: str) -> DocumentError:
    """The failure of a PDF at ``path`` that neither qpdf (``message``: its reason) nor
    PyMuPDF can open."""
    failure = _encryption_failure(message)
    if failure is not None:
        return failure
    if not has_eof_marker(path):
        message += f"; {TRUNCATED_NOTE}"
    return CorruptDocument(f"damaged PDF, it cannot be opened: {message}")


def _encryption_failure(message: str) -> EncryptedDocument | None:
    """The failure of a PDF whose encryption qpdf cannot handle (``message``: its reason);
    ``None`` when the reason is not the encryption."""
    if "unsupported encryption filter" in message:
        return EncryptedDocument(
            "encrypted with a security handler other than the standard password one "
            "(certificate encryption?); pdf.decrypt cannot open it"
        )
    if "encryption dictionary" in message:
        return EncryptedDocument(f"encrypted in a way pdf.decrypt cannot open: {message}")
    return None
