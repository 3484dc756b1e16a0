"""Audit events: one JSON line each on stdout, with no password, hash or token in them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from app.services import users
from tests.conftest import (
    DEFAULT_PASSWORD,
    bearer,
    create_schema,
    login,
    new_user,
    refresh,
    signup,
)
from tests.conftest import test_settings as make_settings


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url=database_url, login_rate_limit="3/minute")


def audit_lines(capsys: pytest.CaptureFixture[str]) -> tuple[str, list[dict[str, Any]]]:
    """Everything written to stdout since the last call, and the audit events in it."""
    output = capsys.readouterr().out
    return output, [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def make_admin(app: FastAPI, email: str) -> None:
    # The API cannot make an admin: that is the command line's job (`create-admin`).
    await users.ensure_admin(
        app.state.transactions,
        passwords=app.state.passwords,
        email=email,
        name=None,
        password=DEFAULT_PASSWORD,
    )


async def test_a_whole_session_is_audited_without_secrets(client, capsys):
    capsys.readouterr()
    created = await signup(client, email="ada@example.com")
    tokens = (await login(client, "ada@example.com")).json()
    renewed = (await refresh(client, tokens["refresh_token"])).json()
    await client.post("/logout", headers=bearer(renewed["access_token"]))

    output, events = audit_lines(capsys)
    user_id = created.json()["id"]
    assert [event["event"] for event in events] == [
        "signup",
        "login_succeeded",
        "token_refreshed",
        "logout",
    ]
    for event in events:
        assert event["user_id"] == user_id
        assert event["client"] == "127.0.0.1"
        assert len(event["request_id"]) == 32
        assert dt.datetime.fromisoformat(event["time"]).utcoffset() == dt.timedelta(0)
    assert len({event["request_id"] for event in events}) == 4
    for secret in (
        DEFAULT_PASSWORD,
        tokens["access_token"],
        tokens["refresh_token"],
        renewed["access_token"],
        renewed["refresh_token"],
        "$argon2",
    ):
        assert secret not in output


async def test_the_request_id_sent_by_the_client_is_in_the_event(client, capsys):
    capsys.readouterr()
    response = await client.post(
        "/signup",
        json={"name": "Ada", "email": "ada@example.com", "password": DEFAULT_PASSWORD},
        headers={"X-Request-ID": "client-chosen-id-1"},
    )
    assert response.headers["X-Request-ID"] == "client-chosen-id-1"
    _, events = audit_lines(capsys)
    assert events[-1]["request_id"] == "client-chosen-id-1"


async def test_login_failures_give_one_answer_but_log_their_reason(app, client, capsys):
    user = await new_user(client, email="ada@example.com")
    other = await new_user(client, email="grace@example.com")
    await make_admin(app, "admin@example.com")
    admin = (await login(client, "admin@example.com")).json()
    await client.patch(
        f"/users/{other['id']}", json={"is_active": False}, headers=bearer(admin["access_token"])
    )
    capsys.readouterr()

    answers = [
        await login(client, "nobody@example.com", "whatever-pass"),
        await login(client, "ada@example.com", "wrong-password"),
        await login(client, "grace@example.com", DEFAULT_PASSWORD),
    ]
    assert {(answer.status_code, answer.text) for answer in answers} == {(400, answers[0].text)}
    _, events = audit_lines(capsys)
    assert [(event["event"], event.get("reason"), event["user_id"]) for event in events] == [
        ("login_failed", "unknown_email", None),
        ("login_failed", "wrong_password", user["id"]),
        ("login_failed", "inactive", other["id"]),
    ]


async def test_throttling_is_audited(client, capsys):
    for _ in range(3):
        await login(client, "nobody@example.com", "whatever-pass")
    capsys.readouterr()
    assert (await login(client, "nobody@example.com", "whatever-pass")).status_code == 429
    _, events = audit_lines(capsys)
    assert [(event["event"], event["reason"]) for event in events] == [
        ("throttled", "login_account")
    ]


async def test_refresh_token_reuse_and_revocation_are_audited(client, capsys):
    user = await new_user(client)
    await refresh(client, user["refresh_token"])
    await refresh(client, user["refresh_token"])  # spent: the login is revoked
    fresh = (await login(client, user["email"])).json()
    await client.post("/revoke", data={"token": fresh["refresh_token"]})
    await client.post("/revoke", data={"token": "not-a-token"})

    output, events = audit_lines(capsys)
    summary = [(event["event"], event["user_id"]) for event in events]
    assert summary[-5:] == [
        ("token_refreshed", user["id"]),
        ("refresh_reuse_detected", user["id"]),
        ("login_succeeded", user["id"]),
        ("token_revoked", user["id"]),
        ("token_revoked", None),
    ]
    assert fresh["refresh_token"] not in output
    assert user["refresh_token"] not in output


async def test_password_changes_are_audited(client, capsys):
    user = await new_user(client)
    headers = bearer(user["access_token"])
    new_password = "a-brand-new-passphrase"
    await client.post(
        "/users/me/password",
        json={"current_password": "wrong-password", "new_password": new_password},
        headers=headers,
    )
    await client.post(
        "/users/me/password",
        json={"current_password": user["password"], "new_password": new_password},
        headers=headers,
    )
    output, events = audit_lines(capsys)
    assert [(event["event"], event.get("reason")) for event in events[-2:]] == [
        ("password_change_failed", "wrong_password"),
        ("password_changed", None),
    ]
    assert new_password not in output and user["password"] not in output


async def test_account_changes_and_deletions_are_audited(app, client, capsys):
    await make_admin(app, "admin@example.com")
    admin_tokens = (await login(client, "admin@example.com")).json()
    admin_id = (await client.get("/users/me", headers=bearer(admin_tokens["access_token"]))).json()[
        "id"
    ]
    as_admin = bearer(admin_tokens["access_token"])
    target = await new_user(client)
    leaver = await new_user(client)
    capsys.readouterr()

    await client.patch(f"/users/{target['id']}", json={"is_active": False}, headers=as_admin)
    await client.patch(f"/users/{target['id']}", json={"is_active": True}, headers=as_admin)
    await client.patch(f"/users/{target['id']}", json={"is_admin": True}, headers=as_admin)
    await client.patch(f"/users/{target['id']}", json={"name": "Renamed"}, headers=as_admin)
    await client.delete(f"/users/{target['id']}", headers=as_admin)
    await client.delete("/users/me", headers=bearer(leaver["access_token"]))

    _, events = audit_lines(capsys)
    assert [
        (event["event"], event["user_id"], event.get("actor_id"), event.get("reason"))
        for event in events
    ] == [
        ("user_deactivated", target["id"], admin_id, None),
        ("user_reactivated", target["id"], admin_id, None),
        ("admin_granted", target["id"], admin_id, None),
        ("user_deleted", target["id"], admin_id, "admin"),
        ("user_deleted", leaver["id"], None, "self"),
    ]


async def test_audit_events_can_be_turned_off(database_url, capsys):
    app = create_app(make_settings(database_url=database_url, audit_log="off"))
    async with LifespanManager(app):
        await create_schema(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as quiet:
            capsys.readouterr()
            await signup(quiet)
    assert audit_lines(capsys)[1] == []
