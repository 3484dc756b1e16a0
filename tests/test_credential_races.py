"""No login outlives the event that ended it: real requests raced against password changes,
deactivations and each other (app/services/credentials.py), on SQLite and PostgreSQL.

A login reads the user, then waits for a hashing thread and verifies: with more logins in
flight than hashing threads, most of them are between their read and their write at any
moment, which is the window these tests aim the password change or deactivation at.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from app import commands
from app.config import Settings
from app.db import utcnow
from app.services import credentials, tokens, users
from app.transactions import _CoreStatements
from tests.conftest import (
    DEFAULT_PASSWORD,
    bearer,
    login,
    new_user,
    refresh,
    test_settings,
)

NEW_PASSWORD = "a-brand-new-passphrase"
LOGINS_IN_FLIGHT = 8


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The throttle would answer most of these logins with 429 and hide the race.
    return test_settings(database_url=database_url, login_rate_limit="100000/minute")


class LoginLoop:
    """Logins with one password, LOGINS_IN_FLIGHT at a time, until stopped; keeps every pair."""

    def __init__(self, client: httpx.AsyncClient, email: str, password: str) -> None:
        self._client, self._email, self._password = client, email, password
        self._stop = asyncio.Event()
        self._under_way = asyncio.Event()
        self.issued: list[dict[str, str]] = []
        self.refused = 0

    async def _loop(self) -> None:
        while not self._stop.is_set():
            response = await login(self._client, self._email, self._password)
            if response.status_code == 200:
                self.issued.append(response.json())
                if len(self.issued) >= LOGINS_IN_FLIGHT:
                    self._under_way.set()
            else:
                assert response.status_code == 400, response.text
                self.refused += 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoginLoop]:
        tasks = [asyncio.create_task(self._loop()) for _ in range(LOGINS_IN_FLIGHT)]
        try:
            await self._under_way.wait()
            yield self
        finally:
            # Every login started so far finishes (and is kept) before the checks run.
            self._stop.set()
            await asyncio.gather(*tasks)


async def working(client: httpx.AsyncClient, issued: list[dict[str, str]]) -> list[str]:
    """Which of these pairs still let their holder in, by access or by refresh token."""
    alive = []
    for pair in issued:
        if (await client.get("/users/me", headers=bearer(pair["access_token"]))).status_code != 401:
            alive.append("access token")
        if (await refresh(client, pair["refresh_token"])).status_code != 400:
            alive.append("refresh token")
    return alive


async def admin_token(client: httpx.AsyncClient, database_url: str) -> str:
    await commands.create_admin(
        test_settings(database_url=database_url),
        email="root@example.com",
        name="Root",
        read_password=lambda: DEFAULT_PASSWORD,
    )
    return (await login(client, "root@example.com")).json()["access_token"]


async def change_password(
    client: httpx.AsyncClient, access_token: str, current: str, new: str
) -> httpx.Response:
    return await client.post(
        "/users/me/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(access_token),
    )


async def test_no_login_with_the_old_password_survives_the_change(client):
    user = await new_user(client)

    async with LoginLoop(client, user["email"], DEFAULT_PASSWORD).running() as logins:
        changed = await change_password(
            client, user["access_token"], DEFAULT_PASSWORD, NEW_PASSWORD
        )
        assert changed.status_code == 204
        # Logins still in flight now read the user before the change committed.

    assert logins.issued and logins.refused, "the change must land while logins run"
    assert await working(client, logins.issued) == []
    assert (await login(client, user["email"], DEFAULT_PASSWORD)).status_code == 400
    assert (await login(client, user["email"], NEW_PASSWORD)).status_code == 200


async def test_no_login_in_flight_survives_a_deactivation_and_reactivation(client, database_url):
    user = await new_user(client)
    admin = await admin_token(client, database_url)

    async with LoginLoop(client, user["email"], DEFAULT_PASSWORD).running() as logins:
        off = await client.patch(
            f"/users/{user['id']}", json={"is_active": False}, headers=bearer(admin)
        )
        assert off.status_code == 200
    on = await client.patch(f"/users/{user['id']}", json={"is_active": True}, headers=bearer(admin))
    assert on.status_code == 200

    assert logins.issued and logins.refused, "the deactivation must land while logins run"
    assert await working(client, logins.issued) == []
    assert (await login(client, user["email"])).status_code == 200  # reactivated for real


async def test_two_changes_from_the_same_current_password_one_wins(client):
    raced = 0
    for _ in range(5):  # each round is one race; one round proves little
        user = await new_user(client)

        answers = await asyncio.gather(
            change_password(client, user["access_token"], DEFAULT_PASSWORD, NEW_PASSWORD),
            change_password(client, user["access_token"], DEFAULT_PASSWORD, "another-passphrase"),
        )

        codes = [answer.status_code for answer in answers]
        # The loser is refused: the current password it proved is no longer current (400), or
        # its access token already ended with the winner's change (401) if it came that late.
        assert sorted(codes)[0] == 204 and sorted(codes)[1] in (400, 401), codes
        raced += 400 in codes
        winner = NEW_PASSWORD if codes[0] == 204 else "another-passphrase"
        loser = "another-passphrase" if winner == NEW_PASSWORD else NEW_PASSWORD
        assert (await login(client, user["email"], winner)).status_code == 200
        assert (await login(client, user["email"], loser)).status_code == 400
        assert (await login(client, user["email"], DEFAULT_PASSWORD)).status_code == 400
    assert raced, "no round had both changes past the bearer check"


async def test_no_refresh_in_flight_survives_a_password_change(client):
    user = await new_user(client)
    pairs = [(await login(client, user["email"])).json() for _ in range(LOGINS_IN_FLIGHT)]
    renewed: list[dict[str, str]] = []
    stop, under_way = asyncio.Event(), asyncio.Event()

    async def keep_refreshing(pair: dict[str, str]) -> None:
        token = pair["refresh_token"]
        while not stop.is_set():
            response = await refresh(client, token)
            if response.status_code != 200:
                return
            renewed.append(response.json())
            if len(renewed) >= LOGINS_IN_FLIGHT:
                under_way.set()
            token = response.json()["refresh_token"]

    tasks = [asyncio.create_task(keep_refreshing(pair)) for pair in pairs]
    await under_way.wait()
    changed = await change_password(client, user["access_token"], DEFAULT_PASSWORD, NEW_PASSWORD)
    stop.set()
    await asyncio.gather(*tasks)

    assert changed.status_code == 204
    assert await working(client, pairs + renewed) == []


async def test_a_rehash_does_not_bring_back_a_changed_password(client, app):
    # A login that verified the old password and found its hash weak must not store a new hash
    # of the old password over the new one: the rehash is conditional on the stamp too.
    user = await new_user(client)
    account = await users.get_user_by_email(app.state.transactions, user["email"])
    changed = await change_password(client, user["access_token"], DEFAULT_PASSWORD, NEW_PASSWORD)
    assert changed.status_code == 204
    old_rehash = app.state.passwords.hash_blocking(DEFAULT_PASSWORD)

    stored = await app.state.transactions.write(
        lambda statements: credentials.store_rehash(
            statements,
            user_id=account.id,
            verified_version=account.credentials_version,
            new_hash=old_rehash,
        )
    )

    assert stored is False
    assert (await login(client, user["email"], DEFAULT_PASSWORD)).status_code == 400
    assert (await login(client, user["email"], NEW_PASSWORD)).status_code == 200


def opening(user_id: uuid.UUID, verified_version: int, family_id: uuid.UUID):
    now = utcnow()
    family = tokens.family_row(
        family_id=family_id,
        user_id=user_id,
        context=tokens.LoginContext(ip=None, user_agent=None),
        now=now,
        expires_at=now + dt.timedelta(hours=1),
    )
    return lambda statements: credentials.open_family(
        statements, family=family, verified_version=verified_version
    )


def changing(user_id: uuid.UUID, verified_version: int):
    return lambda statements: credentials.change_credentials(
        statements,
        user_id=user_id,
        verified_version=verified_version,
        values={"password_hash": "$argon2id$replaced"},
        now=utcnow(),
    )


async def family_revoked(app, family_id: uuid.UUID) -> bool | None:
    async with app.state.engine.connect() as reading:
        row = (
            await reading.execute(
                text("SELECT revoked_at FROM token_families WHERE id = :id"), {"id": family_id}
            )
        ).one_or_none()
    return None if row is None else row.revoked_at is not None


@pytest.mark.usefixtures("pg_only")
async def test_postgres_a_login_waits_for_a_change_in_progress_and_then_fails(client, app):
    # Step by step on PostgreSQL, with the statements the service runs: a change has updated
    # the users row but not committed; the session opening must wait, re-check and open none.
    user = await new_user(client)
    user_id, family_id = uuid.UUID(user["id"]), uuid.uuid4()
    async with app.state.engine.connect() as connection:
        assert await connection.run_sync(lambda sync: changing(user_id, 0)(_CoreStatements(sync)))
        login_task = asyncio.create_task(
            app.state.transactions.write(opening(user_id, 0, family_id))
        )
        await asyncio.sleep(0.5)
        assert not login_task.done(), "the opening must wait for the users row"
        await connection.commit()
    assert await login_task is False
    assert await family_revoked(app, family_id) is None


@pytest.mark.usefixtures("pg_only")
async def test_postgres_a_change_waits_for_a_login_in_progress_and_revokes_it(client, app):
    # The other order: the session opened first, its transaction still open; the change's
    # UPDATE must wait for it, and the change's revoke must then see and end the new login.
    user = await new_user(client)
    user_id, family_id = uuid.UUID(user["id"]), uuid.uuid4()
    async with app.state.engine.connect() as connection:
        assert await connection.run_sync(
            lambda sync: opening(user_id, 0, family_id)(_CoreStatements(sync))
        )
        change_task = asyncio.create_task(app.state.transactions.write(changing(user_id, 0)))
        await asyncio.sleep(0.5)
        assert not change_task.done(), "the change must wait for the login's lock"
        await connection.commit()
    assert await change_task is True
    assert await family_revoked(app, family_id) is True
