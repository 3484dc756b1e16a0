"""Password hashing: Argon2id, upgraded on login, and never on the event loop."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.models import User
from app.security import Passwords
from tests.conftest import login, new_user, test_settings


async def stored_hash(app, user_id: str) -> str:
    async with app.state.sessionmaker() as session:
        return (await session.get(User, uuid.UUID(user_id))).password_hash


async def test_passwords_are_stored_as_argon2id(client, app):
    user = await new_user(client)

    assert (await stored_hash(app, user["id"])).startswith("$argon2id$")


def test_the_default_parameters_meet_owasp_minimums():
    settings = test_settings().model_copy(
        update={
            "password_hash_memory_kib": 19_456,
            "password_hash_time_cost": 2,
            "password_hash_parallelism": 1,
        }
    )
    defaults = type(settings).model_fields
    assert defaults["password_hash_memory_kib"].default >= 19_456
    assert defaults["password_hash_time_cost"].default >= 2
    assert defaults["password_hash_parallelism"].default >= 1
    passwords = Passwords.from_settings(settings)
    assert "$m=19456,t=2,p=1$" in passwords.hash_blocking("some password")


async def test_a_login_upgrades_a_hash_made_with_older_parameters(database_url):
    async def run(memory_kib: int, action):
        app = create_app(
            test_settings(database_url=database_url, password_hash_memory_kib=memory_kib)
        )
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await action(app, client)

    user = await run(1024, lambda app, client: new_user(client))

    async def log_in_and_read_hash(app, client):
        assert (await login(client, user["email"])).status_code == 200
        return await stored_hash(app, user["id"])

    upgraded = await run(2048, log_in_and_read_hash)
    assert "$m=2048," in upgraded
    again = await run(2048, lambda app, client: login(client, user["email"]))
    assert again.status_code == 200


async def test_other_requests_are_served_while_a_password_is_hashed(database_url):
    # A deliberately slow hash. Were it computed on the event loop, the loop could never see
    # it in progress, let alone answer /health meanwhile. Order is checked, not time.
    settings = test_settings(
        database_url=database_url, password_hash_memory_kib=65_536, password_hash_time_cost=3
    )
    app = create_app(settings)
    async with LifespanManager(app):
        passwords = app.state.passwords
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            user = await new_user(client)
            logging_in = asyncio.create_task(login(client, user["email"]))
            while passwords.in_progress == 0 and not logging_in.done():  # noqa: ASYNC110 - polls a counter another thread sets
                await asyncio.sleep(0.001)
            seen_hashing = passwords.in_progress == 1
            health = await client.get("/health")
            still_hashing = passwords.in_progress == 1
            result = await logging_in

    assert seen_hashing, "the event loop never ran while the password was being hashed"
    assert health.status_code == 200
    assert still_hashing, "/health had to wait for the hash"
    assert result.status_code == 200
