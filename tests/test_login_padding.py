"""A failed login waits only while imported hashes remain, never longer than the ceiling.

Times are never asserted here (a loaded machine would make them flaky); what is asserted is
the decision: whether failed logins waited (`padded_failures`), how long they were to wait
(`seconds()`), and what the service knows of imported hashes (`remaining`).
"""

from __future__ import annotations

import asyncio
import time

import bcrypt
import pytest
from pydantic import ValidationError

from tests.conftest import login, signup
from tests.conftest import test_settings as make_settings
from tests.test_import_users import PASSWORD, WRONG, run_import, write_lines
from tests.test_recovery import service


def bcrypt_row(email: str) -> dict[str, str]:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    return {"email": email, "name": "Imported", "password_hash": hashed}


async def test_failed_logins_wait_while_imports_remain_and_not_after(database_url, tmp_path):
    settings = make_settings(database_url=database_url, imported_hash_padding_max_seconds=5.0)
    rows = [bcrypt_row("old@example.com"), bcrypt_row("older@example.com")]
    await run_import(settings, write_lines(tmp_path / "users.jsonl", rows))

    async with service(settings) as (app, client):
        padding = app.state.passwords.padding
        # Counted at start: two imported hashes, none verified yet, so the whole ceiling.
        assert padding.remaining == 2
        assert padding.seconds() == 5.0
        assert (await signup(client, email="new@example.com")).status_code == 201

        # Imported, unknown and native accounts fail alike: each one waits.
        for email in ("old@example.com", "nobody@example.com", "new@example.com"):
            assert (await login(client, email, WRONG)).status_code == 400
        assert padding.padded_failures == 3
        # Now from the imported verification measured, below the ceiling.
        assert 0 < padding.seconds() < 5.0

        # Each first login rehashes one; with none left, failures no longer wait.
        assert (await login(client, "old@example.com", PASSWORD)).status_code == 200
        assert padding.remaining == 1
        assert (await login(client, "nobody@example.com", WRONG)).status_code == 400
        assert padding.padded_failures == 4
        assert (await login(client, "older@example.com", PASSWORD)).status_code == 200
        assert padding.remaining == 0
        assert padding.seconds() == 0
        for email in ("nobody@example.com", "new@example.com", "old@example.com"):
            assert (await login(client, email, WRONG)).status_code == 400
        assert padding.padded_failures == 4

    # A restart counts from the database: still none.
    async with service(settings) as (app, client):
        assert app.state.passwords.padding.remaining == 0
        assert (await login(client, "nobody@example.com", WRONG)).status_code == 400
        assert app.state.passwords.padding.padded_failures == 0


async def test_a_service_that_never_imported_never_waits(client, app):
    padding = app.state.passwords.padding
    assert padding.remaining == 0
    assert (await signup(client, email="ada@example.com")).status_code == 201
    for email in ("nobody@example.com", "ada@example.com"):
        assert (await login(client, email, WRONG)).status_code == 400
    assert padding.padded_failures == 0


async def test_the_wait_is_bounded_by_the_configured_ceiling(database_url, tmp_path):
    # A ceiling below what a bcrypt verification takes: the wait is the ceiling, no more.
    settings = make_settings(database_url=database_url, imported_hash_padding_max_seconds=0.001)
    await run_import(settings, write_lines(tmp_path / "u.jsonl", [bcrypt_row("old@example.com")]))
    async with service(settings) as (app, client):
        assert (await login(client, "old@example.com", WRONG)).status_code == 400
        assert app.state.passwords.padding.seconds() == 0.001

    # 0 turns the wait off, imports or not.
    settings = make_settings(database_url=database_url, imported_hash_padding_max_seconds=0)
    async with service(settings) as (app, client):
        assert app.state.passwords.padding.remaining == 1
        assert (await login(client, "old@example.com", WRONG)).status_code == 400
        assert app.state.passwords.padding.padded_failures == 0


async def test_an_import_into_a_running_service_is_counted_within_the_interval(
    database_url, tmp_path
):
    settings = make_settings(database_url=database_url, imported_hash_recount_seconds=0.1)
    async with service(settings) as (app, client):
        padding = app.state.passwords.padding
        assert padding.remaining == 0
        await run_import(
            settings, write_lines(tmp_path / "u.jsonl", [bcrypt_row("old@example.com")])
        )
        deadline = time.monotonic() + 20
        while padding.remaining != 1:
            assert time.monotonic() < deadline, "the import was not counted"
            await asyncio.sleep(0.05)
        assert (await login(client, "nobody@example.com", WRONG)).status_code == 400
        assert padding.padded_failures == 1


@pytest.mark.parametrize("ceiling", [-1, 61])
def test_a_ceiling_outside_0_to_60_seconds_is_refused(ceiling):
    with pytest.raises(ValidationError, match="imported_hash_padding_max_seconds"):
        make_settings(imported_hash_padding_max_seconds=ceiling)
