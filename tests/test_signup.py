"""POST /signup: creating accounts, and every way a signup can be refused."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import DEFAULT_PASSWORD, signup


async def test_signup_creates_a_user_and_points_to_it(client):
    response = await signup(client, email="ada@example.com", name="  Ada Lovelace ")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id",
        "name",
        "email",
        "email_verified",
        "is_active",
        "is_admin",
        "created_at",
    }
    assert body["email_verified"] is False
    assert body["name"] == "Ada Lovelace"
    assert body["email"] == "ada@example.com"
    assert body["is_active"] is True
    assert body["is_admin"] is False
    assert body["created_at"].endswith("Z")
    assert response.headers["location"] == f"/users/{body['id']}"


async def test_signup_never_returns_the_password_or_its_hash(client):
    response = await signup(client, password="a-secret-nobody-knows")

    assert "a-secret-nobody-knows" not in response.text
    assert "argon2" not in response.text
    assert "password" not in response.text


async def test_signup_rejects_an_email_already_registered_in_another_case(client):
    await signup(client, email="ada@example.com")

    response = await signup(client, email="ADA@Example.COM")

    assert response.status_code == 409
    assert response.json() == {"detail": "Email already registered"}


async def test_concurrent_signups_of_one_email_create_exactly_one_account(client):
    responses = await asyncio.gather(
        *(signup(client, email=f"race@{'EXAMPLE' if i % 2 else 'example'}.com") for i in range(12))
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * 11


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "   "),
        ("name", "x" * 101),
        ("name", "x" * 10_000),
        ("name", "Ada\x00"),
        ("email", "not-an-email"),
        ("email", "ada@"),
        ("email", "a" * 300 + "@example.com"),
        ("email", "ada\x00@example.com"),
        ("password", "short"),
        ("password", "x" * 129),
        ("password", "password"),
        ("password", "Password1"),
        ("password", "qwertyuiop"),
        ("password", "long-enough\x00-but-nul"),
        ("password", "lone-surrogate-\ud800-here"),
    ],
)
async def test_signup_rejects_invalid_fields_with_422_naming_the_field(client, field, value):
    body = {"name": "Ada", "email": "ada@example.com", "password": DEFAULT_PASSWORD, field: value}

    # json.dumps escapes a lone surrogate as \ud800, as a hostile client would send it.
    response = await client.post(
        "/signup", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422
    problems = response.json()["detail"]
    assert [problem["loc"] for problem in problems] == [["body", field]]
    assert all(problem["msg"] for problem in problems)


async def test_a_422_never_echoes_the_submitted_values(client):
    secret = "my-very-private-passphrase"
    response = await client.post("/signup", json={"name": "Ada", "password": secret})

    assert response.status_code == 422
    assert secret not in response.text
    assert "input" not in response.text
    assert response.json()["detail"][0]["loc"] == ["body", "email"]


async def test_passwords_may_use_any_script_up_to_128_characters(client):
    response = await signup(client, password="пароль-密码-🔑" + "x" * 100)

    assert response.status_code == 201


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'"a string"', b"null", b'{"name": 1, "email": [], "password": {}}'],
)
async def test_malformed_bodies_get_422(client, content):
    response = await client.post(
        "/signup", content=content, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422


async def test_unknown_fields_are_refused(client):
    response = await client.post(
        "/signup",
        json={
            "name": "A",
            "email": "a@example.com",
            "password": DEFAULT_PASSWORD,
            "is_admin": True,
        },
    )

    assert response.status_code == 422
