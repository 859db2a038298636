"""What the service refuses, typed, so that each face words it its own way: the CLI as a
usage error naming the option that gave the value, the server as an HTTP status.

Every class is a :class:`~docpipe.errors.DocpipeError` with exit status 2 (nothing was
run). ``field`` names the value at fault in the service's terms (``batch_id``,
``run_id``, ``since``, ``out``, ``output``, ``params``); a face maps it to its own name
for that value (``--batch``, ``BATCH_ID``, a JSON field).
"""

from __future__ import annotations

from collections.abc import Iterable

from docpipe.errors import DocpipeError


class ServiceError(DocpipeError):
    """A request the service refuses; the message says why."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(ServiceError):
    """No run, batch or output by that name (HTTP 404)."""


class Ambiguous(ServiceError):
    """An id prefix that starts several ids."""


class Conflict(ServiceError):
    """The request does not fit what the records say (HTTP 409): a run that is not
    failed given for a retry, a batch with nothing to retry."""


class SecretsNeeded(ServiceError):
    """Params that were secret, so never recorded, must be given again to rerun a flow."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(names)
        super().__init__("these params are secret and not recorded; give them: " + ", ".join(self.names),
                         field="params")
