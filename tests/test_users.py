"""GET /users/me, /users/{id} and the keyset-paginated /users."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import bearer, new_user, signup


async def test_me_returns_the_caller(client):
    user = await new_user(client, email="ada@example.com")

    response = await client.get("/users/me", headers=bearer(user["access_token"]))

    assert response.status_code == 200
    assert response.json() == {key: user[key] for key in response.json()}
    assert response.json()["email"] == "ada@example.com"


async def test_a_user_can_be_read_by_id(client):
    caller = await new_user(client)
    other = (await signup(client, email="grace@example.com")).json()

    response = await client.get(f"/users/{other['id']}", headers=bearer(caller["access_token"]))

    assert response.status_code == 200
    assert response.json() == other


async def test_an_unknown_id_is_404(client):
    caller = await new_user(client)

    response = await client.get(f"/users/{uuid.uuid4()}", headers=bearer(caller["access_token"]))

    assert response.status_code == 404


async def test_a_malformed_id_is_422(client):
    caller = await new_user(client)

    response = await client.get("/users/not-a-uuid", headers=bearer(caller["access_token"]))

    assert response.status_code == 422


@pytest.mark.parametrize("path", ["/users", "/users/me", f"/users/{uuid.uuid4()}"])
async def test_user_routes_need_a_token(client, path):
    response = await client.get(path)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_list_pages_through_everyone_oldest_first(client):
    caller = await new_user(client)
    for i in range(6):
        await signup(client, email=f"user{i}@example.com")
    headers = bearer(caller["access_token"])

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/users", params=params, headers=headers)
        assert response.status_code == 200
        body = response.json()
        assert len(body["users"]) <= 3
        seen += [user["email"] for user in body["users"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert seen == [caller["email"]] + [f"user{i}@example.com" for i in range(6)]


async def test_paging_is_stable_while_users_sign_up(client):
    caller = await new_user(client)
    for i in range(5):
        await signup(client, email=f"before{i}@example.com")
    headers = bearer(caller["access_token"])

    first = (await client.get("/users", params={"limit": 2}, headers=headers)).json()
    await signup(client, email="during1@example.com")
    second = (
        await client.get(
            "/users", params={"limit": 2, "cursor": first["next_cursor"]}, headers=headers
        )
    ).json()
    await signup(client, email="during2@example.com")
    rest = (
        await client.get(
            "/users", params={"limit": 100, "cursor": second["next_cursor"]}, headers=headers
        )
    ).json()

    emails = [u["email"] for page in (first, second, rest) for u in page["users"]]
    assert len(emails) == len(set(emails)), "no user appears twice"
    assert emails == [caller["email"]] + [f"before{i}@example.com" for i in range(5)] + [
        "during1@example.com",
        "during2@example.com",
    ]
    assert rest["next_cursor"] is None


async def test_an_exactly_full_last_page_says_it_is_the_last(client):
    caller = await new_user(client)
    await signup(client)
    headers = bearer(caller["access_token"])

    first = (await client.get("/users", params={"limit": 1}, headers=headers)).json()
    last = (
        await client.get(
            "/users", params={"limit": 1, "cursor": first["next_cursor"]}, headers=headers
        )
    ).json()
    whole = (await client.get("/users", params={"limit": 2}, headers=headers)).json()

    assert first["next_cursor"] is not None
    assert len(last["users"]) == 1 and last["next_cursor"] is None
    assert len(whole["users"]) == 2 and whole["next_cursor"] is None


async def test_the_default_page_size_is_50(client):
    caller = await new_user(client)

    body = (await client.get("/users", headers=bearer(caller["access_token"]))).json()

    assert body == {"users": [body["users"][0]], "next_cursor": None}


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"cursor": "not-a-cursor"},
        {"cursor": "AAAA"},
        {"cursor": "x" * 200},
        {"cursor": "AAAAAAAAAAAAAAAAAAAAA\x00"},
        {"cursor": "ÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿ"},
    ],
)
async def test_bad_paging_parameters_are_422(client, params):
    caller = await new_user(client)

    response = await client.get("/users", params=params, headers=bearer(caller["access_token"]))

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"
