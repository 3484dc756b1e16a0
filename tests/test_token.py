"""POST /token with the password grant, and the RFC 6749 errors of the token endpoint."""

from __future__ import annotations

import pytest
from jose import jwt

from tests.conftest import DEFAULT_PASSWORD, TEST_SECRET, bearer, login, new_user, signup


async def test_password_grant_returns_a_bearer_token_that_is_not_cached(client):
    user = (await signup(client, email="ada@example.com")).json()

    response = await login(client, "ada@example.com")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    claims = jwt.get_unverified_claims(body["access_token"])
    assert claims["sub"] == user["id"]
    assert {"sub", "exp", "iat", "jti", "sid"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 900


async def test_login_ignores_the_letter_case_of_the_email(client):
    await signup(client, email="ada@example.com")

    response = await login(client, "ADA@EXAMPLE.COM")

    assert response.status_code == 200


async def test_the_access_token_opens_protected_routes(client):
    user = await new_user(client)

    response = await client.get("/users/me", headers=bearer(user["access_token"]))

    assert response.status_code == 200
    assert response.json()["id"] == user["id"]


async def test_wrong_password_and_unknown_email_get_the_same_answer(client):
    await signup(client, email="ada@example.com")

    wrong_password = await login(client, "ada@example.com", "not-the-password")
    unknown_email = await login(client, "nobody@example.com", "not-the-password")

    assert wrong_password.status_code == unknown_email.status_code == 400
    assert (
        wrong_password.json()
        == unknown_email.json()
        == {
            "error": "invalid_grant",
            "error_description": "Invalid email or password",
        }
    )
    assert wrong_password.headers["cache-control"] == "no-store"


async def test_a_deactivated_account_cannot_log_in_and_looks_like_a_wrong_password(client, app):
    user = await new_user(client)
    async with app.state.sessionmaker() as session:
        from app.models import User

        (await session.get(User, __import__("uuid").UUID(user["id"]))).is_active = False
        await session.commit()

    response = await login(client, user["email"])

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert response.json()["error_description"] == "Invalid email or password"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, "invalid_request"),
        ({"username": "a@example.com", "password": DEFAULT_PASSWORD}, "invalid_request"),
        ({"grant_type": "password", "password": DEFAULT_PASSWORD}, "invalid_request"),
        ({"grant_type": "password", "username": "a@example.com"}, "invalid_request"),
        ({"grant_type": "password", "username": "", "password": ""}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "a\x00@x.com", "password": "p"}, "invalid_request"),
        ({"grant_type": "password", "username": "a@x.com", "password": "p\x00"}, "invalid_request"),
        ({"grant_type": "password", "username": "x" * 10_000, "password": "p"}, "invalid_request"),
        (
            {"grant_type": "password", "username": "a@x.com", "password": "p" * 2000},
            "invalid_grant",
        ),
        ({"grant_type": "refresh_token", "refresh_token": "bogus"}, "invalid_grant"),
    ],
)
async def test_token_endpoint_errors_follow_rfc_6749(client, data, error):
    response = await client.post("/token", data=data)

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert response.headers["cache-control"] == "no-store"


async def test_a_json_body_is_not_a_token_request(client):
    await signup(client, email="ada@example.com")

    response = await client.post(
        "/token",
        json={
            "grant_type": "password",
            "username": "ada@example.com",
            "password": DEFAULT_PASSWORD,
        },
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_scope_is_accepted_and_ignored(client):
    await signup(client, email="ada@example.com")

    response = await client.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "ada@example.com",
            "password": DEFAULT_PASSWORD,
            "scope": "read write",
        },
    )

    assert response.status_code == 200


async def test_without_jwt_issuer_tokens_carry_the_public_url_and_no_audience(client, app):
    settings = app.state.settings
    assert settings.jwt_issuer is None
    user = await new_user(client)
    claims = jwt.get_unverified_claims(user["access_token"])
    assert claims["iss"] == settings.public_url == "http://127.0.0.1:8000"
    assert "aud" not in claims
    # A token carrying an audience we were not configured with is refused.
    forged = jwt.encode(
        {**claims, "aud": "someone-else"},
        TEST_SECRET,
        algorithm="HS256",
        headers={"typ": "at+jwt"},
    )
    response = await client.get("/users/me", headers=bearer(forged))
    assert response.status_code == 401
