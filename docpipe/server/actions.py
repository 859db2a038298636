"""What the server changes: start a run on uploaded or server-side files, retry the failed
documents of a batch, resume a batch, answer a review task (and continue its run at once).
Shared by the API and the pages.

Plans, inputs and batches come from :mod:`docpipe.service`, as they do for the CLI; this
module adds what only a server decides (which folders a request may read, where uploads
go, one job per batch at a time) and turns the service's refusals into HTTP statuses.
The batches run as jobs (:class:`~docpipe.server.jobs.Jobs`: rows of the store) on the
server's runner and its resident engine.
"""

from __future__ import annotations

import glob
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from docpipe import service
from docpipe.errors import FlowError
from docpipe.inputs import InputError, absolute
from docpipe.planner import Plan
from docpipe.plugins import Registry
from docpipe.server.jobs import Duplicate, Job, Jobs
from docpipe.status import Status
from docpipe.store import Store, new_id

_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
_CHUNK = 1024 * 1024


class ActionError(Exception):
    """A request the server refuses: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @classmethod
    def of(cls, exc: service.ServiceError) -> ActionError:
        """The service's refusal as the server words it: ``NotFound`` 404, ``Conflict`` 409,
        any other 400 (one mapping for every route and action)."""
        status = 404 if isinstance(exc, service.NotFound) else 409 if isinstance(exc, service.Conflict) else 400
        return cls(status, str(exc))


@dataclass
class Settings:
    """How the server was started (see ``docpipe serve --help``)."""

    store_url: str
    data_dir: Path
    plugins: tuple[str, ...] = ()
    allow_dirs: tuple[Path, ...] = ()
    max_upload: int = 100 * 1024 * 1024
    workers: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def uploads(self) -> Path:
        return self.data_dir / "uploads"


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


log = logging.getLogger("docpipe.server")


def _log_skipped(path: str, why: str) -> None:
    log.warning("skipped %s: %s", path, why)


def server_paths(specs: list[str], allow_dirs: tuple[Path, ...]) -> list[str]:
    """The files that ``specs`` (files, folders, globs) name, all inside ``allow_dirs``.

    403 when a spec or a file it expands to (symbolic links followed) lies outside
    every allowed folder, or when no folder is allowed; 400 when it names nothing.
    """
    if not allow_dirs:
        raise ActionError(403, "this server does not start runs on server-side paths; "
                               "start it with --allow-dir DIR to allow the files under DIR")
    roots = [d.resolve() for d in allow_dirs]
    for spec in specs:
        base = spec
        if glob.has_magic(spec):  # the folder part before the first wildcard
            base = re.split(r"[*?\[]", spec, maxsplit=1)[0] or "."
        if not _under(Path(absolute(base)), roots):
            raise ActionError(403, f"{spec} is outside the folders this server may read")
    try:
        files = service.find_documents(specs, _log_skipped)
    except InputError as exc:
        raise ActionError(400, str(exc)) from None
    outside = [f for f in files if not _under(Path(f), roots)]
    if outside:
        raise ActionError(403, f"{outside[0]} is outside the folders this server may read")
    if not files:
        raise ActionError(400, "no input files")
    return files


def save_upload(stream: IO[bytes], filename: str | None, settings: Settings,
                left: int) -> tuple[str, int, str]:
    """Copy one uploaded file under ``<data dir>/uploads`` with a generated name; return its
    path, size and original name (its last path part). The original name is kept only in
    ``<file>.json`` beside it (and as the run's correlation id when none is given). 413 when
    more than ``left`` bytes come."""
    settings.uploads.mkdir(parents=True, exist_ok=True)
    original = Path(filename or "").name
    suffix = Path(original).suffix
    name = uuid.uuid4().hex + (suffix.lower() if _SUFFIX.fullmatch(suffix) else "")
    target = settings.uploads / name
    size = 0
    try:
        with open(target, "xb") as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > left:
                    raise ActionError(413, f"the upload is larger than {settings.max_upload} bytes")
                out.write(chunk)
        meta = {"filename": original, "size": size, "uploaded_at": time.time()}
        target.with_name(name + ".json").write_text(json.dumps(meta), encoding="utf-8")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return str(target), size, original


def _flow_plan(registry: Registry, definition: dict[str, Any], params: dict[str, Any]) -> Plan:
    try:
        return service.plan_definition(definition, registry, params)
    except service.SecretsNeeded as exc:
        raise ActionError(400, str(exc)) from None
    except FlowError as exc:
        raise ActionError(422, "; ".join([exc.args[0].splitlines()[0], *map(str, exc.issues)])) from None


def start_run(store: Store, jobs: Jobs, settings: Settings, registry: Registry, *, flow: str,
              documents: list[tuple[str, str | None]], version: str | None = None,
              content_hash: str | None = None, params: dict[str, Any] | None = None,
              correlation_id: str | None = None) -> Job:
    """Queue a new batch of recorded flow ``flow`` over ``documents`` ((path, correlation id))."""
    found = store.get_flow(flow, version=version, content_hash=content_hash)
    if found is None:
        raise ActionError(404, f"no recorded flow {flow}" + (f" version {version}" if version else ""))
    if not documents:
        raise ActionError(400, "no input files")
    plan = _flow_plan(registry, found["definition"], params or {})
    docs = [(path, correlation_id or corr) for path, corr in documents]
    # a new batch (its id given now): never a duplicate
    job = Job("run", plan.name, batch_id=new_id(), documents=len(docs))
    return jobs.submit(job, {"documents": docs, "correlation_id": correlation_id,
                             "content_hash": found["content_hash"]}, params or {})


def continue_batch(store: Store, jobs: Jobs, settings: Settings, batch_id: str, *,
                   retry_failed: bool, params: dict[str, Any] | None = None,
                   documents: set[str] | None = None, kind: str | None = None) -> Job:
    """Queue a resume of batch ``batch_id`` (with ``retry_failed``: its failed documents, or
    only those in ``documents``, again from their last succeeded step), as ``docpipe resume`` /
    ``runs retry`` do; after the job of the batch that is queued or running, if there is one
    (409 when that job already does the same)."""
    batch = store.batch(batch_id)
    if batch is None:
        raise ActionError(404, f"no batch {batch_id}")
    if retry_failed and not store.failed_documents(batch_id):
        raise ActionError(409, f"batch {batch_id} has no failed document to retry")
    documents_left = [j for j in jobs.active_on(batch_id) if j.kind == "document"]
    if documents_left:
        raise ActionError(409, f"batch {batch_id} still has {len(documents_left)} document(s) queued or "
                               "running: its runs end on their own")
    try:
        todo = service.continue_batch(store, batch_id, _registry(settings), params,
                                      retry_failed=retry_failed, only=documents)
    except service.ServiceError as exc:
        raise ActionError(400, str(exc)) from None
    except FlowError as exc:
        log.warning("batch %s cannot be planned again: %s", batch_id, exc)
        raise ActionError(422, f"the recorded flow of batch {batch_id} is not valid with the "
                               "installed blocks (the server's log has the issues)") from None
    job = Job(kind or ("retry" if retry_failed else "resume"), todo.plan.name, batch_id=batch_id,
              documents=len(documents) if documents else int(batch["n_inputs"] or 0),
              only=sorted(documents) if documents else None)
    try:  # queued after a job of the batch that is active
        return jobs.submit(job, {}, params or {})
    except Duplicate as exc:
        what = "a retry of these documents" if job.kind == "retry" else "a resume"
        raise ActionError(409, f"{what} of batch {batch_id} is already {exc.job.status} "
                               f"(job {exc.job.id})") from None


def _registry(settings: Settings) -> Registry:
    """The installed plugins and ``--plugin`` paths, loaded again for each resume or retry
    (as ``docpipe resume`` would); a broken plugin is logged and skipped."""
    registry = Registry(extra=settings.plugins)
    for b in registry.broken:
        log.warning("plugin '%s' is broken and was skipped: %s", b.plugin, b.error)
    return registry


def retry_failed_run(store: Store, jobs: Jobs, settings: Settings, run_id: str, *,
                     params: dict[str, Any] | None = None) -> Job:
    """Queue a retry of failed run ``run_id`` alone, from its last succeeded step, in the same
    run (``docpipe runs retry BATCH --run RUN_ID``); the batch's other failed runs stay failed."""
    try:
        run = service.failed_run(store, run_id)
    except (service.NotFound, service.Conflict) as exc:
        raise ActionError.of(exc) from None
    return continue_batch(store, jobs, settings, run["batch_id"], retry_failed=True, params=params,
                          documents={run["document"]})


def answer_task(store: Store, jobs: Jobs, settings: Settings, task_id: str, reviewer: str,
                value: Any) -> tuple[dict[str, Any], bool, Job | None]:
    """Answer review task ``task_id`` (see :func:`docpipe.service.answer`) and, when that was
    its run's last open question, queue a resume of its batch so that the run continues at
    once: ``(task, whether this call answered it, the job or None)``."""
    try:
        task, new = service.answer(store, task_id, reviewer, value)
    except service.ServiceError as exc:
        raise ActionError.of(exc) from None
    return task, new, continue_answered(store, jobs, settings, task)


def continue_answered(store: Store, jobs: Jobs, settings: Settings, task: dict[str, Any]) -> Job | None:
    """Queue the resume that continues ``task``'s answered run, unless a queued one will, the
    run still waits for another answer, or its batch runs in another process (recorded as
    running with no job of this server on it: `docpipe review continue` takes it up later)."""
    batch_id = task["batch_id"]
    run = store.get_run(task["flow_run_id"], resolve_blobs=False)
    if batch_id is None or run is None or run["status"] != Status.WAITING:
        return None
    if task["flow_run_id"] in store.reviews.open_runs(batch_id):
        return None
    batch = store.batch(batch_id)
    if batch is None or (batch["status"] == Status.RUNNING and not jobs.active_on(batch_id)):
        log.info("review task %s answered; batch %s runs elsewhere: not continued here", task["id"], batch_id)
        return None
    try:
        return continue_batch(store, jobs, settings, batch_id, retry_failed=False, kind="continue")
    except ActionError as exc:
        if exc.status != 409:  # 409: a queued resume of the batch will continue the run
            log.warning("review task %s answered; batch %s not continued: %s", task["id"], batch_id, exc.message)
        return None
