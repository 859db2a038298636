"""docpipe's one vocabulary: the statuses runs, tasks, batches and jobs record, and the
kinds of typed document failure.

Both are :class:`~enum.StrEnum`: a member equals its string (``Status.FAILED ==
"failed"``), binds to SQL and encodes to JSON as that string, so records, result files
and the API read the same as plain strings would. Use the members in code; compare
values read back from the store or the API against them as they are.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """The status of a flow run, task run or batch, as recorded."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: a task whose step's ``when`` did not hold
    SKIPPED = "skipped"
    #: an attempt that failed and is tried again
    RETRYING = "retrying"
    #: a batch stopped before it finished (Ctrl-C, a crash of the driver)
    INTERRUPTED = "interrupted"
    #: a flow run (and its review step's task) waiting for a person's answer; a batch none
    #: of whose runs failed but some of whose runs wait (see docs/review.md)
    WAITING = "waiting"


class ReviewStatus(StrEnum):
    """The status of a review task (``review_tasks.status``): ``waiting`` for a reviewer,
    ``claimed`` by one until its lease expires (then it is waiting again), ``answered``."""

    WAITING = "waiting"
    CLAIMED = "claimed"
    ANSWERED = "answered"


class JobStatus(StrEnum):
    """The status of a run, retry or resume the server was asked for (not recorded)."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    ERROR = "error"


class DeliveryStatus(StrEnum):
    """Where one finished run stands with one output sink (the outbox, docs/service.md)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    #: given up after the sink's attempts: shown, and sent again only when asked
    DEAD = "dead"


class ErrorKind(StrEnum):
    """The typed failure of a document, recorded as ``error_kind``."""

    DOCUMENT_ERROR = "document_error"
    ENCRYPTED = "encrypted"
    PASSWORD_REQUIRED = "password_required"
    WRONG_PASSWORD = "wrong_password"
    CORRUPT = "corrupt"
    UNSUPPORTED = "unsupported"
    TRANSIENT = "transient"
    BLOCK_ERROR = "block_error"
    WORKER_DIED = "worker_died"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
