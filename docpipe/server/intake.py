"""The HTTP intake: ``POST /api/flows/{name}/runs`` queues uploaded files as ``document`` jobs
of recorded flow ``name`` (:func:`docpipe.service.intake.submit_documents`), which the
server's runner takes up; an ``Idempotency-Key`` header makes a client's retry return the
first answer instead of queueing the files again; ``?wait=SECONDS`` answers when the runs
ended (or the time is up) with their status and outputs."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, HTTPException, Query, Response, UploadFile

from docpipe import service
from docpipe.errors import FlowError
from docpipe.server.actions import ActionError
from docpipe.server.api import Ctx, can_read, can_write, drop_uploads, parse_params, save_uploads
from docpipe.server.app import Context
from docpipe.service.intake import MAX_KEY, Submission, submit_documents
from docpipe.status import JobStatus

router = APIRouter(prefix="/api", dependencies=[Depends(can_read)])

#: the longest ``?wait=`` a request may ask for, in seconds
MAX_WAIT = 60.0
#: how often a waiting request reads its jobs again, in seconds
POLL_S = 0.01
#: the jobs' source for documents posted here
SOURCE = "api"
_ENDED = (JobStatus.FINISHED, JobStatus.ERROR)


def _refused(exc: service.ServiceError | FlowError) -> HTTPException:
    if isinstance(exc, FlowError):
        return HTTPException(422, "; ".join([exc.args[0].splitlines()[0], *map(str, exc.issues)]))
    refused = ActionError.of(exc)
    return HTTPException(refused.status, refused.message)


def _wake(ctx: Context) -> None:
    """Tell the server's runner (when it has one) that jobs are queued."""
    runner = getattr(ctx, "runner", None)
    if runner is not None:
        runner.wake()


def wait_for(ctx: Context, made: Submission, seconds: float) -> list[dict[str, Any]]:
    """The jobs of ``made`` once every one ended or ``seconds`` passed (read every
    :data:`POLL_S`; a plain ``def`` route runs on FastAPI's thread pool, so this never blocks
    the event loop)."""
    ids = {j["id"] for j in made.jobs}
    jobs = made.jobs
    end = time.monotonic() + seconds
    while True:
        if all(j["status"] in _ENDED for j in jobs) or time.monotonic() >= end:
            return jobs
        time.sleep(POLL_S)
        found = {j["id"]: j for j in ctx.store.jobs.list(batch_id=made.batch_id, limit=len(ids) + 1)}
        jobs = [found.get(j["id"], j) for j in made.jobs]


def _with_results(ctx: Context, body: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """``body``'s runs with each one's job ``status`` and, once its run is recorded, the run's
    ``status``, ``outputs`` and error."""
    runs = []
    for entry, job in zip(body["runs"], jobs, strict=True):
        run = ctx.store.get_run(job["run_id"]) if job["status"] in _ENDED else None
        runs.append({**entry, "job_status": job["status"],
                     "status": run["status"] if run else job["status"],
                     "outputs": run["outputs"] if run else None,
                     "error": (run["error"] if run else None) or job["error"],
                     "error_kind": run["error_kind"] if run else None})
    return {**body, "runs": runs}


@router.post("/flows/{name}/runs", status_code=202, dependencies=[Depends(can_write)],
             summary="Queue uploaded files through a recorded flow; returns their run ids")
def submit_runs(ctx: Ctx, name: str, response: Response, files: Annotated[list[UploadFile], File()],
                params: Annotated[str | None, Form(description="JSON object")] = None,
                correlation_id: Annotated[str | None, Form(max_length=255)] = None,
                idempotency_key: Annotated[str | None, Header(max_length=MAX_KEY)] = None,
                wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the runs")] = 0,
                ) -> dict[str, Any]:
    given = parse_params(params)
    key = idempotency_key or None
    earlier = ctx.store.jobs.by_key(SOURCE, key) if key is not None else None
    docs = save_uploads(ctx, files) if earlier is None else []  # a repeat keeps none of its files
    try:
        made = submit_documents(ctx.store, name, [(path, correlation_id or None) for path, _ in docs],
                                registry=ctx.registry, source=SOURCE, key=key, params=given,
                                files=False)
    except (service.ServiceError, FlowError) as exc:
        drop_uploads(docs)
        raise _refused(exc) from None
    except BaseException:
        drop_uploads(docs)
        raise
    if made.repeated:
        drop_uploads(docs)
        response.status_code = 200
    else:
        _wake(ctx)
    body = made.as_dict()
    if wait > 0:
        return _with_results(ctx, body, wait_for(ctx, made, wait))
    return body
