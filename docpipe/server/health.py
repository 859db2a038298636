"""Probes and metrics: ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

* ``/healthz`` — 200 ``{"status": "ok"}`` while the process serves requests (liveness).
* ``/readyz`` — 200 ``{"status": "ready"}`` when the store answers ``SELECT 1`` within
  :data:`STORE_TIMEOUT_S` and the engine is ready (the callback given to
  :meth:`Telemetry.readiness <docpipe.telemetry.Telemetry.readiness>`: the pools it was
  asked to start are up); else 503 ``{"status": "unavailable", "reason": ...}``.
* ``/metrics`` — :meth:`Telemetry.render <docpipe.telemetry.Telemetry.render>` in
  Prometheus' text format.

The probes need no token whatever the server binds (an orchestrator's probe has none and
they tell nothing about the data); ``/metrics`` follows the read rule of the API (open on
loopback, the token otherwise).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from docpipe.server.api import can_read
from docpipe.server.app import Context, ctx_of
from docpipe.telemetry import CONTENT_TYPE

#: How long ``/readyz`` waits for the store's ``SELECT 1``.
STORE_TIMEOUT_S = 2.0

router = APIRouter(tags=["health"])
Ctx = Annotated[Context, Depends(ctx_of)]


@router.get("/healthz", summary="Liveness: 200 while the process serves requests")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the store answers and the engine's pools are up (else 503)",
            responses={503: {"description": "not ready, with the reason"}})
def readyz(ctx: Ctx) -> Any:
    reason = ctx.telemetry.store_problem(STORE_TIMEOUT_S) or ctx.telemetry.not_ready()
    if reason is not None:
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics of this server (text format 0.0.4)",
            dependencies=[Depends(can_read)], response_class=Response)
def metrics(ctx: Ctx) -> Response:
    return Response(ctx.telemetry.render(), media_type=CONTENT_TYPE)
