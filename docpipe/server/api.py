"""The REST API under ``/api/``; the pages call the same functions (:mod:`docpipe.server.data`,
:mod:`docpipe.server.actions`)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from docpipe import service
from docpipe.server import data
from docpipe.server.actions import (
    ActionError,
    answer_task,
    continue_batch,
    retry_failed_run,
    save_upload,
    server_paths,
    start_run,
)
from docpipe.server.app import Context, ctx_of
from docpipe.server.security import check_token
from docpipe.status import JobStatus, Status


def can_read(request: Request) -> None:
    """Reads are open on loopback; when the server is exposed they need the token too."""
    ctx = ctx_of(request)
    if not ctx.reads_public:
        check_token(request, ctx.token)


def can_write(request: Request) -> None:
    """Every change needs the token (bearer header or the UI's cookie)."""
    check_token(request, ctx_of(request).token)


router = APIRouter(prefix="/api", dependencies=[Depends(can_read)])
Ctx = Annotated[Context, Depends(ctx_of)]


def _since(text: str | None, name: str) -> float | None:
    """``30m``/``2h``/``7d`` ago, an ISO date/time or epoch seconds, as epoch seconds."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return service.parse_since(text)
    except service.ServiceError as exc:
        raise HTTPException(400, f"{name}: {exc}") from None


def _job_reply(job: Any) -> dict[str, Any]:
    return {"job": job.as_dict(), "url": f"/api/jobs/{job.id}"}


def _act(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None


@router.get("/runs", summary="List flow runs, newest first, with counts by status")
def list_runs(ctx: Ctx, status: str | None = None, flow: str | None = None, batch_id: str | None = None,
              correlation_id: str | None = None,
              since: Annotated[str | None, Query(description="30m, 2h, 7d, ISO date/time or epoch")] = None,
              until: Annotated[str | None, Query(description="ISO date/time or epoch seconds")] = None,
              page: Annotated[int, Query(ge=1)] = 1,
              per_page: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    return data.list_runs(ctx.store, status=status or None, flow=flow or None, batch_id=batch_id or None,
                          correlation_id=correlation_id or None, since=_since(since, "since"),
                          until=_since(until, "until"), page=page, per_page=per_page)


@router.get("/runs/{run_id}", summary="One flow run with every step attempt")
def get_run(ctx: Ctx, run_id: str) -> dict[str, Any]:
    run = data.get_run(ctx.store, run_id, ctx.registry)
    if run is None:
        queued = _queued_run(ctx, run_id)
        if queued is None:
            raise HTTPException(404, f"no run {run_id}")
        return queued
    return run


def _queued_run(ctx: Context, run_id: str) -> dict[str, Any] | None:
    """A run a job was given when it was queued, before a server started it: ``queued``."""
    row = ctx.store.jobs.by_run(run_id)
    if row is None:
        return None
    status = "queued" if row["status"] in (JobStatus.QUEUED, JobStatus.RUNNING) else Status.FAILED
    return {"id": run_id, "status": status, "batch_id": row["batch_id"], "document": row["document"],
            "correlation_id": row["correlation_id"], "job_id": row["id"], "error": row["error"],
            "queued_at": row["created_at"], "tasks": []}


class StartRequest(BaseModel):
    flow: str = Field(description="Name of a recorded flow (see /api/flows)")
    version: str | None = None
    content_hash: str | None = None
    paths: list[str] = Field(description="Server-side files, folders or globs under an --allow-dir folder")
    params: dict[str, Any] = Field(default_factory=dict)
    correlation_id: str | None = None


@router.post("/runs", status_code=202, dependencies=[Depends(can_write)],
             summary="Start a batch of a recorded flow over server-side files")
def start(ctx: Ctx, body: StartRequest) -> dict[str, Any]:
    files = _act(server_paths, body.paths, ctx.settings.allow_dirs)
    job = _act(start_run, ctx.store, ctx.jobs, ctx.settings, ctx.registry, flow=body.flow,
               documents=[(f, None) for f in files], version=body.version,
               content_hash=body.content_hash, params=body.params, correlation_id=body.correlation_id)
    return _job_reply(job)


def save_uploads(ctx: Context, files: list[UploadFile]) -> list[tuple[str, str | None]]:
    """Store uploaded files under the data directory: ``[(path, original name)]``."""
    left = ctx.settings.max_upload
    saved: list[tuple[str, str | None]] = []
    try:
        for upload in files:
            path, size, original = _act(save_upload, upload.file, upload.filename, ctx.settings, left)
            left -= size
            saved.append((path, original or None))
    except BaseException:  # a refused request keeps none of its files
        drop_uploads(saved)
        raise
    return saved


def drop_uploads(saved: list[tuple[str, str | None]]) -> None:
    for path, _ in saved:
        Path(path).unlink(missing_ok=True)
        Path(path + ".json").unlink(missing_ok=True)


def parse_params(text: str | None) -> dict[str, Any]:
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"params: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise HTTPException(400, "params: give a JSON object")
    return value


@router.post("/runs/upload", status_code=202, dependencies=[Depends(can_write)],
             summary="Start a batch of a recorded flow over uploaded files")
def start_upload(ctx: Ctx, flow: Annotated[str, Form()], files: Annotated[list[UploadFile], File()],
                 version: Annotated[str | None, Form()] = None,
                 params: Annotated[str | None, Form(description="JSON object")] = None,
                 correlation_id: Annotated[str | None, Form()] = None) -> dict[str, Any]:
    given = parse_params(params)
    docs = save_uploads(ctx, files)
    try:
        job = _act(start_run, ctx.store, ctx.jobs, ctx.settings, ctx.registry, flow=flow, documents=docs,
                   version=version or None, params=given, correlation_id=correlation_id or None)
    except BaseException:
        drop_uploads(docs)
        raise
    return _job_reply(job)


class ContinueRequest(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict, description="Params to give again (secrets)")


@router.post("/runs/{run_id}/retry", status_code=202, dependencies=[Depends(can_write)],
             summary="Retry a failed run: the failed documents of its batch, from their last succeeded step")
def retry_run(ctx: Ctx, run_id: str, body: ContinueRequest | None = None) -> dict[str, Any]:
    params = body.params if body else None
    return _job_reply(_act(retry_failed_run, ctx.store, ctx.jobs, ctx.settings, run_id, params=params))


@router.get("/batches", summary="List batches (one per run command), newest first")
def list_batches(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    return ctx.store.list_batches(limit=limit)


@router.get("/batches/{batch_id}", summary="One batch with its inputs")
def get_batch(ctx: Ctx, batch_id: str) -> dict[str, Any]:
    batch = ctx.store.batch(batch_id)
    if batch is None:
        raise HTTPException(404, f"no batch {batch_id}")
    return {**batch, "inputs": ctx.store.batch_inputs(batch_id)}


ResultFormat = Literal["csv", "jsonl"]


def _results(ctx: Context, batch_id: str, fmt: str) -> FileResponse:
    batch = ctx.store.batch(batch_id)
    if batch is None:
        raise HTTPException(404, f"no batch {batch_id}")
    folder = Path(tempfile.mkdtemp(prefix="docpipe-results-"))
    try:
        path = data.write_batch_results(ctx.store, batch_id, ctx.registry, ctx.settings.uploads, fmt, folder)
        if path is None:
            raise HTTPException(404, f"no batch {batch_id}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(path, media_type=data.RESULT_TYPES[fmt], filename=data.results_filename(batch, fmt),
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))


@router.get("/batches/{batch_id}/results.{fmt}", response_class=FileResponse,
            summary="A batch's results file (CSV or JSONL), written from the store as `--out` writes it")
def batch_results_file(ctx: Ctx, batch_id: str, fmt: ResultFormat) -> FileResponse:
    return _results(ctx, batch_id, fmt)


@router.get("/batches/{batch_id}/results", response_class=FileResponse,
            summary="A batch's results file, in the format ?format= names (csv by default)")
def batch_results(ctx: Ctx, batch_id: str, format: ResultFormat = "csv") -> FileResponse:  # noqa: A002
    return _results(ctx, batch_id, format)


def _continue(ctx: Context, batch_id: str, body: ContinueRequest | None, retry_failed: bool) -> dict[str, Any]:
    params = body.params if body else None
    return _job_reply(_act(continue_batch, ctx.store, ctx.jobs, ctx.settings, batch_id,
                           retry_failed=retry_failed, params=params))


@router.post("/batches/{batch_id}/resume", status_code=202, dependencies=[Depends(can_write)],
             summary="Resume a batch: finish its interrupted and never-started documents")
def resume_batch(ctx: Ctx, batch_id: str, body: ContinueRequest | None = None) -> dict[str, Any]:
    return _continue(ctx, batch_id, body, retry_failed=False)


@router.post("/batches/{batch_id}/retry", status_code=202, dependencies=[Depends(can_write)],
             summary="Retry the failed documents of a batch")
def retry_batch(ctx: Ctx, batch_id: str, body: ContinueRequest | None = None) -> dict[str, Any]:
    return _continue(ctx, batch_id, body, retry_failed=True)


def _review(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A review service call, its refusals as HTTP statuses (404, 409, else 400)."""
    try:
        return fn(*args, **kwargs)
    except service.ServiceError as exc:
        refused = ActionError.of(exc)
        raise HTTPException(refused.status, refused.message) from None


@router.get("/review/tasks", summary="Review tasks oldest first (waiting by default), with counts by status")
def list_review_tasks(ctx: Ctx, status: str | None = "waiting", flow: str | None = None, kind: str | None = None,
                      batch_id: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    tasks = _review(service.list_tasks, ctx.store, status=None if status in (None, "", "all") else status,
                    flow=flow or None, kind=kind or None, batch_id=batch_id or None, limit=limit)
    return {"tasks": tasks, "counts": ctx.store.reviews.count(), "waiting": ctx.store.reviews.waiting_summary()}


@router.get("/review/tasks/{task_id}", summary="One review task: the question, the proposal, its lease or answer")
def get_review_task(ctx: Ctx, task_id: str) -> dict[str, Any]:
    return dict(_review(service.get_task, ctx.store, task_id))


class ClaimRequest(BaseModel):
    reviewer: str = Field(description="Who claims the task (recorded as the lease's owner)")
    lease_s: float = Field(default=600, gt=0, description="Seconds the claim holds the task")


class ReviewerRequest(BaseModel):
    reviewer: str


class AnswerRequest(BaseModel):
    reviewer: str = Field(description="Who answers (recorded with the answer)")
    answer: Any = Field(description="A choice (choose), text or {key: value} (edit), true/false (approve)")


@router.post("/review/tasks/{task_id}/claim", dependencies=[Depends(can_write)],
             summary="Claim a review task with a lease (409 when another reviewer holds it)")
def claim_review_task(ctx: Ctx, task_id: str, body: ClaimRequest) -> dict[str, Any]:
    return dict(_review(service.claim, ctx.store, task_id, body.reviewer, body.lease_s))


@router.post("/review/tasks/{task_id}/release", dependencies=[Depends(can_write)],
             summary="Give back a claim of a review task")
def release_review_task(ctx: Ctx, task_id: str, body: ReviewerRequest) -> dict[str, Any]:
    return dict(_review(service.release, ctx.store, task_id, body.reviewer))


@router.post("/review/tasks/{task_id}/answer", dependencies=[Depends(can_write)],
             summary="Answer a review task; its run continues at once")
def answer_review_task(ctx: Ctx, task_id: str, body: AnswerRequest) -> dict[str, Any]:
    task, new, job = _act(answer_task, ctx.store, ctx.jobs, ctx.settings, task_id, body.reviewer, body.answer)
    return {"task": task, "answered": new, "job": job.as_dict() if job else None,
            "url": f"/api/jobs/{job.id}" if job else None}


@router.get("/jobs", summary="Runs, retries and resumes started through this server")
def list_jobs(ctx: Ctx) -> list[dict[str, Any]]:
    return [j.as_dict() for j in ctx.jobs.list()]


@router.get("/jobs/{job_id}", summary="One job")
def get_job(ctx: Ctx, job_id: str) -> dict[str, Any]:
    job = ctx.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job.as_dict()


@router.get("/flows", summary="Recorded flows with their versions")
def list_flows(ctx: Ctx) -> list[dict[str, Any]]:
    return data.list_flows(ctx.store)


@router.get("/flows/{name}", summary="One recorded flow version with its definition (the newest by default)")
def get_flow(ctx: Ctx, name: str, version: str | None = None, content_hash: str | None = None) -> dict[str, Any]:
    flow = data.get_flow(ctx.store, name, version, content_hash)
    if flow is None:
        raise HTTPException(404, f"no recorded flow {name}")
    return flow


@router.get("/blocks", summary="Installed plugins, their blocks and manifests, broken plugins")
def list_blocks(ctx: Ctx) -> dict[str, Any]:
    return data.list_blocks(ctx.registry)


@router.get("/blobs/{digest}", summary="A large output value from the blob store", response_class=FileResponse)
def get_blob(ctx: Ctx, digest: str, type: str = "json") -> FileResponse:  # noqa: A002 - the reference's field
    try:
        path = ctx.store.blobs.path(digest)
    except ValueError:
        raise HTTPException(404, "not a blob digest") from None
    if not path.is_file():
        raise HTTPException(404, f"no blob {digest}")
    if type == "json":
        return FileResponse(path, media_type="application/json")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{digest}.bin")
