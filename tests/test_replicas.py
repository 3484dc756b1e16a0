"""Several real service processes over one PostgreSQL database behave as one service."""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.migrate import alembic_config
from tests.conftest import (
    DEFAULT_PASSWORD,
    TEST_DATABASE_URL,
    bearer,
    login,
    new_user,
    refresh,
)
from tests.databases import create_postgres_database, drop_postgres_database
from tests.keyfiles import new_private_pem, write
from tests.processes import ServiceProcess, running_services, service_environment

pytestmark = pytest.mark.skipif(
    TEST_DATABASE_URL is None, reason="needs TEST_DATABASE_URL (a PostgreSQL server)"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")


@pytest.fixture(scope="module")
def replicas_database() -> Iterator[str]:
    assert TEST_DATABASE_URL is not None
    url = asyncio.run(create_postgres_database(TEST_DATABASE_URL))
    try:
        yield url
    finally:
        asyncio.run(drop_postgres_database(TEST_DATABASE_URL, url))


def replica_environment(database_url: str, workdir: Path) -> dict[str, str]:
    """Settings every replica shares: the database, the signing key and Redis where there is one."""
    key = write(workdir / "signing.pem", new_private_pem("ES256"))
    values = {
        "DATABASE_URL": database_url,
        "JWT_ALGORITHM": "ES256",
        "JWT_PRIVATE_KEY_FILE": str(key),
    }
    if TEST_REDIS_URL:
        values["REDIS_URL"] = TEST_REDIS_URL
    return service_environment(**values)


@pytest.fixture(scope="module")
def replicas_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replicas")


@pytest.fixture(scope="module")
def replicas_environment(replicas_database: str, replicas_workdir: Path) -> dict[str, str]:
    return replica_environment(replicas_database, replicas_workdir)


@pytest.fixture(scope="module")
def two_replicas(
    replicas_environment: dict[str, str], replicas_workdir: Path
) -> Iterator[list[ServiceProcess]]:
    with running_services(2, replicas_environment, replicas_workdir) as services:
        yield services


@pytest.fixture
async def clients(
    two_replicas: list[ServiceProcess],
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """One HTTP client per replica: `a` and `b`."""
    async with (
        httpx.AsyncClient(base_url=two_replicas[0].url, timeout=30) as a,
        httpx.AsyncClient(base_url=two_replicas[1].url, timeout=30) as b,
    ):
        yield a, b


async def test_a_token_issued_by_one_replica_is_accepted_by_the_other(clients) -> None:
    a, b = clients
    user = await new_user(a)

    response = await b.get("/users/me", headers=bearer(user["access_token"]))

    assert response.status_code == 200
    assert response.json()["id"] == user["id"]


async def test_both_replicas_publish_the_same_keys(clients) -> None:
    a, b = clients
    jwks_a = (await a.get("/.well-known/jwks.json")).json()
    jwks_b = (await b.get("/.well-known/jwks.json")).json()
    assert jwks_a == jwks_b
    assert len(jwks_a["keys"]) == 1


async def test_a_refresh_token_from_one_replica_renews_on_the_other(clients) -> None:
    a, b = clients
    user = await new_user(a)

    response = await refresh(b, user["refresh_token"])

    assert response.status_code == 200
    assert (
        await a.get("/users/me", headers=bearer(response.json()["access_token"]))
    ).status_code == 200


async def test_logout_on_one_replica_ends_the_session_on_the_other(clients) -> None:
    a, b = clients
    user = await new_user(a)
    assert (await b.get("/users/me", headers=bearer(user["access_token"]))).status_code == 200

    assert (await a.post("/logout", headers=bearer(user["access_token"]))).status_code == 204

    assert (await b.get("/users/me", headers=bearer(user["access_token"]))).status_code == 401
    assert (await refresh(b, user["refresh_token"])).status_code == 400


async def test_a_password_change_on_one_replica_ends_sessions_on_the_other(clients) -> None:
    a, b = clients
    user = await new_user(a)
    other_login = (await login(b, user["email"])).json()

    response = await a.post(
        "/users/me/password",
        json={"current_password": user["password"], "new_password": "a-brand-new-passphrase"},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 204
    assert (
        await b.get("/users/me", headers=bearer(other_login["access_token"]))
    ).status_code == 401
    assert (await refresh(b, other_login["refresh_token"])).status_code == 400
    assert (await login(b, user["email"], "a-brand-new-passphrase")).status_code == 200


async def _create_admin(environment: dict[str, str], email: str, password: str) -> None:
    """The first admin comes from the command line, as API.md has it."""
    await anyio.run_process(
        [sys.executable, "-m", "app", "create-admin", "--email", email],
        env={**environment, "ADMIN_PASSWORD": password},
    )


async def test_deactivation_on_one_replica_takes_effect_on_the_other(
    clients, replicas_environment: dict[str, str]
) -> None:
    a, b = clients
    await _create_admin(replicas_environment, "root@example.com", DEFAULT_PASSWORD)
    admin = (await login(a, "root@example.com")).json()
    target = await new_user(b)

    response = await a.patch(
        f"/users/{target['id']}", json={"is_active": False}, headers=bearer(admin["access_token"])
    )

    assert response.status_code == 200
    assert (await b.get("/users/me", headers=bearer(target["access_token"]))).status_code == 401
    assert (await refresh(b, target["refresh_token"])).status_code == 400
    assert (await login(b, target["email"])).status_code == 400


async def test_refresh_token_reuse_on_one_replica_revokes_the_login_on_the_other(clients) -> None:
    a, b = clients
    user = await new_user(a)
    renewed = (await refresh(a, user["refresh_token"])).json()

    reuse = await refresh(b, user["refresh_token"])

    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert (await a.get("/users/me", headers=bearer(renewed["access_token"]))).status_code == 401
    assert (await refresh(a, renewed["refresh_token"])).status_code == 400


def _alembic_versions(database_url: str) -> list[str]:
    async def query() -> list[str]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
                return [row[0] for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(query())


def test_three_replicas_starting_together_on_an_empty_database_agree_on_one_schema(
    replicas_database: str, tmp_path: Path
) -> None:
    # A database of its own: the module's replicas have already migrated theirs.
    assert TEST_DATABASE_URL is not None
    database_url = asyncio.run(create_postgres_database(TEST_DATABASE_URL))
    try:
        environment = replica_environment(database_url, tmp_path)
        with running_services(3, environment, tmp_path) as services:
            for service in services:
                assert httpx.get(f"{service.url}/health/ready", timeout=5).status_code == 200
            signup = httpx.post(
                f"{services[2].url}/signup",
                json={
                    "name": "Ada",
                    "email": "ada@example.com",
                    "password": "correct-horse-battery",
                },
                timeout=30,
            )
            assert signup.status_code == 201
        head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
        assert _alembic_versions(database_url) == [head]
    finally:
        asyncio.run(drop_postgres_database(TEST_DATABASE_URL, database_url))


def _migrate_after(barrier: Any, database_url: str) -> None:
    from app.migrate import upgrade_blocking

    barrier.wait(timeout=60)  # every process has imported everything: now race
    upgrade_blocking(database_url)


def test_migrations_started_at_the_same_instant_take_turns(tmp_path: Path) -> None:
    # Service start-up jitter (imports take seconds) hides most races; this one is deliberate.
    assert TEST_DATABASE_URL is not None
    database_url = asyncio.run(create_postgres_database(TEST_DATABASE_URL))
    try:
        spawn = multiprocessing.get_context("spawn")
        barrier = spawn.Barrier(3)
        workers = [
            spawn.Process(target=_migrate_after, args=(barrier, database_url)) for _ in range(3)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=90)
        assert [worker.exitcode for worker in workers] == [0, 0, 0]
        head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
        assert _alembic_versions(database_url) == [head]
    finally:
        asyncio.run(drop_postgres_database(TEST_DATABASE_URL, database_url))


THROTTLE_LIMIT = 3


@pytest.fixture
def throttled_replicas(replicas_database: str, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    """Two replicas with a small login limit, counting in Redis under a prefix of their own."""
    if importlib.util.find_spec("app.ratelimit") is None:
        pytest.skip("the login throttle (app/ratelimit.py) is not in this tree yet")
    if not TEST_REDIS_URL:
        pytest.skip("needs TEST_REDIS_URL (a Redis server)")
    environment = {
        **replica_environment(replicas_database, tmp_path),
        "LOGIN_RATE_LIMIT": f"{THROTTLE_LIMIT}/minute",
        "REDIS_KEY_PREFIX": f"passgate-test-{uuid.uuid4().hex}",
    }
    with running_services(2, environment, tmp_path) as services:
        yield services


async def test_the_login_throttle_counts_failures_on_every_replica(
    throttled_replicas: list[ServiceProcess],
) -> None:
    async with (
        httpx.AsyncClient(base_url=throttled_replicas[0].url, timeout=30) as a,
        httpx.AsyncClient(base_url=throttled_replicas[1].url, timeout=30) as b,
    ):
        user = await new_user(a)
        failures = [
            await login(replica, user["email"], "not-the-password")
            for replica in (a, b, a)[:THROTTLE_LIMIT]
        ]
        over_the_limit = await login(b, user["email"], "not-the-password")

    assert [response.status_code for response in failures] == [400] * THROTTLE_LIMIT
    assert over_the_limit.status_code == 429
    assert int(over_the_limit.headers["retry-after"]) > 0
