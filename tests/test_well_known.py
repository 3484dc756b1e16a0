"""GET /.well-known/oauth-authorization-server: RFC 8414 metadata as API.md lists it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from jose import jwt

from app.main import create_app
from tests.conftest import new_user, test_settings
from tests.keyfiles import new_private_pem, write

PATH = "/.well-known/oauth-authorization-server"
MFA_GRANTS = [
    "urn:passgate:params:oauth:grant-type:mfa-otp",
    "urn:passgate:params:oauth:grant-type:mfa-recovery-code",
]


async def metadata_of(database_url: str, **settings: object) -> tuple[httpx.Response, str]:
    """The metadata response and a fresh access token from an app with these settings."""
    app = create_app(test_settings(database_url=database_url, **settings))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            user = await new_user(client)
            return await client.get(PATH), user["access_token"]


def validate_with_authlib(document: dict[str, object]) -> None:
    """Authlib's RFC 8414 checks, every one of them but response_types_supported's.

    API.md fixes `response_types_supported: []`: Passgate has no authorization endpoint, so it
    supports no response type. Authlib reads an empty list as a missing member; RFC 8414 §2
    only asks for the member, which is present. So that one check is asserted by hand.
    """
    metadata = AuthorizationServerMetadata(document)
    for key in AuthorizationServerMetadata.REGISTRY_KEYS:
        if key != "response_types_supported":
            getattr(metadata, f"validate_{key}")()
    assert document["response_types_supported"] == []


async def test_the_metadata_lists_exactly_what_api_md_says_under_hs256(database_url):
    response, token = await metadata_of(database_url, public_url="https://auth.example.com/")

    assert response.status_code == 200
    assert response.json() == {
        "issuer": "https://auth.example.com",
        "token_endpoint": "https://auth.example.com/token",
        "revocation_endpoint": "https://auth.example.com/revoke",
        "introspection_endpoint": "https://auth.example.com/introspect",
        "grant_types_supported": ["password", "refresh_token", *MFA_GRANTS],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "service_documentation": "https://auth.example.com/docs",
    }
    validate_with_authlib(response.json())
    assert jwt.get_unverified_claims(token)["iss"] == response.json()["issuer"]


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_with_an_asymmetric_algorithm_the_metadata_points_at_the_jwks(
    database_url, tmp_path: Path, algorithm
):
    key = write(tmp_path / "signing.pem", new_private_pem(algorithm))
    response, token = await metadata_of(
        database_url,
        public_url="https://example.com/auth",
        jwt_algorithm=algorithm,
        jwt_private_key_file=key,
    )

    document = response.json()
    assert document["jwks_uri"] == "https://example.com/auth/.well-known/jwks.json"
    assert document["issuer"] == "https://example.com/auth"
    assert document["token_endpoint"] == "https://example.com/auth/token"
    validate_with_authlib(document)
    assert jwt.get_unverified_claims(token)["iss"] == document["issuer"]


async def test_the_default_public_url_gives_a_valid_loopback_document(client):
    response = await client.get(PATH)

    validate_with_authlib(response.json())
    assert response.json()["issuer"] == "http://127.0.0.1:8000"


async def test_urls_never_come_from_the_request_headers(client):
    response = await client.get(
        PATH,
        headers={
            "Host": "evil.example.com",
            "X-Forwarded-Host": "evil.example.com",
            "X-Forwarded-Proto": "http",
        },
    )

    assert "evil" not in response.text


async def test_clients_may_cache_the_metadata_for_a_few_minutes(client):
    response = await client.get(PATH)

    cache_control = response.headers["cache-control"]
    assert cache_control.startswith("public, max-age=")
    assert 60 <= int(cache_control.rsplit("=", 1)[1]) <= 3600
