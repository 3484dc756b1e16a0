"""Shared test setup: a fresh app and database per test, and small HTTP helpers."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import make_url

from app.config import Settings
from app.main import create_app
from app.migrate import upgrade_blocking, upgrade_to_head
from tests.databases import create_postgres_database, drop_postgres_database

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
DEFAULT_PASSWORD = "correct-horse-battery"
TEST_SECRET = "test-secret-key-that-is-long-enough-for-hs256!"


def test_settings(**overrides: Any) -> Settings:
    """Settings for tests: the cheapest Argon2 cost (a few ms a hash), no environment."""
    values: dict[str, Any] = {
        "environment": "test",
        "secret_key": TEST_SECRET,
        "migrate_on_start": False,
        "password_hash_memory_kib": 1024,
        "password_hash_time_cost": 1,
        "password_hash_parallelism": 1,
        "password_hash_threads": 2,
        # Threads start at once; a test of many apps would spend its time starting processes.
        # tests/test_hash_processes.py tests the production default.
        "password_hash_pool": "threads",
        # Audit lines as JSON, so tests can parse them (the service's default is text).
        "log_format": "json",
        **overrides,
    }
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]  # pydantic-settings init kwarg
    if "mail_outbox_dir" not in overrides and settings.data_dir == Path("data"):
        # A server database's service keeps its files in ./data: its mails would pile up,
        # with their links, in the checkout that `make run` serves from. A folder of its own.
        outbox = Path(tempfile.mkdtemp(prefix="passgate-test-outbox-"))
        atexit.register(shutil.rmtree, outbox, ignore_errors=True)
        settings = settings.model_copy(update={"mail_outbox_dir": outbox})
    return settings


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test, when imported


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database migrated to head per run; each test gets a copy, which is much cheaper."""
    if TEST_DATABASE_URL is None:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('template') / 'template.db'}"
        upgrade_blocking(url)
        yield url
        return
    url = asyncio.run(create_postgres_database(TEST_DATABASE_URL))
    try:
        upgrade_blocking(url)
        yield url
    finally:
        asyncio.run(drop_postgres_database(TEST_DATABASE_URL, url))


@pytest.fixture
async def empty_database_url(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database with no tables: a SQLite file, or a new PostgreSQL database."""
    if TEST_DATABASE_URL is None:
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    url = await create_postgres_database(TEST_DATABASE_URL)
    try:
        yield url
    finally:
        await drop_postgres_database(TEST_DATABASE_URL, url)


@pytest.fixture
async def database_url(migrated_template: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database of this test's own, already migrated to the latest schema."""
    if TEST_DATABASE_URL is None:
        path = tmp_path / "passgate.db"
        shutil.copyfile(make_url(migrated_template).database, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url = await create_postgres_database(
        TEST_DATABASE_URL, template=make_url(migrated_template).database
    )
    try:
        yield url
    finally:
        await drop_postgres_database(TEST_DATABASE_URL, url)


async def create_schema(app: FastAPI) -> None:
    """Bring an app's database to the latest schema the way the service does (idempotent)."""
    await upgrade_to_head(app.state.settings.database_url)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return test_settings(database_url=database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):  # ASGITransport alone never runs the lifespan
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signup(
    client: httpx.AsyncClient,
    *,
    email: str | None = None,
    name: str = "Ada Lovelace",
    password: str = DEFAULT_PASSWORD,
) -> httpx.Response:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    return await client.post("/signup", json={"name": name, "email": email, "password": password})


async def login(
    client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD
) -> httpx.Response:
    return await client.post(
        "/token", data={"grant_type": "password", "username": email, "password": password}
    )


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


async def new_user(
    client: httpx.AsyncClient, *, email: str | None = None, password: str = DEFAULT_PASSWORD
) -> dict[str, Any]:
    """Sign up and log in; the user's body plus its tokens."""
    response = await signup(client, email=email, password=password)
    assert response.status_code == 201, response.text
    user = response.json()
    tokens = (await login(client, user["email"], password)).json()
    return {**user, "password": password, **tokens}


@pytest.fixture
def pg_only() -> Iterator[None]:
    if TEST_DATABASE_URL is None:
        pytest.skip("needs TEST_DATABASE_URL (a PostgreSQL server)")
    yield


@pytest.fixture
def mail_server() -> Iterator[Any]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd), capturing what the service sends."""
    from tests.mail import MailServer

    server = MailServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
