"""The current-user dependency: RFC 6750 challenges and every kind of forged or stale token."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from jose import jwt

from app.main import create_app
from tests.conftest import TEST_SECRET, bearer, new_user, test_settings

INVALID = 'Bearer error="invalid_token"'
MALFORMED = "The access token is malformed"
EXPIRED = "The access token expired"
REVOKED = "The access token was revoked"
OTHERWISE_INVALID = "The access token is invalid"


def challenge(description: str) -> str:
    return f'{INVALID}, error_description="{description}"'


def _b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims_like(user: dict) -> dict:
    return jwt.get_unverified_claims(user["access_token"])


def _sign(claims: dict, *, key: str = TEST_SECRET, algorithm: str = "HS256", **headers) -> str:
    """Signed as the service signs (typed at+jwt) unless the headers say otherwise."""
    return jwt.encode(claims, key, algorithm=algorithm, headers={"typ": "at+jwt", **headers})


async def test_no_token_gets_a_bare_bearer_challenge(client):
    response = await client.get("/users/me")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc", ""])
async def test_a_header_without_a_bearer_token_gets_a_bare_challenge(client, header):
    response = await client.get("/users/me", headers={"Authorization": header})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_bearer_scheme_name_is_case_insensitive(client):
    user = await new_user(client)

    response = await client.get(
        "/users/me", headers={"Authorization": f"bearer {user['access_token']}"}
    )

    assert response.status_code == 200


async def test_a_valid_token_works(client):
    user = await new_user(client)
    assert (await client.get("/users/me", headers=bearer(user["access_token"]))).status_code == 200


def _forgeries(user: dict) -> dict[str, str]:
    claims = _claims_like(user)
    now = int(time.time())
    header, payload, signature = user["access_token"].split(".")
    return {
        "garbage": "not-a-jwt",
        "two segments": f"{header}.{payload}",
        "bad base64": "!!!.###.$$$",
        "bad signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "signed with another secret": _sign(claims, key="another-secret-of-enough-length-1234567"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "alg none uppercase": f"{_b64({'alg': 'NONE', 'typ': 'JWT'})}.{_b64(claims)}.",
        "another HMAC algorithm": _sign(claims, algorithm="HS512"),
        "expired": _sign({**claims, "iat": now - 7200, "exp": now - 3600}),
        "not yet valid": _sign({**claims, "nbf": now + 3600}),
        "issued in the future": _sign({**claims, "iat": now + 3600, "exp": now + 7200}),
        "no exp": _sign({k: v for k, v in claims.items() if k != "exp"}),
        "no iat": _sign({k: v for k, v in claims.items() if k != "iat"}),
        "no sub": _sign({k: v for k, v in claims.items() if k != "sub"}),
        "no jti": _sign({k: v for k, v in claims.items() if k != "jti"}),
        "no sid": _sign({k: v for k, v in claims.items() if k != "sid"}),
        "sub not a uuid": _sign({**claims, "sub": "admin"}),
        "sub a number": _sign({**claims, "sub": 42}),
        "iat null": _sign({**claims, "iat": None}),
        "iat a list": _sign({**claims, "iat": [1]}),
        "iat huge": _sign({**claims, "iat": 1e300}),
        "exp a string": _sign({**claims, "exp": "tomorrow"}),
        "unknown user": _sign({**claims, "sub": str(uuid.uuid4())}),
        "unknown login": _sign({**claims, "sid": str(uuid.uuid4())}),
        "payload not an object": f"{header}.{_b64(b'[1,2,3]')}.{signature}",
        "header not an object": f"{_b64(b'[]')}.{payload}.{signature}",
        "critical header": _sign(claims, crit=["exp"]),
        "unicode junk": "ünïcödé.ünïcödé.ünïcödé",
    }


FORGERY_NAMES = [
    "garbage", "two segments", "bad base64", "bad signature", "signed with another secret",
    "alg none", "alg none uppercase", "another HMAC algorithm", "expired", "not yet valid",
    "issued in the future", "no exp", "no iat", "no sub", "no jti", "no sid", "sub not a uuid",
    "sub a number", "iat null", "iat a list", "iat huge", "exp a string", "unknown user",
    "unknown login", "payload not an object", "header not an object", "critical header",
    "unicode junk",
]  # fmt: skip


# What each forgery is told (RFC 6750 §3 error_description); the rest are "invalid". Only a
# token signed with our key can be told it expired, or that it was revoked (its login is gone).
FORGERY_DESCRIPTIONS = {
    "garbage": MALFORMED,
    "two segments": MALFORMED,
    "bad base64": MALFORMED,
    "alg none": MALFORMED,  # an empty signature segment is not a JWS compact serialization
    "alg none uppercase": MALFORMED,
    "unicode junk": MALFORMED,
    "expired": EXPIRED,
    "unknown user": REVOKED,
    "unknown login": REVOKED,
}


@pytest.mark.parametrize("forgery", FORGERY_NAMES)
async def test_forged_and_malformed_tokens_get_401_invalid_token(client, forgery):
    user = await new_user(client)
    token = _forgeries(user)[forgery]

    # Raw bytes: a hostile client is not limited to ASCII headers.
    header = f"Bearer {token}".encode()
    response = await client.get("/users/me", headers={"Authorization": header})

    assert response.status_code == 401
    description = FORGERY_DESCRIPTIONS.get(forgery, OTHERWISE_INVALID)
    assert response.headers["www-authenticate"] == challenge(description)
    assert response.json() == {"detail": description}


async def test_a_token_for_a_deactivated_user_is_refused(client, app):
    user = await new_user(client)
    from app.models import User

    async with app.state.sessionmaker() as session:
        (await session.get(User, uuid.UUID(user["id"]))).is_active = False
        await session.commit()

    response = await client.get("/users/me", headers=bearer(user["access_token"]))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge(REVOKED)


async def test_tokens_expire(tmp_path: Path, database_url: str):
    app = create_app(test_settings(database_url=database_url, access_token_ttl_seconds=1))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            user = await new_user(client)
            claims = _claims_like(user)
            assert claims["exp"] - claims["iat"] == 1
            # Wait past the expiry (whole seconds), then the token is refused.
            await asyncio.sleep(claims["exp"] + 1 - time.time())
            response = await client.get("/users/me", headers=bearer(user["access_token"]))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge(EXPIRED)


async def test_a_token_of_a_login_that_ended_is_told_it_was_revoked(client):
    user = await new_user(client)
    assert (await client.post("/logout", headers=bearer(user["access_token"]))).status_code == 204

    response = await client.get("/users/me", headers=bearer(user["access_token"]))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge(REVOKED)
    assert response.json() == {"detail": REVOKED}


async def test_an_expired_token_signed_with_another_key_is_not_told_it_expired(client):
    # Expiry is only news to the holder of a token we signed; a forger learns nothing.
    user = await new_user(client)
    now = int(time.time())
    forged = _sign(
        {**_claims_like(user), "iat": now - 7200, "exp": now - 3600},
        key="another-secret-of-enough-length-1234567",
    )

    response = await client.get("/users/me", headers=bearer(forged))

    assert response.headers["www-authenticate"] == challenge(OTHERWISE_INVALID)
    assert response.json() == {"detail": OTHERWISE_INVALID}


async def test_no_token_is_told_only_that_it_is_not_authenticated(client):
    response = await client.get("/users/me")

    assert response.json() == {"detail": "Not authenticated"}
