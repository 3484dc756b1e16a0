"""GET /health and /health/ready."""

from __future__ import annotations

import httpx
from asgi_lifespan import LifespanManager

from app.main import create_app
from tests.conftest import test_settings


async def test_health_says_ok(client):
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_is_200_when_the_database_answers(client):
    response = await client.get("/health/ready")

    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


async def test_ready_is_503_when_the_database_does_not_answer():
    # A PostgreSQL URL on a port where nothing listens: the process is up, the database is not.
    settings = test_settings(database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none")
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/health")).status_code == 200
            response = await client.get("/health/ready")

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unavailable"
