"""The life of a login: refresh rotation, reuse detection, revocation, logout, password change."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from app.main import create_app
from app.models import RefreshToken, TokenFamily
from tests.conftest import (
    DEFAULT_PASSWORD,
    bearer,
    login,
    new_user,
    refresh,
    test_settings,
)

NEW_PASSWORD = "a-brand-new-passphrase"


async def me(client: httpx.AsyncClient, access_token: str) -> int:
    return (await client.get("/users/me", headers=bearer(access_token))).status_code


async def test_every_password_login_returns_an_opaque_refresh_token(client):
    user = await new_user(client)

    token = user["refresh_token"]
    assert len(token) >= 43  # 256 bits in base64url
    assert token.count(".") == 0, "opaque, not a JWT"


async def test_refresh_tokens_are_stored_only_as_hashes(client, app):
    user = await new_user(client)

    async with app.state.sessionmaker() as session:
        stored = (await session.scalars(select(RefreshToken.token_hash))).all()
    assert stored and user["refresh_token"] not in stored


async def test_refreshing_returns_a_new_working_pair(client):
    user = await new_user(client)

    response = await refresh(client, user["refresh_token"])

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    pair = response.json()
    assert pair["token_type"] == "bearer"
    assert pair["refresh_token"] != user["refresh_token"]
    assert pair["access_token"] != user["access_token"]
    assert await me(client, pair["access_token"]) == 200
    assert (await refresh(client, pair["refresh_token"])).status_code == 200


async def test_reusing_a_refresh_token_revokes_the_whole_login(client):
    user = await new_user(client)
    token_a = user["refresh_token"]
    pair_b = (await refresh(client, token_a)).json()

    reuse = await refresh(client, token_a)

    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert (await refresh(client, pair_b["refresh_token"])).status_code == 400
    assert await me(client, pair_b["access_token"]) == 401
    assert await me(client, user["access_token"]) == 401


async def test_reuse_detection_leaves_other_logins_alone(client):
    user = await new_user(client)
    other_login = (await login(client, user["email"])).json()
    await refresh(client, user["refresh_token"])

    await refresh(client, user["refresh_token"])

    assert await me(client, other_login["access_token"]) == 200
    assert (await refresh(client, other_login["refresh_token"])).status_code == 200


async def test_concurrent_refreshes_of_one_token_let_at_most_one_win(client):
    user = await new_user(client)

    responses = await asyncio.gather(*(refresh(client, user["refresh_token"]) for _ in range(20)))

    statuses = [response.status_code for response in responses]
    assert statuses.count(200) == 1
    assert statuses.count(400) == 19
    assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code == 400)


async def test_two_concurrent_refreshes_do_not_both_succeed(client):
    user = await new_user(client)

    first, second = await asyncio.gather(
        refresh(client, user["refresh_token"]), refresh(client, user["refresh_token"])
    )

    assert sorted([first.status_code, second.status_code]) == [200, 400]


async def test_an_expired_refresh_token_is_refused(database_url):
    app = create_app(test_settings(database_url=database_url, refresh_token_ttl_seconds=1))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            user = await new_user(client)
            await asyncio.sleep(1.1)
            response = await refresh(client, user["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_revoke_ends_the_login_of_a_refresh_token(client):
    user = await new_user(client)

    response = await client.post("/revoke", data={"token": user["refresh_token"]})

    assert response.status_code == 200
    assert (await refresh(client, user["refresh_token"])).status_code == 400
    assert await me(client, user["access_token"]) == 401


async def test_revoke_accepts_an_access_token_too(client):
    user = await new_user(client)

    response = await client.post("/revoke", data={"token": user["access_token"]})

    assert response.status_code == 200
    assert await me(client, user["access_token"]) == 401
    assert (await refresh(client, user["refresh_token"])).status_code == 400


@pytest.mark.parametrize("token", ["unknown-token", "x" * 500, "a.b.c"])
async def test_revoke_answers_200_for_unknown_tokens(client, token):
    response = await client.post("/revoke", data={"token": token})

    assert response.status_code == 200


async def test_revoke_without_a_token_is_invalid_request(client):
    response = await client.post("/revoke", data={})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_logout_ends_every_session_yet_a_new_login_in_the_same_second_works(client):
    user = await new_user(client)
    second = (await login(client, user["email"])).json()

    response = await client.post("/logout", headers=bearer(user["access_token"]))
    fresh = (await login(client, user["email"])).json()

    assert response.status_code == 204
    for old in (user, second):
        assert await me(client, old["access_token"]) == 401
        assert (await refresh(client, old["refresh_token"])).status_code == 400
    assert await me(client, fresh["access_token"]) == 200
    assert (await refresh(client, fresh["refresh_token"])).status_code == 200


async def test_logout_needs_a_token(client):
    response = await client.post("/logout")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_changing_the_password_ends_every_session(client):
    user = await new_user(client)

    response = await client.post(
        "/users/me/password",
        json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(user["access_token"]),
    )
    fresh = await login(client, user["email"], NEW_PASSWORD)

    assert response.status_code == 204
    assert await me(client, user["access_token"]) == 401
    assert (await refresh(client, user["refresh_token"])).status_code == 400
    assert (await login(client, user["email"], DEFAULT_PASSWORD)).status_code == 400
    assert fresh.status_code == 200
    assert await me(client, fresh.json()["access_token"]) == 200


async def test_a_wrong_current_password_is_400_and_changes_nothing(client):
    user = await new_user(client)

    response = await client.post(
        "/users/me/password",
        json={"current_password": "not-my-password", "new_password": NEW_PASSWORD},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 400
    assert await me(client, user["access_token"]) == 200
    assert (await login(client, user["email"])).status_code == 200


@pytest.mark.parametrize("new_password", ["short", "password123", "x" * 129])
async def test_a_weak_new_password_is_422(client, new_password):
    user = await new_user(client)

    response = await client.post(
        "/users/me/password",
        json={"current_password": DEFAULT_PASSWORD, "new_password": new_password},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "new_password"]
    assert await me(client, user["access_token"]) == 200


async def test_deleting_my_account_removes_it_and_its_tokens(client, app):
    user = await new_user(client)

    response = await client.delete("/users/me", headers=bearer(user["access_token"]))

    assert response.status_code == 204
    assert await me(client, user["access_token"]) == 401
    assert (await refresh(client, user["refresh_token"])).status_code == 400
    assert (await login(client, user["email"])).status_code == 400
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(TokenFamily)) == 0
        assert await session.scalar(select(func.count()).select_from(RefreshToken)) == 0


async def test_the_email_of_a_deleted_account_can_sign_up_again(client):
    user = await new_user(client)
    await client.delete("/users/me", headers=bearer(user["access_token"]))

    again = await new_user(client, email=user["email"])

    assert again["id"] != user["id"]


async def test_expired_and_ended_logins_are_cleaned_up_on_a_schedule(database_url):
    settings = test_settings(
        database_url=database_url, refresh_token_ttl_seconds=1, token_cleanup_interval_seconds=0.2
    )
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            user = await new_user(client)
            await refresh(client, user["refresh_token"])  # one spent, one live token

            async def rows() -> tuple[int, int]:
                async with app.state.sessionmaker() as session:
                    families = await session.scalar(select(func.count()).select_from(TokenFamily))
                    tokens = await session.scalar(select(func.count()).select_from(RefreshToken))
                return families, tokens

            assert await rows() == (1, 2)
            for _ in range(50):  # the rows expire after 1 s; the cleanup runs every 0.2 s
                await asyncio.sleep(0.1)
                if await rows() == (0, 0):
                    break
            assert await rows() == (0, 0)
