"""Rerun from a step and runs diff over HTTP (docs/rerun.md): ``POST /api/runs/{id}/rerun``
and ``GET /api/runs/{a}/diff/{b}``, and :func:`submit_rerun`, which the run page's
"Rerun from…" form shares.

A rerun is made ready at once by the service (:func:`docpipe.service.rerun.prepare_rerun`:
its new batch, its run and the copied task records are in the store when the request
returns, so the new run's page opens at once); what is left is an ordinary resume of that
batch, queued as a ``resume`` job like the run page's "Resume batch".
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from docpipe.errors import FlowError
from docpipe.server.actions import ActionError
from docpipe.server.api import can_read, can_write
from docpipe.server.app import Context, ctx_of
from docpipe.server.jobs import Job
from docpipe.service.errors import ServiceError
from docpipe.service.rerun import Rerun, diff_runs, prepare_rerun

router = APIRouter(prefix="/api", dependencies=[Depends(can_read)])
Ctx = Annotated[Context, Depends(ctx_of)]


def submit_rerun(ctx: Context, run_id: str, step: str, params: dict[str, Any] | None = None) -> tuple[Job, Rerun]:
    """Make run ``run_id``'s rerun from ``step`` ready and queue the resume that carries it
    out; refusals as :class:`~docpipe.server.actions.ActionError` (404 unknown run or step,
    409 a run still running or a document gone, 422 a recorded flow that no longer plans)."""
    try:
        rerun = prepare_rerun(ctx.store, run_id, step, ctx.registry, params, argv=("docpipe", "serve"))
    except ServiceError as exc:
        raise ActionError.of(exc) from None
    except FlowError as exc:
        raise ActionError(422, "; ".join([exc.args[0].splitlines()[0], *map(str, exc.issues)])) from None
    job = Job("resume", rerun.batch.plan.name, batch_id=rerun.batch_id, documents=1)
    return ctx.jobs.submit(job, {}, params or {}), rerun


class RerunRequest(BaseModel):
    step: str = Field(description="The step to run again; every step that depends on it runs again too")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Params overlaying the run's batch's (and its secrets, given again)")


@router.post("/runs/{run_id}/rerun", status_code=202, dependencies=[Depends(can_write)],
             summary="Rerun a run from a step as a new attempt (a new batch), keeping the earlier one")
def rerun_run(ctx: Ctx, run_id: str, body: RerunRequest) -> dict[str, Any]:
    try:
        job, rerun = submit_rerun(ctx, run_id, body.step, body.params)
    except ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return {"job": job.as_dict(), "url": f"/api/jobs/{job.id}", "run_id": rerun.run_id, "rerun_of": rerun.of,
            "batch_id": rerun.batch_id, "again": rerun.again, "copied": rerun.copied}


@router.get("/runs/{run_a}/diff/{run_b}", summary="What differs between two runs or attempts (values shortened)")
def diff(ctx: Ctx, run_a: str, run_b: str) -> dict[str, Any]:
    try:
        return diff_runs(ctx.store, run_a, run_b).as_dict()
    except ServiceError as exc:
        raise HTTPException(ActionError.of(exc).status, str(exc)) from None
