"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.ratelimit import RATE_LIMIT_DEGRADED
from app.schemas import HealthOut

router = APIRouter(tags=["health"])

# A readiness probe must answer quickly even when the database hangs rather than refuses.
READINESS_TIMEOUT_SECONDS = 2.0


@router.get("/health", response_model=HealthOut)
async def health() -> HealthOut:
    """200 while the process is up."""
    return HealthOut(status="ok")


@router.get(
    "/health/ready",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "The database does not answer"}},
)
async def ready(request: Request) -> JSONResponse:
    """200 when the database answers, 503 when it does not.

    `checks.rate_limit` is "ok" (shared through Redis), "per-process" (no REDIS_URL), or
    "degraded: per-process fallback" (Redis configured but not answering; status "degraded").
    """
    checks = {"database": "ok"}
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError):
        checks["database"] = "unavailable"
    # Without Redis the service still throttles, per process (app/ratelimit.py): it stays in
    # rotation, 200 with a visible "degraded", since taking every replica out of a load
    # balancer because of Redis would turn a weaker limit into an outage.
    checks["rate_limit"] = await request.app.state.throttle.check()
    database_up = checks["database"] == "ok"
    degraded = checks["rate_limit"] == RATE_LIMIT_DEGRADED
    body = HealthOut(
        status="unavailable" if not database_up else "degraded" if degraded else "ok",
        checks=checks,
    )
    return JSONResponse(
        body.model_dump(),
        status_code=status.HTTP_200_OK if database_up else status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Cache-Control": "no-store"},
    )
