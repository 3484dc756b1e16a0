"""GET /users/me, /users/{id} and the keyset-paginated /users."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from fastapi.responses import JSONResponse

from app.models import Account
from app.schemas import UserOut, UserPage, user_json, user_page_json
from app.services.users import UserRow
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


# GET /users builds its JSON from row tuples instead of validating a UserOut per row: these pin
# that body to what FastAPI renders for the documented models, so the two can never drift.
TRICKY_NAMES = [
    "Ada Lovelace",
    "Zoë Ñúñez-Øre",
    "李小龍",
    "emoji 🦊 and ZWJ 👩‍💻",
    'quote " backslash \\ slash /',
    "line\u2028separator and \u00a0nbsp",
    "control \x01\x1f\x7f",
    "<script>&amp;</script>",
]


def test_the_page_fields_are_user_outs_fields():
    assert UserRow._fields == tuple(UserOut.model_fields)


@pytest.mark.parametrize("next_cursor", [None, "AZLq7x2ScsG9pY7bQw0e1A"])
def test_the_fast_page_body_is_what_fastapi_renders_for_user_page(next_cursor):
    plus_two = dt.timezone(dt.timedelta(hours=2))
    times = [
        dt.datetime(2026, 12, 1, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 2, 0, 0, 0, 0, tzinfo=dt.UTC),  # no fraction: isoformat drops it
        dt.datetime(2026, 12, 2, 1, 30, 0, 1, tzinfo=plus_two),  # another zone: shown in UTC
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    ]
    rows = [
        UserRow(
            id=uuid.uuid4(),
            name=name,
            email=f"u{index}@exämple.com",
            email_verified=index % 2 == 0,
            is_active=index % 3 != 0,
            is_admin=index == 1,
            created_at=times[index % len(times)],
        )
        for index, name in enumerate(TRICKY_NAMES)
    ]
    model = UserPage(
        users=[UserOut.model_validate(row._asdict()) for row in rows], next_cursor=next_cursor
    )

    body = user_page_json(rows, next_cursor)

    # Byte for byte what FastAPI sends for a route returning the model: Pydantic's own JSON
    # (its fast path), and json.dumps of the model's dump (JSONResponse, its other path).
    assert body == model.model_dump_json().encode()
    assert body == JSONResponse(model.model_dump(mode="json")).body
    assert json.loads(body)["users"][2]["created_at"] == "2026-12-01T23:30:00.000001Z"


@pytest.mark.parametrize("name", TRICKY_NAMES)
def test_the_fast_me_body_is_what_fastapi_renders_for_user_out(name):
    plus_two = dt.timezone(dt.timedelta(hours=2))
    for created_at in (
        dt.datetime(2026, 12, 2, 1, 30, 0, 1, tzinfo=plus_two),  # another zone: shown in UTC
        dt.datetime(2026, 12, 2, 0, 0, 0, 0, tzinfo=dt.UTC),  # no fraction: isoformat drops it
    ):
        account = Account(
            id=uuid.uuid4(),
            name=name,
            email="ada@exämple.com",
            email_normalized="ada@exämple.com",
            password_hash="$argon2id$not-a-real-hash",
            is_active=True,
            is_admin=False,
            created_at=created_at,
            credentials_version=3,
            email_verified=True,
        )
        model = UserOut.model_validate(account)

        body = user_json(account)

        assert body == model.model_dump_json().encode()
        assert body == JSONResponse(model.model_dump(mode="json")).body


async def test_the_page_shows_each_user_as_get_user_by_id_does(client):
    caller = await new_user(client)
    for index, name in enumerate(TRICKY_NAMES[1:4]):
        response = await signup(client, email=f"user{index}@example.com", name=name)
        assert response.status_code == 201, response.text
    headers = bearer(caller["access_token"])

    response = await client.get("/users", headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    page = response.json()
    assert len(page["users"]) == 4 and page["next_cursor"] is None
    for shown in page["users"]:
        one = await client.get(f"/users/{shown['id']}", headers=headers)
        assert shown == one.json()
