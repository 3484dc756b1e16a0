"""POST /introspect (RFC 7662): client authentication, and exactly which tokens stand."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from jose import jwt

from app.main import create_app
from tests.conftest import TEST_SECRET, bearer, login, new_user, refresh, test_settings
from tests.test_admin import admin_tokens

CLIENT_ID, CLIENT_SECRET = "orders-api", "orders-api-secret-that-is-long-enough"
OTHER_ID, OTHER_SECRET = "billing", "billing-secret:with:colons-and-%-signs"
CLIENTS = f"{CLIENT_ID}:{CLIENT_SECRET}, {OTHER_ID}:{OTHER_SECRET}"
INACTIVE = {"active": False}
ACTIVE_KEYS = {"active", "token_type", "sub", "exp", "iat", "iss", "jti", "amr", "sid"}


@pytest.fixture
def settings(database_url: str):
    return test_settings(
        database_url=database_url, introspection_clients=CLIENTS, login_rate_limit="5/minute"
    )


async def introspect(
    client: httpx.AsyncClient, token: str, *, auth: Any = (CLIENT_ID, CLIENT_SECRET), **form: str
) -> httpx.Response:
    return await client.post("/introspect", data={"token": token, **form}, auth=auth)


async def active(client: httpx.AsyncClient, token: str, **form: str) -> dict[str, Any]:
    response = await introspect(client, token, **form)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


async def test_a_live_access_token_is_active_with_its_claims(client, app):
    user = await new_user(client)
    claims = jwt.get_unverified_claims(user["access_token"])

    body = await active(client, user["access_token"])

    assert set(body) == ACTIVE_KEYS
    assert body == {
        "active": True,
        "token_type": "access_token",
        "sub": user["id"],
        "exp": claims["exp"],
        "iat": claims["iat"],
        "iss": app.state.settings.public_url,
        "jti": claims["jti"],
        "amr": ["pwd"],
        "sid": claims["sid"],
    }


async def test_a_live_refresh_token_is_active_and_names_its_login(client):
    user = await new_user(client)
    sid = jwt.get_unverified_claims(user["access_token"])["sid"]

    body = await active(client, user["refresh_token"], token_type_hint="refresh_token")

    assert set(body) == ACTIVE_KEYS
    assert body["token_type"] == "refresh_token"
    assert body["sub"] == user["id"] and body["sid"] == sid
    assert body["amr"] == ["pwd"]
    assert body["exp"] > time.time() + 3600 and body["iat"] <= time.time() + 1


async def test_the_audience_is_reported_when_configured(database_url):
    settings = test_settings(
        database_url=database_url, introspection_clients=CLIENTS, jwt_audience="orders"
    )
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            user = await new_user(client)
            assert (await active(client, user["access_token"]))["aud"] == "orders"
            assert (await active(client, user["refresh_token"]))["aud"] == "orders"


async def test_the_hint_does_not_change_the_answer(client):
    user = await new_user(client)

    wrong_hint = await active(client, user["access_token"], token_type_hint="refresh_token")
    assert wrong_hint["active"] is True and wrong_hint["token_type"] == "access_token"
    odd_hint = await active(client, user["refresh_token"], token_type_hint="saml")
    assert odd_hint["active"] is True and odd_hint["token_type"] == "refresh_token"


async def test_after_logout_both_tokens_are_inactive(client):
    user = await new_user(client)
    assert (await active(client, user["access_token"]))["active"] is True

    assert (await client.post("/logout", headers=bearer(user["access_token"]))).status_code == 204

    assert await active(client, user["access_token"]) == INACTIVE
    assert await active(client, user["refresh_token"]) == INACTIVE


async def test_a_revoked_refresh_token_ends_its_access_tokens_too(client):
    user = await new_user(client)

    await client.post("/revoke", data={"token": user["refresh_token"]})

    assert await active(client, user["refresh_token"]) == INACTIVE
    assert await active(client, user["access_token"]) == INACTIVE


async def test_a_rotated_refresh_token_is_spent_and_its_successor_active(client):
    user = await new_user(client)
    renewed = (await refresh(client, user["refresh_token"])).json()

    assert await active(client, user["refresh_token"]) == INACTIVE
    assert (await active(client, renewed["refresh_token"]))["active"] is True
    assert (await active(client, renewed["access_token"]))["active"] is True


async def test_reusing_a_rotated_refresh_token_makes_the_whole_login_inactive(client):
    user = await new_user(client)
    renewed = (await refresh(client, user["refresh_token"])).json()

    assert (await refresh(client, user["refresh_token"])).status_code == 400

    for token in (renewed["access_token"], renewed["refresh_token"], user["access_token"]):
        assert await active(client, token) == INACTIVE


async def test_a_password_change_makes_earlier_tokens_inactive(client):
    user = await new_user(client)

    response = await client.post(
        "/users/me/password",
        json={"current_password": user["password"], "new_password": "another-long-passphrase"},
        headers=bearer(user["access_token"]),
    )
    assert response.status_code == 204

    assert await active(client, user["access_token"]) == INACTIVE
    assert await active(client, user["refresh_token"]) == INACTIVE


async def test_tokens_of_a_deactivated_or_deleted_user_are_inactive(client, database_url):
    admin = await admin_tokens(client, database_url)
    deactivated, deleted = await new_user(client), await new_user(client)
    headers = bearer(admin["access_token"])

    await client.patch(f"/users/{deactivated['id']}", json={"is_active": False}, headers=headers)
    await client.delete(f"/users/{deleted['id']}", headers=headers)

    for user in (deactivated, deleted):
        assert await active(client, user["access_token"]) == INACTIVE
        assert await active(client, user["refresh_token"]) == INACTIVE


def resigned(token: str, *, key: str = TEST_SECRET, **claims: Any) -> str:
    return jwt.encode(
        {**jwt.get_unverified_claims(token), **claims},
        key,
        algorithm="HS256",
        headers={"typ": "at+jwt"},
    )


async def test_expired_forged_foreign_and_garbage_tokens_are_inactive(client):
    user = await new_user(client)
    token = user["access_token"]
    now = int(time.time())
    header, claims, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    candidates = {
        "expired": resigned(token, iat=now - 1000, exp=now - 10),
        "forged: another key": resigned(token, key="an-attacker-key-that-is-long-enough-too"),
        "forged: bad signature": f"{header}.{claims}.{flipped}",
        "foreign issuer": resigned(token, iss="https://someone-else.example.com"),
        "foreign audience": resigned(token, aud="another-service"),
        "typ JWT": jwt.encode(jwt.get_unverified_claims(token), TEST_SECRET, algorithm="HS256"),
        "alg none": f"{header}.{claims}.",
        "garbage": "not a token at all",
        "padding": f"{token}==",
        "almost a refresh token": user["refresh_token"][:-1] + "x",
        "unicode": "é" * 40,
    }
    for name, candidate in candidates.items():
        response = await introspect(client, candidate)
        assert response.status_code == 200, name
        assert response.json() == INACTIVE, name


async def test_a_token_of_another_passgate_is_inactive(client, database_url):
    other_settings = test_settings(
        database_url=database_url, secret_key="another-deployment-secret-key-long-enough"
    )
    other = create_app(other_settings)
    async with LifespanManager(other):
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://other") as foreign:
            stranger = await new_user(foreign)

    assert await active(client, stranger["access_token"]) == INACTIVE


@pytest.mark.parametrize(
    "auth",
    [
        None,
        (CLIENT_ID, "wrong-secret"),
        (CLIENT_ID, CLIENT_SECRET[:-1]),
        ("someone", CLIENT_SECRET),
        (CLIENT_ID, OTHER_SECRET),
        ("", ""),
    ],
)
async def test_without_the_right_credentials_the_answer_is_invalid_client(client, auth):
    user = await new_user(client)

    response = await introspect(client, user["access_token"], auth=auth)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Basic"
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == "invalid_client"
    assert user["access_token"] not in response.text


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + CLIENT_SECRET,
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    ],
)
async def test_malformed_authorization_headers_are_invalid_client(client, authorization):
    response = await client.post(
        "/introspect", data={"token": "x"}, headers={"Authorization": authorization}
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_every_configured_client_may_introspect_with_form_encoded_credentials(client):
    user = await new_user(client)
    # RFC 6749 §2.3.1: id and secret are form-encoded before Basic, as Authlib's clients do.
    raw = f"{quote_plus(OTHER_ID)}:{quote_plus(OTHER_SECRET)}".encode()
    response = await client.post(
        "/introspect",
        data={"token": user["access_token"]},
        headers={"Authorization": f"Basic {base64.b64encode(raw).decode()}"},
    )
    assert response.json()["active"] is True
    assert (await introspect(client, user["access_token"], auth=(OTHER_ID, OTHER_SECRET))).json()[
        "active"
    ] is True


async def test_without_introspection_clients_nobody_can_introspect(database_url):
    app = create_app(test_settings(database_url=database_url))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            user = await new_user(client)
            response = await introspect(client, user["access_token"], auth=("", ""))
            assert response.status_code == 401


async def test_a_missing_token_is_invalid_request(client):
    response = await client.post("/introspect", data={}, auth=(CLIENT_ID, CLIENT_SECRET))

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_failed_client_authentications_are_throttled_per_address(client):
    # The fixture's LOGIN_RATE_LIMIT is 5/minute.
    for _ in range(5):
        response = await introspect(client, "x", auth=(CLIENT_ID, "guess"))
        assert response.status_code == 401
    throttled = await introspect(client, "x", auth=(CLIENT_ID, "guess"))
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    assert throttled.json()["error"] == "too_many_attempts"
    # Even the right credentials wait now: a guess that happens to be right learns nothing.
    assert (await introspect(client, "x")).status_code == 429


async def test_a_client_with_the_right_credentials_is_never_throttled(client):
    user = await new_user(client)

    for _ in range(20):
        assert (await active(client, user["access_token"]))["active"] is True


@pytest.fixture
async def second_replica(settings) -> AsyncIterator[FastAPI]:
    """Another process on the same database, as a second replica behind a load balancer."""
    replica = create_app(settings)
    async with LifespanManager(replica):
        yield replica


async def test_a_logout_on_one_replica_is_seen_by_introspection_on_another(client, second_replica):
    transport = httpx.ASGITransport(app=second_replica)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica") as other:
        user = await new_user(client)
        # The other replica has verified (and cached) the token's signature already.
        assert (await active(other, user["access_token"]))["active"] is True

        await client.post("/logout", headers=bearer(user["access_token"]))

        assert await active(other, user["access_token"]) == INACTIVE


async def test_the_logged_in_user_keeps_working_while_introspected(client):
    user = await new_user(client)
    await active(client, user["access_token"])

    assert (await client.get("/users/me", headers=bearer(user["access_token"]))).status_code == 200
    assert (await login(client, user["email"])).status_code == 200
