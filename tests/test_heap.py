"""The collector leaves start-up's objects alone while the service runs (app/heap.py)."""

from __future__ import annotations

import gc

import httpx
from asgi_lifespan import LifespanManager
from fastapi.dependencies.models import Dependant

from app.config import Settings
from app.main import create_app


def collector_sees(target: object) -> bool:
    """Whether a collection of the oldest generation would scan `target`."""
    return any(candidate is target for candidate in gc.get_objects())


async def test_startup_objects_frozen_while_serving_and_released_at_shutdown(
    settings: Settings,
) -> None:
    gc.unfreeze()
    application = create_app(settings)
    async with LifespanManager(application):
        built_at_startup = application.state.passwords
        assert gc.get_freeze_count() > 0
        assert not collector_sees(built_at_startup)
        frozen = gc.get_freeze_count()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://test"
        ) as client:
            response = await client.get("/health")
            assert response.status_code == 200
        # What requests make is collected as usual, never frozen (frozen objects that
        # reference counting frees leave the count).
        assert gc.get_freeze_count() <= frozen
        assert collector_sees(response.json())
        # FastAPI builds routes at the first request that reaches them: here, at start-up,
        # so their dependency graphs are among the frozen objects.
        assert not any(isinstance(candidate, Dependant) for candidate in gc.get_objects())
    assert gc.get_freeze_count() == 0
    assert collector_sees(built_at_startup)
