"""Admins: the create-admin command, PATCH and DELETE /users/{id}."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from app import commands
from tests.conftest import (
    DEFAULT_PASSWORD,
    bearer,
    login,
    new_user,
    refresh,
    signup,
    test_settings,
)

ROOT = Path(__file__).resolve().parent.parent


def admin_environment(database_url: str, password: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "PASSWORD_HASH_TIME_COST": "1",
        "LOG_FORMAT": "json",
    }
    env.pop("ADMIN_PASSWORD", None)
    if password is not None:
        env["ADMIN_PASSWORD"] = password
    return env


def create_admin(database_url: str, *args: str, password: str | None = DEFAULT_PASSWORD):
    env = admin_environment(database_url, password)
    return subprocess.run(
        [sys.executable, "-m", "app", "create-admin", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


async def admin_tokens(client, database_url: str) -> dict:
    """Log in as a fresh admin made by the create-admin command's code, in-process for speed."""
    settings = test_settings(database_url=database_url)
    await commands.create_admin(
        settings, email="root@example.com", name="Root", read_password=lambda: DEFAULT_PASSWORD
    )
    response = await login(client, "root@example.com")
    assert response.status_code == 200
    return response.json()


async def test_create_admin_creates_an_admin_that_can_log_in(client, database_url):
    result = create_admin(database_url, "--email", "root@example.com", "--name", "Root")
    assert result.returncode == 0, result.stderr
    assert "created admin root@example.com" in result.stdout
    tokens = (await login(client, "root@example.com")).json()

    me = (await client.get("/users/me", headers=bearer(tokens["access_token"]))).json()

    assert me["is_admin"] is True
    assert me["name"] == "Root"


async def test_create_admin_promotes_an_existing_user_and_keeps_its_password(client, database_url):
    user = await new_user(client, email="grace@example.com")

    result = create_admin(database_url, "--email", "GRACE@example.com", password=None)

    assert result.returncode == 0, result.stderr
    assert "made admin" in result.stdout
    fresh = (await login(client, "grace@example.com")).json()
    me = (await client.get("/users/me", headers=bearer(fresh["access_token"]))).json()
    assert me["is_admin"] is True and me["id"] == user["id"]


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (["--email", "not-an-email"], DEFAULT_PASSWORD, "passgate: --email: "),
        (["--email", "new@example.com"], "short", "passgate: ADMIN_PASSWORD: "),
        (["--email", "new@example.com"], None, "set ADMIN_PASSWORD"),
        (["--email", "new@example.com", "--name", ""], DEFAULT_PASSWORD, "passgate: --name: "),
    ],
)
async def test_create_admin_refuses_bad_input_with_a_clear_message(
    client, database_url, args, password, message
):
    result = create_admin(database_url, *args, password=password)

    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("passgate: ") and message in result.stderr


async def test_admins_can_rename_deactivate_and_promote(client, database_url):
    admin = await admin_tokens(client, database_url)
    user = await new_user(client)

    response = await client.patch(
        f"/users/{user['id']}",
        json={"name": "Renamed", "is_admin": True},
        headers=bearer(admin["access_token"]),
    )

    assert response.status_code == 200
    assert response.json()["name"] == "Renamed"
    assert response.json()["is_admin"] is True


async def test_deactivating_a_user_ends_its_tokens_at_once(client, database_url):
    admin = await admin_tokens(client, database_url)
    user = await new_user(client)

    response = await client.patch(
        f"/users/{user['id']}", json={"is_active": False}, headers=bearer(admin["access_token"])
    )

    assert response.status_code == 200
    assert response.json()["is_active"] is False
    me = await client.get("/users/me", headers=bearer(user["access_token"]))
    assert me.status_code == 401
    assert me.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert (await refresh(client, user["refresh_token"])).status_code == 400
    assert (await login(client, user["email"])).status_code == 400


async def test_a_reactivated_user_can_log_in_again(client, database_url):
    admin = await admin_tokens(client, database_url)
    user = await new_user(client)
    headers = bearer(admin["access_token"])
    await client.patch(f"/users/{user['id']}", json={"is_active": False}, headers=headers)

    await client.patch(f"/users/{user['id']}", json={"is_active": True}, headers=headers)

    assert (await login(client, user["email"])).status_code == 200


def audit_events(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_create_admin_records_the_promotion_as_an_audit_event(client, database_url):
    user = await new_user(client, email="grace@example.com")

    result = create_admin(database_url, "--email", "grace@example.com", password=None)

    assert result.returncode == 0, result.stderr
    events = audit_events(result.stdout)
    assert [(e["event"], e["user_id"], e["reason"]) for e in events] == [
        ("admin_granted", user["id"], "command_line")
    ]


async def test_create_admin_records_a_new_admin_as_signup_and_promotion(client, database_url):
    result = create_admin(database_url, "--email", "root@example.com")

    assert result.returncode == 0, result.stderr
    events = [(e["event"], e["reason"]) for e in audit_events(result.stdout)]
    assert events == [("signup", "command_line"), ("admin_granted", "command_line")]
    assert DEFAULT_PASSWORD not in result.stdout + result.stderr


async def test_create_admin_on_an_admin_changes_nothing(client, database_url):
    await new_user(client, email="grace@example.com")
    create_admin(database_url, "--email", "grace@example.com", password=None)

    result = create_admin(database_url, "--email", "grace@example.com", password=None)

    assert result.returncode == 0
    assert "already an admin; nothing changed" in result.stdout
    assert audit_events(result.stdout) == []


@pytest.mark.parametrize("change", ["reactivate", "rename"])
async def test_create_admin_asks_before_reactivating_or_renaming_a_user(
    client, database_url, change
):
    admin = await admin_tokens(client, database_url)
    user = await new_user(client, email="grace@example.com")
    args = ["--email", "grace@example.com"]
    if change == "reactivate":
        deactivate = {"is_active": False}
        await client.patch(
            f"/users/{user['id']}", json=deactivate, headers=bearer(admin["access_token"])
        )
    else:
        args += ["--name", "Grace Hopper"]

    refused = create_admin(database_url, *args, password=None)

    # No terminal to ask at (stdin is /dev/null): one line saying how to confirm.
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("passgate: grace@example.com exists; ")
    assert "--yes" in refused.stderr
    assert (await login(client, "grace@example.com")).status_code == (
        400 if change == "reactivate" else 200
    )

    confirmed = create_admin(database_url, *args, "--yes", password=None)

    assert confirmed.returncode == 0, confirmed.stderr
    tokens = (await login(client, "grace@example.com")).json()
    me = (await client.get("/users/me", headers=bearer(tokens["access_token"]))).json()
    assert me["is_admin"] is True and me["is_active"] is True
    assert me["name"] == ("Grace Hopper" if change == "rename" else user["name"])
    events = [e["event"] for e in audit_events(confirmed.stdout)]
    expected = ["user_reactivated"] if change == "reactivate" else []
    assert events == [*expected, "admin_granted"]


def test_ctrl_d_at_the_password_prompt_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    controller, terminal = pty.openpty()
    # A session of its own, so /dev/tty is not the terminal running the tests: getpass then
    # reads the pseudo-terminal on stdin, as it would a real one.
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "create-admin", "--email", "root@example.com"],
        env=admin_environment(url, None),
        cwd=ROOT,
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(terminal)
    try:
        assert process.stderr is not None
        prompt = b""
        while b"Password for the admin: " not in prompt:
            chunk = process.stderr.read1(1024)
            assert chunk, prompt
            prompt += chunk
        os.write(controller, b"\x04")  # Ctrl+D
        _, rest = process.communicate(timeout=60)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert (prompt + rest).decode().splitlines() == [
        "Password for the admin: ",
        "passgate: no password given (end of input); nothing was changed",
    ]


async def test_admins_can_delete_users_and_their_tokens(client, database_url):
    admin = await admin_tokens(client, database_url)
    user = await new_user(client)

    response = await client.delete(f"/users/{user['id']}", headers=bearer(admin["access_token"]))

    assert response.status_code == 204
    assert (await client.get("/users/me", headers=bearer(user["access_token"]))).status_code == 401
    assert (await refresh(client, user["refresh_token"])).status_code == 400
    lookup = await client.get(f"/users/{user['id']}", headers=bearer(admin["access_token"]))
    assert lookup.status_code == 404


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_admin_routes_refuse_non_admins_without_revealing_ids(client, method):
    caller = await new_user(client)
    target = (await signup(client)).json()

    for user_id in (target["id"], str(uuid.uuid4())):
        response = await client.request(
            method, f"/users/{user_id}", json={"name": "x"}, headers=bearer(caller["access_token"])
        )
        assert response.status_code == 403


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_admin_routes_say_404_for_unknown_ids(client, database_url, method):
    admin = await admin_tokens(client, database_url)

    response = await client.request(
        method, f"/users/{uuid.uuid4()}", json={"name": "x"}, headers=bearer(admin["access_token"])
    )

    assert response.status_code == 404


@pytest.mark.parametrize("change", [{"is_admin": False}, {"is_active": False}])
async def test_an_admin_cannot_lock_itself_out(client, database_url, change):
    admin = await admin_tokens(client, database_url)
    me = (await client.get("/users/me", headers=bearer(admin["access_token"]))).json()

    response = await client.patch(
        f"/users/{me['id']}", json=change, headers=bearer(admin["access_token"])
    )

    assert response.status_code == 403
    after = (await client.get("/users/me", headers=bearer(admin["access_token"]))).json()
    assert after["is_admin"] is True and after["is_active"] is True


async def test_an_admin_cannot_delete_itself_through_the_admin_route(client, database_url):
    admin = await admin_tokens(client, database_url)
    me = (await client.get("/users/me", headers=bearer(admin["access_token"]))).json()

    response = await client.delete(f"/users/{me['id']}", headers=bearer(admin["access_token"]))

    assert response.status_code == 403
    assert (await client.get("/users/me", headers=bearer(admin["access_token"]))).status_code == 200


@pytest.mark.parametrize(
    "body", [{"name": ""}, {"name": "x" * 101}, {"is_active": "maybe"}, {"email": "x@y.z"}]
)
async def test_bad_updates_are_422(client, database_url, body):
    admin = await admin_tokens(client, database_url)
    user = await new_user(client)

    response = await client.patch(
        f"/users/{user['id']}", json=body, headers=bearer(admin["access_token"])
    )

    assert response.status_code == 422


async def test_updating_a_user_deleted_meanwhile_is_not_found_rather_than_an_error(client, app):
    # The race the fault tests' mixed load hit: PATCH looked the user up, then another request
    # deleted it before the UPDATE. Reproduced step by step at the service layer.
    from app.db import utcnow
    from app.errors import UserNotFound
    from app.services import users

    target = await new_user(client)
    admin = await new_user(client)
    async with app.state.sessionmaker() as looking, app.state.sessionmaker() as deleting:
        stale = await users.get_user(looking, uuid.UUID(target["id"]))
        acting = await users.get_user_by_email(app.state.transactions, admin["email"])
        await looking.commit()
        assert await users.delete_user(deleting, user_id=stale.id)

    with pytest.raises(UserNotFound):
        await users.update_user(
            app.state.transactions,
            user_id=stale.id,
            acting_admin=acting,
            name="Too late",
            is_active=False,
            is_admin=None,
            now=utcnow(),
        )
