"""One error hierarchy for docpipe.

Every error says what went wrong and, where there is one, what to do about it.
Document errors (:class:`DocumentError` and its subclasses) are *data*: a block
raises or returns one for a single document, the engine records it as that
document's typed failure and the rest of the batch goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from docpipe.status import ErrorKind


class DocpipeError(Exception):
    """Base of every error docpipe raises on purpose."""

    exit_code = 1


# --- flows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowIssue:
    """One problem found in a flow definition, naming the step and the key."""

    message: str
    step: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = []
        if self.step is not None:
            where.append(f"step '{self.step}'")
        if self.key is not None:
            where.append(f"key '{self.key}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class FlowError(DocpipeError):
    """A flow definition is invalid; carries every issue found, not just the first."""

    exit_code = 2

    def __init__(self, issues: list[FlowIssue], source: str | None = None) -> None:
        self.issues = issues
        self.source = source
        head = f"flow {source!r} is invalid" if source else "flow is invalid"
        super().__init__(head + ":\n" + "\n".join(f"  - {i}" for i in issues))


class ExpressionError(DocpipeError):
    """An expression in a flow (``when``, ``expr``, ``switch``) cannot be parsed or evaluated."""


# --- plugins -------------------------------------------------------------------------


class PluginLoadError(DocpipeError):
    """A plugin could not be imported or registered."""


class UnknownBlock(DocpipeError):
    """A flow names a block no installed plugin provides."""


class MissingDependency(DocpipeError):
    """Something a block needs (a system binary, a model, a package) is not installed."""


# --- documents -----------------------------------------------------------------------


class DocumentError(DocpipeError):
    """A single document cannot be processed. ``kind`` types the failure in records and outputs."""

    kind: str = ErrorKind.DOCUMENT_ERROR
    #: whether the same input may succeed when tried again (the worker died, it timed out, a
    #: service was down): a step's retry policy retries these by default (``on: ["retryable"]``)
    retryable = False


class EncryptedDocument(DocumentError):
    """An encrypted document that cannot be opened (certificate encryption, an unknown
    security handler, or a block that takes no passwords)."""

    kind = ErrorKind.ENCRYPTED


class PasswordRequired(EncryptedDocument):
    """Encrypted, and no password was given at all: a configuration gap, fixed by giving one."""

    kind = ErrorKind.PASSWORD_REQUIRED


class WrongPassword(EncryptedDocument):
    """Encrypted, and none of the passwords given opens it: a problem of the document (or of
    the password list), not of the configuration."""

    kind = ErrorKind.WRONG_PASSWORD


class CorruptDocument(DocumentError):
    kind = ErrorKind.CORRUPT


class UnsupportedDocument(DocumentError):
    kind = ErrorKind.UNSUPPORTED


class TransientError(DocumentError):
    """A passing failure outside the document (a service down, a lock held, a full disk being
    cleared): the step's retry policy tries it again, where it allows more than one attempt."""

    kind = ErrorKind.TRANSIENT
    retryable = True


class BlockFailed(DocumentError):
    """A block raised an unexpected exception (or broke its contract) on a document."""

    kind = ErrorKind.BLOCK_ERROR


class WorkerDied(DocumentError):
    """The worker process that held the task exited (killed, crashed, out of memory)."""

    kind = ErrorKind.WORKER_DIED
    retryable = True


class BlockTimeout(DocumentError):
    kind = ErrorKind.TIMEOUT
    retryable = True


class OutOfMemory(DocumentError):
    """The document needed more memory than its worker may use (``DOCPIPE_WORKER_MEMORY_MB``)."""

    kind = ErrorKind.OUT_OF_MEMORY


def error_kind(exc: BaseException) -> str:
    """The typed failure name recorded for ``exc``."""
    if isinstance(exc, DocumentError):
        return exc.kind
    if isinstance(exc, MemoryError):
        return OutOfMemory.kind
    return BlockFailed.kind
