"""Rate limits shared through Redis, and what happens when Redis is away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.main import create_app
from app.ratelimit import RATE_LIMIT_DEGRADED
from tests.conftest import create_schema, login, new_user
from tests.conftest import test_settings as make_settings

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")
LIMIT = 3


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    if TEST_REDIS_URL is None:
        pytest.skip("needs TEST_REDIS_URL (a Redis server)")
    yield TEST_REDIS_URL


@pytest.fixture
async def key_prefix(redis_url: str) -> AsyncIterator[str]:
    """A prefix of this test's own, so runs sharing one Redis never see each other's counts."""
    prefix = f"passgate-test-{uuid.uuid4().hex}"
    yield prefix
    client = redis.asyncio.Redis.from_url(redis_url)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


@contextlib.asynccontextmanager
async def running_app(database_url: str, **overrides: object) -> AsyncIterator[FastAPI]:
    app = create_app(
        make_settings(database_url=database_url, login_rate_limit=f"{LIMIT}/minute", **overrides)
    )
    async with LifespanManager(app):
        yield app


@contextlib.asynccontextmanager
async def client_for(app: FastAPI, address: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_two_instances_sharing_redis_enforce_one_limit(database_url, redis_url, key_prefix):
    shared = {"redis_url": redis_url, "redis_key_prefix": key_prefix}
    async with (
        running_app(database_url, **shared) as first,
        running_app(database_url, **shared) as second,
    ):
        await create_schema(first)
        async with client_for(first) as one, client_for(second) as two:
            user = await new_user(one)
            for client in (one, two, one):
                assert (await login(client, user["email"], "wrong-password")).status_code == 400
            for client in (two, one):
                response = await login(client, user["email"], "wrong-password")
                assert response.status_code == 429
                assert "Retry-After" in response.headers
            ready = (await two.get("/health/ready")).json()
            assert ready["checks"]["rate_limit"] == "ok"


async def test_a_success_on_one_instance_resets_the_count_on_the_other(
    database_url, redis_url, key_prefix
):
    shared = {"redis_url": redis_url, "redis_key_prefix": key_prefix}
    async with (
        running_app(database_url, **shared) as first,
        running_app(database_url, **shared) as second,
    ):
        await create_schema(first)
        async with client_for(first) as one, client_for(second, "10.0.0.2") as two:
            user = await new_user(one)
            for _ in range(LIMIT - 1):
                await login(one, user["email"], "wrong-password")
            assert (await login(two, user["email"])).status_code == 200
            async with client_for(first, "10.0.0.3") as three:
                for _ in range(LIMIT):
                    response = await login(three, user["email"], "wrong-password")
                    assert response.status_code == 400


async def test_with_redis_at_a_closed_port_logins_are_answered_and_still_limited(
    database_url, caplog
):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    async with running_app(database_url, redis_url=url) as app:
        await create_schema(app)
        async with client_for(app) as client:
            with caplog.at_level(logging.WARNING, logger="passgate.ratelimit"):
                user = await new_user(client)
                for _ in range(LIMIT - 1):
                    await login(client, user["email"], "wrong-password")
                assert (await login(client, user["email"], "wrong-password")).status_code == 400
                # Per-process counting took over: neither fail-open nor fail-closed.
                assert (await login(client, user["email"], "wrong-password")).status_code == 429
            assert any("does not answer" in record.message for record in caplog.records)
            response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["rate_limit"] == RATE_LIMIT_DEGRADED


async def test_a_redis_that_never_answers_does_not_hold_up_logins(database_url):
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()  # accept, read everything, answer nothing
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, running_app(database_url, redis_url=f"redis://127.0.0.1:{port}/0") as app:
        await create_schema(app)
        async with client_for(app) as client:
            # A hang guard for the test run, not a measurement: the limiter gives up on Redis
            # after about a second.
            async with asyncio.timeout(30):
                user = await new_user(client)
                response = await login(client, user["email"], "wrong-password")
                ready = await client.get("/health/ready")
    assert response.status_code == 400
    assert ready.json()["checks"]["rate_limit"] == RATE_LIMIT_DEGRADED


class RedisLink:
    """A TCP relay to the real Redis that the test can cut and restore."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 6379
        self.path = parts.path
        self.port = closed_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self.path}"

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()

    async def _relay(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        redis_reader, redis_writer = await asyncio.open_connection(
            self.target_host, self.target_port
        )
        self.writers.update((client_writer, redis_writer))

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pipe(client_reader, redis_writer), pipe(redis_reader, client_writer))
        self.writers.difference_update((client_writer, redis_writer))


async def test_limits_are_shared_again_when_redis_comes_back(database_url, redis_url, key_prefix):
    link = RedisLink(redis_url)
    await link.up()
    async with running_app(database_url, redis_url=link.url, redis_key_prefix=key_prefix) as app:
        await create_schema(app)
        async with client_for(app) as client:
            assert (await client.get("/health/ready")).json()["checks"]["rate_limit"] == "ok"
            await link.down()
            ready = await client.get("/health/ready")
            assert ready.json()["checks"]["rate_limit"] == RATE_LIMIT_DEGRADED
            await link.up()
            ready = await client.get("/health/ready")
            assert ready.json()["checks"]["rate_limit"] == "ok"
            # Counting is back in Redis, where another process can see it.
            await login(client, "someone@example.com", "wrong-password")
    await link.down()
    counts = redis.asyncio.Redis.from_url(redis_url)
    keys = [key async for key in counts.scan_iter(match=f"{key_prefix}*")]
    await counts.aclose()
    assert keys
