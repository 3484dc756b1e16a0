"""Interoperability: a real OAuth 2.0 client library (Authlib) logs in, renews and revokes."""

from __future__ import annotations

import time

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client

from tests.conftest import DEFAULT_PASSWORD, signup


def oauth_client(app, **kwargs) -> AsyncOAuth2Client:
    # A public client: no client secret, as with Swagger UI or a command-line tool.
    return AsyncOAuth2Client(
        client_id="passgate-cli",
        token_endpoint_auth_method="none",
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        **kwargs,
    )


async def test_authlib_logs_in_with_the_password_grant_and_renews_with_the_refresh_grant(
    client, app
):
    await signup(client, email="ada@example.com")
    async with oauth_client(app) as oauth:
        token = await oauth.fetch_token(
            "http://test/token",
            grant_type="password",
            username="ada@example.com",
            password=DEFAULT_PASSWORD,
        )
        assert token["token_type"] == "bearer"
        assert (await oauth.get("/users/me")).json()["email"] == "ada@example.com"

        renewed = await oauth.refresh_token(
            "http://test/token", refresh_token=token["refresh_token"]
        )

        assert renewed["access_token"] != token["access_token"]
        assert renewed["refresh_token"] != token["refresh_token"]
        assert (await oauth.get("/users/me")).status_code == 200


async def test_authlib_renews_an_expired_token_by_itself(client, app):
    await signup(client, email="ada@example.com")
    async with oauth_client(app) as oauth:
        token = await oauth.fetch_token(
            "http://test/token",
            grant_type="password",
            username="ada@example.com",
            password=DEFAULT_PASSWORD,
        )
    stale = {**token, "expires_at": int(time.time()) - 10}
    renewed: list[dict] = []

    async def keep(new_token: dict, **_: object) -> None:
        renewed.append(new_token)

    async with oauth_client(
        app, token=stale, token_endpoint="http://test/token", update_token=keep
    ) as oauth:
        response = await oauth.get("/users/me")

    assert response.status_code == 200
    assert len(renewed) == 1
    assert renewed[0]["refresh_token"] != token["refresh_token"]


async def test_authlib_revokes_a_refresh_token(client, app):
    await signup(client, email="ada@example.com")
    async with oauth_client(app) as oauth:
        token = await oauth.fetch_token(
            "http://test/token",
            grant_type="password",
            username="ada@example.com",
            password=DEFAULT_PASSWORD,
        )
        response = await oauth.revoke_token(
            "http://test/revoke", token=token["refresh_token"], token_type_hint="refresh_token"
        )

    assert response.status_code == 200
    refresh = await client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    )
    assert refresh.status_code == 400
