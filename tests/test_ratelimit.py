"""Throttling of failed logins (per account and per address) and of signups."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from app.config import Settings
from app.ratelimit import address_key
from tests.conftest import DEFAULT_PASSWORD, bearer, login, new_user, signup
from tests.conftest import test_settings as make_settings

LIMIT = 3


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url=database_url,
        login_rate_limit=f"{LIMIT}/minute",
        signup_rate_limit="2 per 5 minutes",
    )


def client_at(app: FastAPI, address: str) -> httpx.AsyncClient:
    """A client whose connection comes from this address."""
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["Cache-Control"] == "no-store"


async def test_failed_logins_for_one_account_are_throttled_from_any_address(app, client):
    user = await new_user(client)
    for n in range(LIMIT):
        async with client_at(app, f"10.0.0.{n}") as other:
            assert (await login(other, user["email"], "wrong-password")).status_code == 400
    async with client_at(app, "10.0.1.1") as fresh_address:
        response = await login(fresh_address, user["email"].upper(), "wrong-password")
    assert_throttled(response)
    assert response.json()["error"] == "too_many_attempts"


async def test_a_throttled_account_refuses_even_the_right_password(app, client):
    user = await new_user(client)
    for _ in range(LIMIT):
        await login(client, user["email"], "wrong-password")
    assert_throttled(await login(client, user["email"], DEFAULT_PASSWORD))


async def test_failed_logins_from_one_address_are_throttled_across_accounts(app):
    async with client_at(app, "192.0.2.7") as attacker:
        for n in range(LIMIT):
            response = await login(attacker, f"nobody-{n}@example.com", "guess-123")
            assert response.status_code == 400
        assert_throttled(await login(attacker, "someone-else@example.com", "guess-123"))
    async with client_at(app, "192.0.2.8") as neighbour:
        assert (await login(neighbour, "someone-else@example.com", "guess-123")).status_code == 400


async def test_a_successful_login_resets_the_accounts_count(app, client):
    user = await new_user(client)
    async with client_at(app, "10.0.0.1") as first:
        for _ in range(LIMIT - 1):
            await login(first, user["email"], "wrong-password")
    async with client_at(app, "10.0.0.2") as second:
        assert (await login(second, user["email"])).status_code == 200
    async with client_at(app, "10.0.0.3") as third:
        for _ in range(LIMIT):
            assert (await login(third, user["email"], "wrong-password")).status_code == 400
        assert_throttled(await login(third, user["email"], "wrong-password"))


async def test_successful_logins_do_not_count_against_the_address(client):
    user = await new_user(client)
    for _ in range(LIMIT * 3):
        assert (await login(client, user["email"])).status_code == 200


async def test_a_throttled_login_computes_no_password_hash(app, client):
    user = await new_user(client)
    hashes = app.state.passwords
    before = hashes.hashes_computed
    for _ in range(LIMIT):
        await login(client, user["email"], "wrong-password")
    assert hashes.hashes_computed == before + LIMIT  # the counter does see every check

    before = hashes.hashes_computed
    for _ in range(5):
        assert_throttled(await login(client, user["email"], "wrong-password"))
    assert hashes.hashes_computed == before


async def test_concurrent_guesses_cannot_slip_past_the_limit(app, client):
    user = await new_user(client)
    responses = await asyncio.gather(
        *(login(client, user["email"], f"guess-{n}") for n in range(20))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [400] * LIMIT + [429] * (20 - LIMIT)


async def test_proxy_headers_from_a_client_do_not_change_its_address(app):
    async with client_at(app, "192.0.2.9") as attacker:
        for n in range(LIMIT):
            await login(attacker, f"nobody-{n}@example.com", "guess-123")
        response = await login_with_headers(attacker, {"X-Forwarded-For": "203.0.113.5"})
        assert_throttled(response)
        response = await login_with_headers(attacker, {"Forwarded": "for=203.0.113.5"})
        assert_throttled(response)


async def login_with_headers(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post(
        "/token",
        data={"grant_type": "password", "username": "x@example.com", "password": "guess-123"},
        headers=headers,
    )


async def test_wrong_current_passwords_are_throttled_like_logins(client):
    user = await new_user(client)
    headers = bearer(user["access_token"])
    body = {"current_password": "wrong-password", "new_password": "a-brand-new-passphrase"}
    for _ in range(LIMIT):
        response = await client.post("/users/me/password", json=body, headers=headers)
        assert response.status_code == 400
    response = await client.post("/users/me/password", json=body, headers=headers)
    assert_throttled(response)
    # One count: the stolen-token holder gains no extra guesses at /token either.
    assert_throttled(await login(client, user["email"], "wrong-password"))


async def test_signups_from_one_address_are_throttled(app):
    async with client_at(app, "198.51.100.1") as first:
        for _ in range(2):
            assert (await signup(first)).status_code == 201
        response = await signup(first)
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) <= 300
        assert "detail" in response.json()
    async with client_at(app, "198.51.100.2") as second:
        assert (await signup(second)).status_code == 201


def test_ipv6_clients_are_counted_by_their_64_bit_prefix():
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.1") == address_key("192.0.2.1")
    assert address_key(None) == "unknown"


@pytest.mark.parametrize(
    "overrides",
    [
        {"login_rate_limit": "lots"},
        {"login_rate_limit": "10/minute;100/hour"},
        {"signup_rate_limit": ""},
        {"redis_url": "http://127.0.0.1:6379"},
        {"max_body_bytes": 10},
    ],
)
def test_unusable_abuse_settings_are_refused_at_start(overrides):
    with pytest.raises(ValidationError):
        make_settings(**overrides)
