"""Headers every answer carries, request ids, and CORS off unless configured."""

from __future__ import annotations

import re

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from tests.conftest import bearer, login, new_user
from tests.conftest import test_settings as make_settings


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


async def test_every_kind_of_answer_carries_the_security_headers(client):
    user = await new_user(client)
    for response in (
        await client.get("/health"),
        await client.get("/users/me", headers=bearer(user["access_token"])),
        await client.get("/users/me"),
        await client.get("/no-such-page"),
        await client.post("/signup", json={}),
        await client.post("/token", data={"grant_type": "nonsense"}),
        await client.post("/signup", content=b"x" * 100_000),
        await client.get("/openapi.json"),
    ):
        assert_security_headers(response)


async def test_answers_with_tokens_or_user_data_are_never_stored(client):
    user = await new_user(client)
    tokens = await login(client, user["email"])
    me = await client.get("/users/me", headers=bearer(user["access_token"]))
    listing = await client.get("/users", headers=bearer(user["access_token"]))
    for response in (tokens, me, listing):
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"


async def test_json_answers_forbid_all_content(client):
    csp = (await client.get("/health")).headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp


async def test_the_docs_page_keeps_its_scripts_but_cannot_be_framed(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert csp == "frame-ancestors 'none'"
    assert response.headers["X-Frame-Options"] == "DENY"


async def test_a_sane_request_id_is_echoed(client):
    response = await client.get("/health", headers={"X-Request-ID": "trace-42.abc_DEF"})
    assert response.headers["X-Request-ID"] == "trace-42.abc_DEF"


@pytest.mark.parametrize(
    "offered", ["", "a" * 129, "has space", "semi;colon", "ünïcode", 'quote"d']
)
async def test_an_insane_request_id_is_replaced_by_a_fresh_one(client, offered):
    response = await client.get("/health", headers={"X-Request-ID": offered.encode()})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


async def test_requests_without_an_id_get_distinct_ones(client):
    first = (await client.get("/health")).headers["X-Request-ID"]
    second = (await client.get("/health")).headers["X-Request-ID"]
    assert first != second


async def test_cors_is_off_unless_origins_are_listed(client):
    response = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = await client.options(
        "/token",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_cors_allows_exactly_the_listed_origins(database_url):
    app = create_app(make_settings(database_url=database_url, cors_origins="https://app.example"))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            allowed = await client.get("/health", headers={"Origin": "https://app.example"})
            refused = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-Request-ID" in allowed.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in refused.headers
