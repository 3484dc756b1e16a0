"""GET /metrics: Prometheus' text format, for the METRICS_TOKEN bearer only."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response

from app import metrics
from app.deps import MetricsScraper

router = APIRouter()


# Not in the OpenAPI document: an operator's endpoint, off by default, and 404 while it is.
@router.get("/metrics", include_in_schema=False, dependencies=[MetricsScraper])
async def scrape() -> Response:
    """Every worker's counters, summed (app.metrics)."""
    # Reading every worker's files is disk I/O: off the event loop.
    body, media_type = await anyio.to_thread.run_sync(metrics.render)
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-store"})
