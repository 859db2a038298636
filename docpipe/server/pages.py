"""The web pages: server-rendered Jinja2 (autoescaped) over the functions the API uses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from docpipe.server import data
from docpipe.server.actions import ActionError, continue_batch, retry_failed_run, server_paths, start_run
from docpipe.server.api import _since, drop_uploads, parse_params, save_uploads
from docpipe.server.app import Context, ctx_of
from docpipe.server.jobs import Job
from docpipe.server.rerun_api import submit_rerun
from docpipe.server.security import COOKIE, check_token, cookie_value, token_ok
from docpipe.service.errors import ServiceError
from docpipe.service.rerun import diff_runs, rerun_of, reruns, step_ids
from docpipe.status import Status


class LoginNeeded(Exception):
    """A page of an exposed server was opened without the token: go to the login form."""


def can_read_page(request: Request) -> None:
    ctx = ctx_of(request)
    if not ctx.reads_public and not token_ok(request, ctx.token):
        query = request.url.query
        raise LoginNeeded(request.url.path + (f"?{query}" if query else ""))


router = APIRouter(dependencies=[Depends(can_read_page)], include_in_schema=False)
public = APIRouter(include_in_schema=False)
Ctx = Annotated[Context, Depends(ctx_of)]
TokenField = Annotated[str | None, Form()]


def render(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    ctx = ctx_of(request)
    values.setdefault("nav", name.split(".")[0])
    values["signed_in"] = token_ok(request, ctx.token)
    values["jobs_active"] = [j for j in ctx.jobs.list() if j.active]
    return ctx.templates.TemplateResponse(request, name, values, status_code=status)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status, message=message, code=status, nav="")


def _authorised(request: Request, ctx: Context, token: str | None) -> HTMLResponse | None:
    """``None`` when the form or the cookie carries the token, else the error page (401/403)."""
    try:
        check_token(request, ctx.token, token)
    except HTTPException as exc:
        return error_page(request, exc.status_code, str(exc.detail))
    return None


def _redirect(url: str, request: Request, ctx: Context, token: str | None) -> Response:
    """303 to ``url``; a token entered in the form is remembered in the cookie."""
    response = RedirectResponse(url, status_code=303)
    if token and token_ok(request, ctx.token, token) and request.cookies.get(COOKIE) != cookie_value(token):
        remember(response, request, token)
    return response


def remember(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, cookie_value(token), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=30 * 86400)


@router.get("/")
def home() -> Response:
    return RedirectResponse("/runs", status_code=303)


@router.get("/runs")
def runs_page(request: Request, ctx: Ctx, status: str = "", flow: str = "", correlation_id: str = "",
              since: str = "", until: str = "", batch: str = "", page: int = 1, job: str = "") -> Response:
    filters = {"status": status, "flow": flow, "correlation_id": correlation_id, "since": since,
               "until": until, "batch": batch}
    try:
        listing = data.list_runs(ctx.store, status=status or None, flow=flow or None, batch_id=batch or None,
                                 correlation_id=correlation_id or None, since=_since(since, "since"),
                                 until=_since(until, "until"), page=page)
    except HTTPException as exc:
        return error_page(request, exc.status_code, str(exc.detail))
    for r in listing["runs"]:
        r["upload"] = data.upload_name(r["document"], ctx.settings.uploads)
    api = {"flow": flow, "batch_id": batch, "correlation_id": correlation_id, "since": since, "until": until,
           "per_page": 1}
    poll = "/api/runs?" + urlencode({k: v for k, v in api.items() if v})
    link = {k: v for k, v in filters.items() if v}
    flows = [f["name"] for f in data.list_flows(ctx.store)]
    return render(request, "runs.html", listing=listing, filters=filters, flows=flows, poll=poll,
                  counts_json=json.dumps(listing["counts"], sort_keys=True), job=ctx.jobs.get(job) if job else None,
                  batch=ctx.store.batch(batch) if batch else None,
                  query=lambda **kw: "?" + urlencode({k: v for k, v in {**link, **kw}.items() if v}))


@router.get("/runs/{run_id}")
def run_page(request: Request, ctx: Ctx, run_id: str, job: str = "") -> Response:
    run = data.get_run(ctx.store, run_id, ctx.registry)
    if run is None:
        return error_page(request, 404, f"no run {run_id}")
    found = ctx.jobs.get(job) if job else None
    active = ctx.jobs.active_on(run["batch_id"])
    probe = Job("retry", run["flow"], batch_id=run["batch_id"], only=[run["document"]])
    retrying = any(probe.repeats(j) for j in active)  # another retry of this run would be refused
    resuming = any(j.kind == "resume" for j in active)
    batch = ctx.store.batch(run["batch_id"])
    upload = data.upload_name(run["document"], ctx.settings.uploads)
    watch = json.dumps([run["status"], run["attempt"], len(run["tasks"])], separators=(",", ":"))
    return render(request, "run.html", nav="runs", run=run, job=found, active=active, retrying=retrying,
                  resuming=resuming, batch=batch, upload=upload, live=bool(active) or run["status"] == Status.RUNNING,
                  watch=watch, steps=step_ids(batch["definition"]) if batch else [],
                  recorded_params=json.dumps((batch or {}).get("params") or {}, ensure_ascii=False),
                  rerun_of=rerun_of(ctx.store, run["id"]), reruns=reruns(ctx.store, run["id"]))


@router.post("/runs/{run_id}/rerun")
def rerun_page(request: Request, ctx: Ctx, run_id: str, token: TokenField = None,
               step: Annotated[str, Form()] = "", params: Annotated[str, Form()] = "") -> Response:
    made: list[str] = []

    def act() -> Job:
        job, rerun = submit_rerun(ctx, run_id, step, parse_params(params))
        made.append(rerun.run_id)
        return job

    return _form_action(request, ctx, token, act, lambda job: f"/runs/{made[0]}?job={job.id}")


@router.get("/runs/{run_a}/diff/{run_b}")
def diff_page(request: Request, ctx: Ctx, run_a: str, run_b: str) -> Response:
    try:
        diff = diff_runs(ctx.store, run_a, run_b)
    except ServiceError as exc:
        return error_page(request, ActionError.of(exc).status, str(exc))
    return render(request, "run_diff.html", nav="runs", diff=diff.as_dict())


def _form_action(request: Request, ctx: Context, token: str | None, act: Callable[[], Job],
                 then: Callable[[Job], str]) -> Response:
    """A form that changes something: check the token, ``act``, redirect to ``then(job)``."""
    denied = _authorised(request, ctx, token)
    if denied:
        return denied
    try:
        job = act()
    except ActionError as exc:
        return error_page(request, exc.status, exc.message)
    except HTTPException as exc:
        return error_page(request, exc.status_code, str(exc.detail))
    return _redirect(then(job), request, ctx, token)


@router.post("/runs/{run_id}/retry")
def retry_page(request: Request, ctx: Ctx, run_id: str, token: TokenField = None) -> Response:
    return _form_action(request, ctx, token, lambda: retry_failed_run(ctx.store, ctx.jobs, ctx.settings, run_id),
                        lambda job: f"/runs/{run_id}?job={job.id}")


@router.post("/batches/{batch_id}/resume")
def resume_page(request: Request, ctx: Ctx, batch_id: str, token: TokenField = None) -> Response:
    return _form_action(request, ctx, token,
                        lambda: continue_batch(ctx.store, ctx.jobs, ctx.settings, batch_id, retry_failed=False),
                        lambda job: f"/runs?batch={batch_id}&job={job.id}")


@router.get("/flows")
def flows_page(request: Request, ctx: Ctx) -> Response:
    return render(request, "flows.html", flows=data.list_flows(ctx.store))


@router.get("/flows/{name}")
def flow_page(request: Request, ctx: Ctx, name: str, version: str = "", content_hash: str = "") -> Response:
    flow = data.get_flow(ctx.store, name, version or None, content_hash or None)
    if flow is None:
        return error_page(request, 404, f"no recorded flow {name}")
    return render(request, "flow.html", nav="flows", flow=flow, svg=data.flow_svg(flow["definition"], ctx.registry),
                  definition=json.dumps(flow["definition"], indent=2, ensure_ascii=False),
                  allow_dirs=ctx.settings.allow_dirs, max_upload=ctx.settings.max_upload)


@router.post("/flows/{name}/start")
def start_page(request: Request, ctx: Ctx, name: str, token: TokenField = None,
               version: Annotated[str, Form()] = "", content_hash: Annotated[str, Form()] = "",
               params: Annotated[str, Form()] = "", correlation_id: Annotated[str, Form()] = "",
               paths: Annotated[str, Form()] = "",
               files: Annotated[list[UploadFile] | None, File()] = None) -> Response:
    def act() -> Job:
        given = parse_params(params)
        specs = [s.strip() for s in paths.splitlines() if s.strip()]
        docs: list[tuple[str, str | None]] = []
        if specs:
            docs = [(p, None) for p in server_paths(specs, ctx.settings.allow_dirs)]
        uploaded = save_uploads(ctx, [f for f in files or [] if f.filename])
        try:
            return start_run(ctx.store, ctx.jobs, ctx.settings, ctx.registry, flow=name, documents=docs + uploaded,
                             version=version or None, content_hash=content_hash or None, params=given,
                             correlation_id=correlation_id or None)
        except BaseException:
            drop_uploads(uploaded)
            raise

    return _form_action(request, ctx, token, act, lambda job: f"/jobs/{job.id}")


@router.get("/jobs/{job_id}")
def job_page(request: Request, ctx: Ctx, job_id: str) -> Response:
    job = ctx.jobs.get(job_id)
    if job is None:
        return error_page(request, 404, f"no job {job_id}")
    return render(request, "job.html", nav="runs", job=job)


@router.get("/blocks")
def blocks_page(request: Request, ctx: Ctx) -> Response:
    return render(request, "blocks.html", blocks=data.list_blocks(ctx.registry))


@public.get("/login")
def login_page(request: Request, next: str = "/runs") -> Response:  # noqa: A002 - the query parameter
    return render(request, "login.html", nav="login", next=_local(next))


@public.post("/login")
def login(request: Request, ctx: Ctx, token: Annotated[str, Form()], next: Annotated[str, Form()] = "/runs",  # noqa: A002
          ) -> Response:
    if not token_ok(request, ctx.token, token):
        return render(request, "login.html", 403, nav="login", next=_local(next), wrong=True)
    response = RedirectResponse(_local(next), status_code=303)
    remember(response, request, token)
    return response


@public.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/runs", status_code=303)
    response.delete_cookie(COOKIE)
    return response


def _local(url: str) -> str:
    """Only paths of this server are followed after a login (no open redirect)."""
    return url if url.startswith("/") and not url.startswith("//") and "\\" not in url else "/runs"
