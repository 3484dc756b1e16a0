"""Password reset, address verification and address change, through mail a real SMTP server got."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select, text, update

from app.config import Settings
from app.main import create_app
from app.models import OneTimeToken
from tests.conftest import DEFAULT_PASSWORD, bearer, login, new_user, refresh, signup
from tests.conftest import test_settings as make_settings
from tests.mail import MailServer
from tests.test_mfa import Clock, code_at, enrol, otp_step

NEW_PASSWORD = "a-brand-new-passphrase-42"
RESET = "Reset your"
VERIFY = "Confirm your email"
CHANGE = "Confirm your new email"
PUBLIC_URL = "https://auth.example.org"


@pytest.fixture
def settings(database_url: str, mail_server: MailServer) -> Settings:
    return make_settings(database_url=database_url, public_url=PUBLIC_URL, **mail_server.settings())


@contextlib.asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


async def request_reset(client: httpx.AsyncClient, email: str, **kwargs: Any) -> httpx.Response:
    return await client.post("/password-reset", json={"email": email}, **kwargs)


async def confirm_reset(
    client: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD
) -> httpx.Response:
    return await client.post(
        "/password-reset/confirm", json={"token": token, "new_password": password}
    )


async def confirm_address(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/email-verification/confirm", json={"token": token})


async def reset_token(client, mail_server: MailServer, email: str) -> str:
    assert (await request_reset(client, email)).status_code == 202
    [mail] = await mail_server.wait_for(email, subject=RESET)
    return mail.token


async def test_signup_mails_a_verification_link_that_verifies_the_address(client, mail_server):
    user = await new_user(client, email="ada@example.com")
    assert user["email_verified"] is False

    [mail] = await mail_server.wait_for("ada@example.com", subject=VERIFY)
    assert mail.link.startswith(f"{PUBLIC_URL}/email-verification#token=")
    assert mail.message["From"] == "Passgate <no-reply@localhost>"
    assert "Ada Lovelace" in mail.text and "Ada Lovelace" in mail.html
    response = await confirm_address(client, mail.token)

    assert response.status_code == 200
    assert response.json()["email_verified"] is True
    assert response.json()["email"] == "ada@example.com"
    me = await client.get("/users/me", headers=bearer(user["access_token"]))
    assert me.json()["email_verified"] is True
    # Spent by its first use.
    assert (await confirm_address(client, mail.token)).status_code == 400


async def test_a_new_verification_link_voids_the_older_one(client, mail_server):
    await signup(client, email="ada@example.com")
    [first] = await mail_server.wait_for("ada@example.com", subject=VERIFY)
    body = {"email": "ADA@example.com"}

    assert (await client.post("/email-verification", json=body)).status_code == 202
    _, second = await mail_server.wait_for("ada@example.com", subject=VERIFY, count=2)

    assert (await confirm_address(client, first.token)).status_code == 400
    assert (await confirm_address(client, second.token)).status_code == 200


async def test_a_verified_address_gets_no_new_verification_link(client, mail_server):
    await signup(client, email="ada@example.com")
    [mail] = await mail_server.wait_for("ada@example.com", subject=VERIFY)
    await confirm_address(client, mail.token)

    response = await client.post("/email-verification", json={"email": "ada@example.com"})
    assert response.status_code == 202
    # The sender works in order: once a later mail arrived, an earlier one would have too.
    await reset_token(client, mail_server, "ada@example.com")
    assert len(mail_server.messages("ada@example.com")) == 2


async def test_password_reset_through_the_mailed_link(client, mail_server):
    user = await new_user(client, email="ada@example.com")
    response = await request_reset(client, "ada@example.com")
    assert response.status_code == 202

    [mail] = await mail_server.wait_for("ada@example.com", subject=RESET)
    assert mail.link.startswith(f"{PUBLIC_URL}/password-reset#token=")
    assert len(mail.token) == 43  # 256 bits, base64url
    assert mail.message.get_body(preferencelist=("html",)) is not None
    response = await confirm_reset(client, mail.token)

    assert response.status_code == 204
    assert response.content == b""
    # Every session of the user ended, access and refresh tokens alike.
    me = await client.get("/users/me", headers=bearer(user["access_token"]))
    assert me.status_code == 401
    assert (await refresh(client, user["refresh_token"])).json()["error"] == "invalid_grant"
    assert (await login(client, "ada@example.com")).status_code == 400
    logged_in = await login(client, "ada@example.com", NEW_PASSWORD)
    assert logged_in.status_code == 200
    # The link proved the address, and a notice went to it.
    me = await client.get("/users/me", headers=bearer(logged_in.json()["access_token"]))
    assert me.json()["email_verified"] is True
    [notice] = await mail_server.wait_for("ada@example.com", subject="password was reset")
    assert "#token=" not in notice.text


async def test_a_password_reset_leaves_the_second_factor_on(app, client, mail_server):
    # Whoever reads the mailbox gets the first factor only: the reset must not turn the
    # second one off, and the new password alone must not log in.
    clock = Clock(dt.datetime.now(dt.UTC))
    app.state.clock = clock
    user = await enrol(client, await new_user(client, email="ada@example.com"), clock)

    assert (
        await confirm_reset(client, await reset_token(client, mail_server, "ada@example.com"))
    ).status_code == 204

    step = await login(client, "ada@example.com", NEW_PASSWORD)
    assert step.status_code == 403, step.text
    assert "access_token" not in step.json() and "refresh_token" not in step.json()
    tokens = await otp_step(client, step.json()["mfa_token"], code_at(user["secret"], clock.now))
    assert tokens.status_code == 200, tokens.text
    status = await client.get("/users/me/mfa", headers=bearer(tokens.json()["access_token"]))
    # The recovery codes too: all ten are still there.
    assert status.json() == {"totp_enabled": True, "recovery_codes_left": 10}


async def test_a_reset_token_works_once(client, mail_server):
    await new_user(client, email="ada@example.com")
    token = await reset_token(client, mail_server, "ada@example.com")

    assert (await confirm_reset(client, token)).status_code == 204
    again = await confirm_reset(client, token, "yet-another-passphrase-7")
    assert again.status_code == 400
    assert (await login(client, "ada@example.com", NEW_PASSWORD)).status_code == 200


async def test_two_concurrent_confirmations_give_exactly_one_success(client, mail_server):
    await new_user(client, email="ada@example.com")
    token = await reset_token(client, mail_server, "ada@example.com")

    answers = await asyncio.gather(
        *(confirm_reset(client, token, f"racing-passphrase-{n}") for n in range(6))
    )

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [204, 400, 400, 400, 400, 400]
    winner = next(n for n, answer in enumerate(answers) if answer.status_code == 204)
    assert (
        await login(client, "ada@example.com", f"racing-passphrase-{winner}")
    ).status_code == 200


async def test_a_new_reset_request_voids_the_older_link(client, mail_server, settings):
    await new_user(client, email="ada@example.com")
    first = await reset_token(client, mail_server, "ada@example.com")
    # Past the per-address cooldown (a state the API reaches only by waiting a minute).
    async with service(settings.model_copy(update={"recovery_cooldown_seconds": 0})) as (_, fresh):
        assert (await request_reset(fresh, "ada@example.com")).status_code == 202
        _, second = await mail_server.wait_for("ada@example.com", subject=RESET, count=2)

        assert (await confirm_reset(fresh, first)).status_code == 400
        assert (await confirm_reset(fresh, second.token)).status_code == 204


async def test_an_expired_reset_token_is_refused(app, client, mail_server):
    await new_user(client, email="ada@example.com")
    token = await reset_token(client, mail_server, "ada@example.com")
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(OneTimeToken).values(
                expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            )
        )
        await session.commit()

    assert (await confirm_reset(client, token)).status_code == 400
    assert (await login(client, "ada@example.com")).status_code == 200


async def test_each_token_serves_its_own_purpose_only(client, mail_server):
    await signup(client, email="ada@example.com")
    [verification] = await mail_server.wait_for("ada@example.com", subject=VERIFY)
    reset = await reset_token(client, mail_server, "ada@example.com")

    assert (await confirm_reset(client, verification.token)).status_code == 400
    assert (await confirm_address(client, reset)).status_code == 400
    assert (await confirm_reset(client, reset)).status_code == 204
    # The reset verified the address and voided the verification link.
    assert (await confirm_address(client, verification.token)).status_code == 400


@pytest.mark.parametrize(
    "token",
    ["", "x", "A" * 43, "not a token at all", "é" * 43, "A" * 42 + "=", "A" * 512],
)
async def test_any_bad_token_gets_one_answer(client, token):
    reset = await confirm_reset(client, token)
    confirm = await confirm_address(client, token)

    assert reset.status_code == confirm.status_code == 400
    assert reset.json() == confirm.json() == {"detail": reset.json()["detail"]}


async def test_a_weak_new_password_is_a_422_and_spends_nothing(client, mail_server):
    await new_user(client, email="ada@example.com")
    token = await reset_token(client, mail_server, "ada@example.com")

    assert (await confirm_reset(client, token, "password")).status_code == 422
    assert (await confirm_reset(client, token)).status_code == 204


async def test_registered_unknown_and_deactivated_addresses_get_the_same_answer(
    client, mail_server, database_url
):
    from tests.test_admin import admin_tokens

    admin = await admin_tokens(client, database_url)
    gone = await new_user(client, email="gone@example.com")
    await client.patch(
        f"/users/{gone['id']}", json={"is_active": False}, headers=bearer(admin["access_token"])
    )
    await new_user(client, email="ada@example.com")

    answers = [
        await request_reset(client, email)
        for email in ("nobody@example.com", "gone@example.com", "ada@example.com")
    ]

    assert {answer.status_code for answer in answers} == {202}
    assert len({answer.content for answer in answers}) == 1
    assert len({tuple(sorted(answer.headers.keys())) for answer in answers}) == 1
    await mail_server.wait_for("ada@example.com", subject=RESET)
    assert not [m for m in mail_server.messages() if RESET in m.subject and "ada" not in m.to]


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"},
        {"Forwarded": "host=evil.example;proto=http", "X-Original-Host": "evil.example"},
    ],
)
async def test_a_spoofed_host_never_reaches_the_link(client, mail_server, headers):
    await new_user(client, email="ada@example.com")

    assert (await request_reset(client, "ada@example.com", headers=headers)).status_code == 202
    [mail] = await mail_server.wait_for("ada@example.com", subject=RESET)

    assert mail.link.startswith(f"{PUBLIC_URL}/password-reset#token=")
    assert "evil" not in mail.message.as_string()


async def test_the_operators_own_pages_get_the_token_in_the_fragment(settings, mail_server):
    own = settings.model_copy(
        update={"password_reset_url": "https://app.example.org/account/reset"}
    )
    async with service(own) as (_, client):
        await new_user(client, email="ada@example.com")
        token = await reset_token(client, mail_server, "ada@example.com")
        [mail] = mail_server.messages("ada@example.com")[-1:]

    assert mail.link == f"https://app.example.org/account/reset#token={token}"


async def test_recovery_requests_are_limited_per_client_address(settings):
    limited = settings.model_copy(update={"recovery_rate_limit": "3/minute"})
    async with service(limited) as (_, client):
        for number in range(3):
            answer = await request_reset(client, f"someone-{number}@example.com")
            assert answer.status_code == 202
        refused = await client.post("/email-verification", json={"email": "x@example.com"})

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0


async def test_a_second_request_inside_the_cooldown_sends_no_second_mail(client, mail_server):
    await new_user(client, email="ada@example.com")
    await new_user(client, email="bob@example.com")

    for _ in range(3):
        assert (await request_reset(client, "ada@example.com")).status_code == 202
    await reset_token(client, mail_server, "bob@example.com")

    assert len(mail_server.messages("ada@example.com")) == 2  # verification + one reset
    assert len([m for m in mail_server.messages("ada@example.com") if RESET in m.subject]) == 1


async def test_malformed_requests_are_422(client):
    for body in ({"email": "not-an-address"}, {}, {"email": "a@example.com", "extra": 1}):
        assert (await client.post("/password-reset", json=body)).status_code == 422
        assert (await client.post("/email-verification", json=body)).status_code == 422
    response = await client.post("/password-reset/confirm", json={"token": "x"})
    assert response.status_code == 422


async def test_no_token_is_at_rest_in_clear(app, client, mail_server):
    await new_user(client, email="ada@example.com")
    token = await reset_token(client, mail_server, "ada@example.com")

    async with app.state.sessionmaker() as session:
        stored = (await session.scalars(select(OneTimeToken.token_hash))).all()
        everything = []
        for table in ("outbox", "one_time_tokens", "users"):
            everything += (await session.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608 - fixed names

    assert hashlib.sha256(token.encode()).hexdigest() in stored
    assert token not in repr(everything)


async def test_a_link_of_a_user_deactivated_since_is_refused(client, mail_server, database_url):
    from tests.test_admin import admin_tokens

    admin = await admin_tokens(client, database_url)
    user = await new_user(client, email="ada@example.com")
    token = await reset_token(client, mail_server, "ada@example.com")
    await client.patch(
        f"/users/{user['id']}", json={"is_active": False}, headers=bearer(admin["access_token"])
    )

    assert (await confirm_reset(client, token)).status_code == 400


async def test_a_password_change_mails_a_notice_and_voids_the_links(client, mail_server):
    user = await new_user(client, email="ada@example.com")
    token = await reset_token(client, mail_server, "ada@example.com")

    changed = await client.post(
        "/users/me/password",
        json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(user["access_token"]),
    )

    assert changed.status_code == 204
    [notice] = await mail_server.wait_for("ada@example.com", subject="password was changed")
    assert "#token=" not in notice.text
    assert (await confirm_reset(client, token, "some-other-passphrase-1")).status_code == 400


async def test_require_email_verification_holds_back_only_the_right_password(settings, mail_server):
    strict = settings.model_copy(update={"require_email_verification": True})
    async with service(strict) as (_, client):
        await signup(client, email="ada@example.com")
        unverified = await login(client, "ada@example.com")
        wrong = await login(client, "ada@example.com", "not-the-password-at-all")
        [mail] = await mail_server.wait_for("ada@example.com", subject=VERIFY)
        await confirm_address(client, mail.token)
        verified = await login(client, "ada@example.com")

    assert unverified.status_code == 400
    assert unverified.json() == {
        "error": "invalid_grant",
        "error_description": "email address not verified",
    }
    assert wrong.json()["error_description"] != "email address not verified"
    assert verified.status_code == 200


async def test_create_admin_marks_its_user_verified(client, database_url):
    from tests.test_admin import admin_tokens

    admin = await admin_tokens(client, database_url)
    me = await client.get("/users/me", headers=bearer(admin["access_token"]))

    assert me.json()["email_verified"] is True


async def test_a_user_renames_itself(client):
    user = await new_user(client)

    response = await client.patch(
        "/users/me", json={"name": "  Augusta Ada  "}, headers=bearer(user["access_token"])
    )

    assert response.status_code == 200
    assert response.json()["name"] == "Augusta Ada"
    assert (await client.get("/users/me", headers=bearer(user["access_token"]))).json()[
        "name"
    ] == "Augusta Ada"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x" * 101},
        {"name": "A", "is_admin": True},
        {"name": "A", "email_verified": True},
        {"email": "x@example.com"},
    ],
)
async def test_patch_me_takes_only_a_valid_name(client, body):
    user = await new_user(client)

    response = await client.patch("/users/me", json=body, headers=bearer(user["access_token"]))

    assert response.status_code == 422
    me = (await client.get("/users/me", headers=bearer(user["access_token"]))).json()
    assert me["is_admin"] is False and me["email_verified"] is False


async def change_email(client, user, new_email: str, password: str = DEFAULT_PASSWORD):
    return await client.post(
        "/users/me/email",
        json={"new_email": new_email, "current_password": password},
        headers=bearer(user["access_token"]),
    )


async def test_an_address_changes_when_the_new_one_confirms(client, mail_server):
    user = await new_user(client, email="ada@example.com")

    response = await change_email(client, user, "ada@lovelace.example")
    assert response.status_code == 202
    me = await client.get("/users/me", headers=bearer(user["access_token"]))
    assert me.json()["email"] == "ada@example.com"  # not until the link is used

    [mail] = await mail_server.wait_for("ada@lovelace.example", subject=CHANGE)
    assert mail.link.startswith(f"{PUBLIC_URL}/email-verification#token=")
    confirmed = await confirm_address(client, mail.token)

    assert confirmed.status_code == 200
    assert confirmed.json()["email"] == "ada@lovelace.example"
    assert confirmed.json()["email_verified"] is True
    [notice] = await mail_server.wait_for("ada@example.com", subject="address of your")
    assert "#token=" not in notice.text
    # Sessions go on; the new address logs in, the old one no longer does.
    me = await client.get("/users/me", headers=bearer(user["access_token"]))
    assert me.json()["email"] == "ada@lovelace.example"
    assert (await login(client, "ada@lovelace.example")).status_code == 200
    assert (await login(client, "ada@example.com")).status_code == 400
    assert (await confirm_address(client, mail.token)).status_code == 400


async def test_an_address_change_voids_the_other_links(client, mail_server):
    user = await new_user(client, email="ada@example.com")
    reset = await reset_token(client, mail_server, "ada@example.com")
    await change_email(client, user, "ada@lovelace.example")
    [mail] = await mail_server.wait_for("ada@lovelace.example", subject=CHANGE)
    [verification] = await mail_server.wait_for("ada@example.com", subject=VERIFY)

    assert (await confirm_address(client, mail.token)).status_code == 200
    assert (await confirm_reset(client, reset)).status_code == 400
    # A verification link of the old address proves nothing about the new one.
    assert (await confirm_address(client, verification.token)).status_code == 400


async def test_an_address_change_needs_the_password_and_a_free_new_address(client, mail_server):
    user = await new_user(client, email="ada@example.com")
    await new_user(client, email="bob@example.com")

    wrong = await change_email(client, user, "ada@lovelace.example", "not-the-password-at-all")
    same = await change_email(client, user, "ADA@example.com")
    taken = await change_email(client, user, "Bob@example.com")
    invalid = await change_email(client, user, "not-an-address")
    anonymous = await client.post(
        "/users/me/email",
        json={"new_email": "x@example.com", "current_password": DEFAULT_PASSWORD},
    )

    assert wrong.status_code == 400
    assert same.status_code == 422
    assert taken.status_code == 409
    assert invalid.status_code == 422
    assert anonymous.status_code == 401


async def test_an_address_registered_meanwhile_is_a_409_at_confirmation(client, mail_server):
    user = await new_user(client, email="ada@example.com")
    await change_email(client, user, "ada@lovelace.example")
    [mail] = await mail_server.wait_for("ada@lovelace.example", subject=CHANGE)
    await signup(client, email="Ada@Lovelace.example")

    response = await confirm_address(client, mail.token)

    assert response.status_code == 409
    me = await client.get("/users/me", headers=bearer(user["access_token"]))
    assert me.json()["email"] == "ada@example.com"


async def test_wrong_passwords_at_address_change_count_toward_the_login_throttle(settings):
    limited = settings.model_copy(update={"login_rate_limit": "2/minute"})
    async with service(limited) as (_, client):
        user = await new_user(client, email="ada@example.com")
        answers = [
            await change_email(client, user, "new@example.com", "not-the-password-at-all")
            for _ in range(3)
        ]

    assert [answer.status_code for answer in answers] == [400, 400, 429]
    assert "Retry-After" in answers[2].headers
