"""Access tokens are typed (RFC 9068 `typ: at+jwt`) and carry the issuer; nothing else passes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from jose import jwt

from app.main import create_app
from tests.conftest import TEST_SECRET, bearer, new_user, test_settings

INVALID = 'Bearer error="invalid_token"'
CLIENT_ID, CLIENT_SECRET = "orders-api", "orders-api-secret-that-is-long-enough"


def resigned(token: str, *, header: dict[str, Any] | None = None, **claims: Any) -> str:
    """The token's claims (changed as asked) signed with the service's own key."""
    original = {**jwt.get_unverified_claims(token), **claims}
    original = {name: value for name, value in original.items() if value is not None}
    return jwt.encode(original, TEST_SECRET, algorithm="HS256", headers=header)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def without_typ(token: str) -> str:
    """The token re-signed with a header of `alg` alone: python-jose always writes a typ."""
    claims_part = token.split(".")[1]
    signing_input = f"{_b64(json.dumps({'alg': 'HS256'}).encode())}.{claims_part}"
    mac = hmac.new(TEST_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def header_of(token: str) -> dict[str, Any]:
    return jwt.get_unverified_header(token)


@pytest.fixture
def settings(database_url: str):
    return test_settings(
        database_url=database_url, introspection_clients=f"{CLIENT_ID}:{CLIENT_SECRET}"
    )


async def test_issued_access_tokens_carry_typ_at_jwt(client):
    user = await new_user(client)

    assert header_of(user["access_token"])["typ"] == "at+jwt"
    renewed = (
        await client.post(
            "/token", data={"grant_type": "refresh_token", "refresh_token": user["refresh_token"]}
        )
    ).json()
    assert header_of(renewed["access_token"])["typ"] == "at+jwt"


async def test_the_service_key_resigning_with_typ_at_jwt_is_accepted(client):
    # The control for the tests below: only the header's typ differs from them.
    user = await new_user(client)
    token = resigned(user["access_token"], header={"typ": "at+jwt"})

    assert (await client.get("/users/me", headers=bearer(token))).status_code == 200


@pytest.mark.parametrize(
    "typ", ["JWT", "jwt", None, "application/jwt", "at+jwt ", "AT+JWT", "secevent+jwt", ""]
)
async def test_a_correctly_signed_token_of_another_type_is_refused_everywhere(client, typ):
    user = await new_user(client)
    if typ is None:
        token = without_typ(user["access_token"])
    else:
        token = resigned(user["access_token"], header={"typ": typ})

    me = await client.get("/users/me", headers=bearer(token))
    assert me.status_code == 401
    assert me.headers["www-authenticate"].startswith(INVALID)
    assert (await client.post("/logout", headers=bearer(token))).status_code == 401
    introspected = await client.post(
        "/introspect", data={"token": token}, auth=(CLIENT_ID, CLIENT_SECRET)
    )
    assert introspected.json() == {"active": False}
    # /revoke answers 200 whatever it gets, but such a token must not end the login.
    assert (await client.post("/revoke", data={"token": token})).status_code == 200
    assert (await client.get("/users/me", headers=bearer(user["access_token"]))).status_code == 200


async def test_tokens_carry_jwt_issuer_when_it_is_set(database_url):
    settings = test_settings(database_url=database_url, jwt_issuer="https://id.example.com")
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            user = await new_user(client)
            assert jwt.get_unverified_claims(user["access_token"])["iss"] == (
                "https://id.example.com"
            )
            metadata = (await client.get("/.well-known/oauth-authorization-server")).json()
            assert metadata["issuer"] == "https://id.example.com"
            # PUBLIC_URL still builds the endpoints' addresses.
            assert metadata["token_endpoint"] == "http://127.0.0.1:8000/token"


@pytest.mark.parametrize("issuer", [None, "https://evil.example.com", "http://127.0.0.1:8000/"])
async def test_a_token_without_our_issuer_is_refused(client, issuer):
    user = await new_user(client)
    token = resigned(user["access_token"], header={"typ": "at+jwt"}, iss=issuer)
    if issuer is None:
        assert "iss" not in jwt.get_unverified_claims(token)

    response = await client.get("/users/me", headers=bearer(token))

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith(INVALID)
