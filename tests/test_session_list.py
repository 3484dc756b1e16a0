"""The sessions API: each login listed with its address, client and method, ended one by one."""

from __future__ import annotations

import asyncio

import httpx
from jose import jwt

from tests.conftest import DEFAULT_PASSWORD, bearer, login, new_user, refresh, signup
from tests.test_admin import admin_tokens


async def sessions_of(client: httpx.AsyncClient, access_token: str) -> list[dict]:
    response = await client.get("/users/me/sessions", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    return response.json()["sessions"]


async def me(client: httpx.AsyncClient, access_token: str) -> int:
    return (await client.get("/users/me", headers=bearer(access_token))).status_code


async def second_login(client: httpx.AsyncClient, user: dict, **headers: str) -> dict:
    response = await client.post(
        "/token",
        data={"grant_type": "password", "username": user["email"], "password": user["password"]},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_login_is_listed_with_its_address_client_and_method(app):
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 51000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        user = await new_user(client)
        tokens = await second_login(client, user, **{"User-Agent": "Ada's phone/1.0"})

        [newest, oldest] = await sessions_of(client, tokens["access_token"])

    assert newest["ip"] == "203.0.113.7"
    assert newest["user_agent"] == "Ada's phone/1.0"
    assert newest["amr"] == ["pwd"]
    assert newest["current"] is True and oldest["current"] is False
    assert newest["created_at"].endswith("Z") and newest["expires_at"] > newest["created_at"]
    assert newest["last_used_at"] == newest["created_at"]
    assert set(newest) == {
        "id", "created_at", "last_used_at", "expires_at", "ip", "user_agent", "amr", "current"
    }  # fmt: skip
    claims = jwt.get_unverified_claims(tokens["access_token"])
    assert newest["id"] == claims["sid"]


async def test_an_ipv6_client_is_recorded_as_the_throttle_counts_it(app):
    transport = httpx.ASGITransport(app=app, client=("2001:db8:1:2:3:4:5:6", 51000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        user = await new_user(client)

        [session] = await sessions_of(client, user["access_token"])

    assert session["ip"] == "2001:db8:1:2::/64"


async def test_the_user_agent_is_cut_to_256_characters(client):
    user = await new_user(client)
    tokens = await second_login(client, user, **{"User-Agent": "x" * 300})

    sessions = await sessions_of(client, tokens["access_token"])

    assert sessions[0]["user_agent"] == "x" * 256


async def test_sessions_are_listed_newest_first(client):
    user = await new_user(client)
    logins = [await second_login(client, user) for _ in range(3)]

    sessions = await sessions_of(client, logins[-1]["access_token"])

    expected = [user, *logins][::-1]
    assert [s["id"] for s in sessions] == [
        jwt.get_unverified_claims(t["access_token"])["sid"] for t in expected
    ]


async def test_last_use_moves_at_each_refresh_and_the_login_time_stays(client):
    user = await new_user(client)
    [before] = await sessions_of(client, user["access_token"])
    await asyncio.sleep(0.01)

    renewed = (await refresh(client, user["refresh_token"])).json()
    [after] = await sessions_of(client, renewed["access_token"])

    assert after["id"] == before["id"]
    assert after["created_at"] == before["created_at"]
    assert after["last_used_at"] > before["last_used_at"]
    assert after["expires_at"] > before["expires_at"]


async def test_refreshed_tokens_keep_their_logins_amr_and_auth_time(client):
    user = await new_user(client)
    first = jwt.get_unverified_claims(user["access_token"])
    await asyncio.sleep(1.1)  # auth_time has a resolution of one second

    renewed = (await refresh(client, user["refresh_token"])).json()
    claims = jwt.get_unverified_claims(renewed["access_token"])

    assert first["amr"] == claims["amr"] == ["pwd"]
    assert claims["auth_time"] == first["auth_time"]
    assert claims["iat"] > first["auth_time"]


async def test_ending_one_session_stops_its_tokens_and_leaves_the_others(client):
    user = await new_user(client)
    other = await second_login(client, user)
    [_, first_session] = await sessions_of(client, other["access_token"])

    response = await client.delete(
        f"/users/me/sessions/{first_session['id']}", headers=bearer(other["access_token"])
    )

    assert response.status_code == 204
    assert await me(client, user["access_token"]) == 401
    assert (await refresh(client, user["refresh_token"])).status_code == 400
    assert await me(client, other["access_token"]) == 200
    assert (await refresh(client, other["refresh_token"])).status_code == 200
    remaining = await sessions_of(client, other["access_token"])
    assert [s["id"] for s in remaining] != [first_session["id"]] and len(remaining) == 1


async def test_ending_the_current_session_by_its_id_logs_this_client_out(client):
    user = await new_user(client)
    other = await second_login(client, user)
    [current, _] = await sessions_of(client, other["access_token"])

    response = await client.delete(
        f"/users/me/sessions/{current['id']}", headers=bearer(other["access_token"])
    )

    assert response.status_code == 204
    assert await me(client, other["access_token"]) == 401
    assert await me(client, user["access_token"]) == 200


async def test_another_users_session_is_not_found_like_an_unknown_one(client):
    alice = await new_user(client)
    mallory = await new_user(client)
    [alices] = await sessions_of(client, alice["access_token"])

    theirs = await client.delete(
        f"/users/me/sessions/{alices['id']}", headers=bearer(mallory["access_token"])
    )
    unknown = await client.delete(
        "/users/me/sessions/00000000-0000-4000-8000-000000000000",
        headers=bearer(mallory["access_token"]),
    )

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()
    assert await me(client, alice["access_token"]) == 200


async def test_an_ended_session_is_no_longer_listed_nor_found_again(client):
    user = await new_user(client)
    other = await second_login(client, user)
    [_, first] = await sessions_of(client, other["access_token"])
    path = f"/users/me/sessions/{first['id']}"
    assert (await client.delete(path, headers=bearer(other["access_token"]))).status_code == 204

    assert (await client.delete(path, headers=bearer(other["access_token"]))).status_code == 404
    assert [s["id"] for s in await sessions_of(client, other["access_token"])] != [first["id"]]


async def test_a_malformed_session_id_is_a_422(client):
    user = await new_user(client)

    response = await client.delete(
        "/users/me/sessions/not-a-uuid", headers=bearer(user["access_token"])
    )

    assert response.status_code == 422


async def test_ending_every_other_session_keeps_this_one(client):
    user = await new_user(client)
    logins = [await second_login(client, user) for _ in range(2)]
    keeper = logins[-1]

    response = await client.delete(
        "/users/me/sessions",
        params={"except_current": "true"},
        headers=bearer(keeper["access_token"]),
    )

    assert response.status_code == 204
    assert await me(client, keeper["access_token"]) == 200
    assert await me(client, user["access_token"]) == 401
    assert await me(client, logins[0]["access_token"]) == 401
    [only] = await sessions_of(client, keeper["access_token"])
    assert only["current"] is True


async def test_ending_all_sessions_ends_this_one_too(client):
    user = await new_user(client)
    other = await second_login(client, user)

    response = await client.delete("/users/me/sessions", headers=bearer(other["access_token"]))

    assert response.status_code == 204
    assert await me(client, other["access_token"]) == 401
    assert await me(client, user["access_token"]) == 401


async def test_sessions_need_a_bearer_token(client):
    assert (await client.get("/users/me/sessions")).status_code == 401
    assert (await client.delete("/users/me/sessions")).status_code == 401


async def test_an_admin_lists_and_ends_a_users_sessions(client, database_url):
    admin = await admin_tokens(client, database_url)
    user = await new_user(client)
    await second_login(client, user)

    listed = await client.get(
        f"/users/{user['id']}/sessions", headers=bearer(admin["access_token"])
    )
    assert listed.status_code == 200
    sessions = listed.json()["sessions"]
    assert len(sessions) == 2 and not any(s["current"] for s in sessions)

    ended = await client.delete(
        f"/users/{user['id']}/sessions", headers=bearer(admin["access_token"])
    )

    assert ended.status_code == 204
    assert await me(client, user["access_token"]) == 401
    assert await me(client, admin["access_token"]) == 200
    assert (await login(client, user["email"], DEFAULT_PASSWORD)).status_code == 200


async def test_only_admins_see_other_users_sessions(client, database_url):
    admin = await admin_tokens(client, database_url)
    user = await new_user(client)
    other = await new_user(client)
    headers = bearer(other["access_token"])

    assert (await client.get(f"/users/{user['id']}/sessions", headers=headers)).status_code == 403
    assert (
        await client.delete(f"/users/{user['id']}/sessions", headers=headers)
    ).status_code == 403
    assert await me(client, user["access_token"]) == 200
    unknown = "/users/00000000-0000-4000-8000-000000000000/sessions"
    assert (await client.get(unknown, headers=bearer(admin["access_token"]))).status_code == 404


async def test_a_signup_alone_opens_no_session(client):
    created = (await signup(client)).json()
    tokens = (await login(client, created["email"])).json()

    assert len(await sessions_of(client, tokens["access_token"])) == 1
