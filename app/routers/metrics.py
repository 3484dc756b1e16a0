"""GET /metrics: Prometheus' text format, for the METRICS_TOKEN bearer only."""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import SQLAlchemyError

from app import metrics
from app.deps import MetricsScraper
from app.services.mail import update_outbox_gauge

logger = logging.getLogger("passgate.metrics")

router = APIRouter()


# Not in the OpenAPI document: an operator's endpoint, off by default, and 404 while it is.
@router.get("/metrics", include_in_schema=False, dependencies=[MetricsScraper])
async def scrape(request: Request) -> Response:
    """Every worker's counters, summed (app.metrics)."""
    try:
        await update_outbox_gauge(request.app.state.transactions)
    except (SQLAlchemyError, OSError) as exc:
        # Metrics matter most while the database is away: serve them, with the last reading.
        logger.warning("metrics: outbox not counted, database unavailable: %s", type(exc).__name__)
    # Reading every worker's files is disk I/O: off the event loop.
    body, media_type = await anyio.to_thread.run_sync(metrics.render)
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-store"})
