"""The second factor through HTTP, with codes from pyotp (an implementation independent of the
service's passlib.totp) at instants set by the app's injectable clock."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import urllib.parse
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from jose import jwt
from sqlalchemy import select

from app.models import MfaToken, RecoveryCode, TotpFactor
from tests.conftest import DEFAULT_PASSWORD, bearer, login, new_user, refresh
from tests.test_admin import admin_tokens

OTP_GRANT = "urn:passgate:params:oauth:grant-type:mfa-otp"
RECOVERY_GRANT = "urn:passgate:params:oauth:grant-type:mfa-recovery-code"
# In the middle of a 30-second step, so that "one step either side" is unambiguous.
T0 = dt.datetime(2026, 12, 1, 12, 0, 15, tzinfo=dt.UTC)


class Clock:
    """The app's notion of now, moved by the test."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock(app: FastAPI) -> Clock:
    # A little behind the real time, in the middle of a 30-second step: the access tokens it
    # stamps must not look issued in the future to the bearer check as tests move it on.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    step_start = now - dt.timedelta(seconds=now.timestamp() % 30)
    clock = Clock(step_start - dt.timedelta(seconds=120 - 15))
    app.state.clock = clock
    return clock


def code_at(secret: str, when: dt.datetime, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(when + dt.timedelta(seconds=30 * steps))


async def enrol(client: httpx.AsyncClient, user: dict[str, Any], clock: Clock) -> dict[str, Any]:
    """Enrol and confirm a TOTP factor; the user with its `secret` and `recovery_codes`.

    The clock moves to the next step, so the confirming code's step is in the past.
    """
    started = await client.post(
        "/users/me/mfa/totp",
        json={"current_password": user["password"]},
        headers=bearer(user["access_token"]),
    )
    assert started.status_code == 201, started.text
    secret = started.json()["secret"]
    confirmed = await client.post(
        "/users/me/mfa/totp/confirm",
        json={"code": code_at(secret, clock.now)},
        headers=bearer(user["access_token"]),
    )
    assert confirmed.status_code == 200, confirmed.text
    clock.advance(30)
    return {**user, "secret": secret, "recovery_codes": confirmed.json()["recovery_codes"]}


async def password_step(client: httpx.AsyncClient, user: dict[str, Any]) -> httpx.Response:
    return await login(client, user["email"], user["password"])


async def mfa_token_of(client: httpx.AsyncClient, user: dict[str, Any]) -> str:
    response = await password_step(client, user)
    assert response.status_code == 403, response.text
    return response.json()["mfa_token"]


async def otp_step(client: httpx.AsyncClient, mfa_token: str, code: str) -> httpx.Response:
    return await client.post(
        "/token", data={"grant_type": OTP_GRANT, "mfa_token": mfa_token, "otp": code}
    )


async def recovery_step(client: httpx.AsyncClient, mfa_token: str, code: str) -> httpx.Response:
    return await client.post(
        "/token", data={"grant_type": RECOVERY_GRANT, "mfa_token": mfa_token, "recovery_code": code}
    )


async def me(client: httpx.AsyncClient, access_token: str) -> int:
    return (await client.get("/users/me", headers=bearer(access_token))).status_code


async def mfa_status(client: httpx.AsyncClient, user: dict[str, Any]) -> dict[str, Any]:
    response = await client.get("/users/me/mfa", headers=bearer(user["access_token"]))
    assert response.status_code == 200
    return response.json()


async def test_enrolment_offers_a_160_bit_secret_as_base32_uri_and_svg(client, clock):
    user = await new_user(client, email="ada@example.com")

    response = await client.post(
        "/users/me/mfa/totp",
        json={"current_password": DEFAULT_PASSWORD},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 201
    body = response.json()
    assert len(base64.b32decode(body["secret"])) == 20
    assert body["otpauth_uri"] == (
        f"otpauth://totp/Passgate:ada@example.com?secret={body['secret']}"
        "&issuer=Passgate&algorithm=SHA1&digits=6&period=30"
    )
    parsed = pyotp.parse_uri(body["otpauth_uri"])
    assert parsed.secret == body["secret"] and parsed.issuer == "Passgate"
    assert (
        body["qr_svg"].startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in body["qr_svg"]
    )
    assert await mfa_status(client, user) == {"totp_enabled": False, "recovery_codes_left": 0}


async def test_enrolment_needs_the_current_password(client, clock):
    user = await new_user(client)

    response = await client.post(
        "/users/me/mfa/totp",
        json={"current_password": "not-my-password"},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 400


async def test_confirming_turns_the_factor_on_with_ten_recovery_codes(client, clock):
    user = await enrol(client, await new_user(client), clock)

    codes = user["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    # At least 100 random bits each: 24 base32 letters carry 120.
    assert all(len(code.replace("-", "")) == 24 for code in codes)
    assert await mfa_status(client, user) == {"totp_enabled": True, "recovery_codes_left": 10}


async def test_a_wrong_confirmation_code_is_a_400_and_leaves_the_factor_off(client, clock):
    user = await new_user(client)
    started = await client.post(
        "/users/me/mfa/totp",
        json={"current_password": DEFAULT_PASSWORD},
        headers=bearer(user["access_token"]),
    )
    secret = started.json()["secret"]

    wrong = await client.post(
        "/users/me/mfa/totp/confirm",
        json={"code": code_at(secret, clock.now, steps=2)},
        headers=bearer(user["access_token"]),
    )

    assert wrong.status_code == 400
    assert (await mfa_status(client, user))["totp_enabled"] is False
    assert (await password_step(client, user)).status_code == 200


async def test_confirming_with_nothing_pending_is_a_409(client, clock):
    user = await new_user(client)

    response = await client.post(
        "/users/me/mfa/totp/confirm", json={"code": "123456"}, headers=bearer(user["access_token"])
    )

    assert response.status_code == 409


async def test_a_pending_enrolment_lapses_after_ten_minutes(client, clock):
    user = await new_user(client)
    started = await client.post(
        "/users/me/mfa/totp",
        json={"current_password": DEFAULT_PASSWORD},
        headers=bearer(user["access_token"]),
    )
    clock.advance(10 * 60 + 1)

    response = await client.post(
        "/users/me/mfa/totp/confirm",
        json={"code": code_at(started.json()["secret"], clock.now)},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 409


async def test_a_new_enrolment_replaces_the_pending_one(client, clock):
    user = await new_user(client)
    headers = bearer(user["access_token"])
    first = await client.post(
        "/users/me/mfa/totp", json={"current_password": DEFAULT_PASSWORD}, headers=headers
    )
    second = await client.post(
        "/users/me/mfa/totp", json={"current_password": DEFAULT_PASSWORD}, headers=headers
    )
    assert first.json()["secret"] != second.json()["secret"]

    old = await client.post(
        "/users/me/mfa/totp/confirm",
        json={"code": code_at(first.json()["secret"], clock.now)},
        headers=headers,
    )
    new = await client.post(
        "/users/me/mfa/totp/confirm",
        json={"code": code_at(second.json()["secret"], clock.now)},
        headers=headers,
    )

    assert old.status_code == 400
    assert new.status_code == 200


async def test_enrolling_again_once_enabled_is_a_409(client, clock):
    user = await enrol(client, await new_user(client), clock)

    response = await client.post(
        "/users/me/mfa/totp",
        json={"current_password": DEFAULT_PASSWORD},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 409


async def test_confirming_ends_every_other_session_and_keeps_this_one(client, clock):
    user = await new_user(client)
    other = (await password_step(client, user)).json()

    enrolled = await enrol(client, user, clock)

    assert await me(client, enrolled["access_token"]) == 200
    assert await me(client, other["access_token"]) == 401
    assert (await refresh(client, other["refresh_token"])).status_code == 400
    assert (await refresh(client, user["refresh_token"])).status_code == 200


async def test_secrets_are_stored_encrypted_and_recovery_codes_only_hashed(client, app, clock):
    user = await enrol(client, await new_user(client), clock)

    async with app.state.sessionmaker() as session:
        [sealed] = (await session.scalars(select(TotpFactor.secret_encrypted))).all()
        hashes = (await session.scalars(select(RecoveryCode.code_hash))).all()
    raw_secret = base64.b32decode(user["secret"])
    assert user["secret"] not in sealed and raw_secret.hex() not in sealed
    assert user["secret"].lower() not in sealed.lower()
    assert len(hashes) == 10
    for code in user["recovery_codes"]:
        assert all(code.replace("-", "") not in stored for stored in hashes)


async def test_the_password_grant_answers_mfa_required_without_tokens(client, clock):
    user = await enrol(client, await new_user(client), clock)

    response = await password_step(client, user)

    assert response.status_code == 403
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == "mfa_required"
    assert body["mfa_methods"] == ["totp", "recovery_code"]
    assert isinstance(body["error_description"], str) and len(body["mfa_token"]) >= 43
    assert "access_token" not in body and "refresh_token" not in body


async def test_a_wrong_password_still_gets_the_generic_answer(client, clock):
    user = await enrol(client, await new_user(client), clock)

    response = await login(client, user["email"], "not-the-password")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "mfa_token" not in response.json()


async def test_the_otp_step_returns_tokens_with_amr_and_auth_time(client, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)

    response = await otp_step(client, mfa_token, code_at(user["secret"], clock.now))

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    tokens = response.json()
    assert tokens["token_type"] == "bearer" and tokens["refresh_token"]
    claims = jwt.get_unverified_claims(tokens["access_token"])
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["auth_time"] == int(clock.now.timestamp())
    assert await me(client, tokens["access_token"]) == 200
    renewed = (await refresh(client, tokens["refresh_token"])).json()
    renewed_claims = jwt.get_unverified_claims(renewed["access_token"])
    assert renewed_claims["amr"] == ["pwd", "otp", "mfa"]
    assert renewed_claims["auth_time"] == claims["auth_time"]


async def test_the_mfa_session_is_listed_with_its_amr(client, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)
    tokens = (await otp_step(client, mfa_token, code_at(user["secret"], clock.now))).json()

    sessions = await client.get("/users/me/sessions", headers=bearer(tokens["access_token"]))
    [current] = [s for s in sessions.json()["sessions"] if s["current"]]

    assert current["amr"] == ["pwd", "otp", "mfa"]


@pytest.mark.parametrize("steps", [-1, 1])
async def test_a_code_one_step_early_or_late_is_accepted(client, clock, steps):
    user = await enrol(client, await new_user(client), clock)
    clock.advance(30)  # so that one step early is not the step that confirmed enrolment
    mfa_token = await mfa_token_of(client, user)

    response = await otp_step(client, mfa_token, code_at(user["secret"], clock.now, steps=steps))

    assert response.status_code == 200


@pytest.mark.parametrize("steps", [-2, 2])
async def test_a_code_two_steps_away_is_refused(client, clock, steps):
    user = await enrol(client, await new_user(client), clock)
    clock.advance(60)  # two steps after the confirming code, so -2 is not merely a replay
    mfa_token = await mfa_token_of(client, user)

    response = await otp_step(client, mfa_token, code_at(user["secret"], clock.now, steps=steps))

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_a_code_with_spaces_is_accepted(client, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)
    code = code_at(user["secret"], clock.now)

    response = await otp_step(client, mfa_token, f"{code[:3]} {code[3:]}")

    assert response.status_code == 200


async def test_a_code_is_accepted_once_replay_on_a_second_login_fails(client, clock):
    user = await enrol(client, await new_user(client), clock)
    code = code_at(user["secret"], clock.now)
    assert (await otp_step(client, await mfa_token_of(client, user), code)).status_code == 200

    replayed = await otp_step(client, await mfa_token_of(client, user), code)

    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_grant"


async def test_an_earlier_step_after_a_later_one_is_refused(client, clock):
    user = await enrol(client, await new_user(client), clock)
    ahead = code_at(user["secret"], clock.now, steps=1)
    assert (await otp_step(client, await mfa_token_of(client, user), ahead)).status_code == 200

    behind = await otp_step(
        client, await mfa_token_of(client, user), code_at(user["secret"], clock.now)
    )

    assert behind.status_code == 400


async def test_the_code_that_confirmed_enrolment_cannot_log_in(client, app, clock):
    user = await new_user(client)
    started = await client.post(
        "/users/me/mfa/totp",
        json={"current_password": DEFAULT_PASSWORD},
        headers=bearer(user["access_token"]),
    )
    secret = started.json()["secret"]
    code = code_at(secret, clock.now)
    confirmed = await client.post(
        "/users/me/mfa/totp/confirm", json={"code": code}, headers=bearer(user["access_token"])
    )
    assert confirmed.status_code == 200

    response = await otp_step(client, await mfa_token_of(client, user), code)

    assert response.status_code == 400


async def test_parallel_logins_with_one_code_get_one_session(client, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_tokens = [await mfa_token_of(client, user) for _ in range(5)]
    code = code_at(user["secret"], clock.now)

    responses = await asyncio.gather(*(otp_step(client, token, code) for token in mfa_tokens))

    assert sorted(r.status_code for r in responses) == [200, 400, 400, 400, 400]


async def test_an_mfa_token_is_spent_by_its_success(client, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)
    assert (
        await otp_step(client, mfa_token, code_at(user["secret"], clock.now))
    ).status_code == 200
    clock.advance(30)

    again = await otp_step(client, mfa_token, code_at(user["secret"], clock.now))

    assert again.status_code == 400


async def test_an_mfa_token_dies_after_five_wrong_codes(client, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)
    right = code_at(user["secret"], clock.now)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert (await otp_step(client, mfa_token, wrong)).status_code == 400

    response = await otp_step(client, mfa_token, right)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    # The right code was not spent by the dead token: a fresh login still takes it.
    assert (await otp_step(client, await mfa_token_of(client, user), right)).status_code == 200


async def test_twenty_parallel_guesses_get_five_tries_between_them(client, app, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)
    right = code_at(user["secret"], clock.now)
    guesses = [f"{(int(right) + n) % 1_000_000:06d}" for n in range(1, 21)]

    responses = await asyncio.gather(*(otp_step(client, mfa_token, g) for g in guesses))

    assert all(r.status_code in (400, 429) for r in responses)
    async with app.state.sessionmaker() as session:
        [attempts] = (await session.scalars(select(MfaToken.attempts))).all()
    assert attempts == 5
    assert (await otp_step(client, mfa_token, right)).status_code == 400


async def test_twenty_parallel_guesses_with_the_right_code_among_them_win_at_most_once(
    client, clock
):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)
    right = code_at(user["secret"], clock.now)
    guesses = [f"{(int(right) + n) % 1_000_000:06d}" for n in range(1, 20)] + [right]

    responses = await asyncio.gather(*(otp_step(client, mfa_token, g) for g in guesses))

    assert sum(r.status_code == 200 for r in responses) <= 1
    assert sum(r.status_code != 200 for r in responses) >= 19


async def test_an_mfa_token_expires_after_five_minutes(client, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)
    clock.advance(5 * 60 + 1)

    response = await otp_step(client, mfa_token, code_at(user["secret"], clock.now))

    assert response.status_code == 400


async def test_an_mfa_token_still_works_just_before_five_minutes(client, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)
    clock.advance(5 * 60 - 5)

    response = await otp_step(client, mfa_token, code_at(user["secret"], clock.now))

    assert response.status_code == 200


async def test_one_users_mfa_token_with_another_users_code_fails(client, clock):
    alice = await enrol(client, await new_user(client), clock)
    bob = await enrol(client, await new_user(client), clock)
    alices_token = await mfa_token_of(client, alice)

    with_bobs_code = await otp_step(client, alices_token, code_at(bob["secret"], clock.now))
    with_bobs_recovery = await recovery_step(client, alices_token, bob["recovery_codes"][0])

    assert with_bobs_code.status_code == 400
    assert with_bobs_recovery.status_code == 400
    # Bob's recovery code was not spent by the attempt.
    assert (await mfa_status(client, bob))["recovery_codes_left"] == 10


@pytest.mark.parametrize("grant", [OTP_GRANT, RECOVERY_GRANT])
async def test_an_unknown_mfa_token_is_invalid_grant(client, clock, grant):
    field = "otp" if grant == OTP_GRANT else "recovery_code"

    response = await client.post(
        "/token", data={"grant_type": grant, "mfa_token": "x" * 43, field: "123456"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("missing", ["mfa_token", "otp"])
async def test_a_missing_field_of_the_otp_grant_is_invalid_request(client, clock, missing):
    data = {"grant_type": OTP_GRANT, "mfa_token": "x" * 43, "otp": "123456"}
    del data[missing]

    response = await client.post("/token", data=data)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_an_mfa_token_is_neither_a_refresh_nor_an_access_token(client, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)

    assert (await refresh(client, mfa_token)).status_code == 400
    assert await me(client, mfa_token) == 401
    revoked = await client.post("/revoke", data={"token": mfa_token})
    assert revoked.status_code == 200
    # Still usable afterwards: /revoke does not know it, and did nothing to it.
    assert (
        await otp_step(client, mfa_token, code_at(user["secret"], clock.now))
    ).status_code == 200


async def test_refresh_and_access_tokens_are_not_mfa_tokens(client, clock):
    user = await enrol(client, await new_user(client), clock)
    code = code_at(user["secret"], clock.now)

    as_refresh = await otp_step(client, user["refresh_token"], code)
    as_access = await otp_step(client, user["access_token"], code)

    assert as_refresh.status_code == as_access.status_code == 400
    assert as_refresh.json()["error"] == "invalid_grant"


async def test_a_recovery_code_logs_in_once_with_amr_pwd_mfa(client, clock):
    user = await enrol(client, await new_user(client), clock)
    code = user["recovery_codes"][3]

    first = await recovery_step(client, await mfa_token_of(client, user), code)
    second = await recovery_step(client, await mfa_token_of(client, user), code)

    assert first.status_code == 200
    assert jwt.get_unverified_claims(first.json()["access_token"])["amr"] == ["pwd", "mfa"]
    assert second.status_code == 400
    assert (await mfa_status(client, user))["recovery_codes_left"] == 9


async def test_recovery_codes_ignore_case_spaces_and_hyphens(client, clock):
    user = await enrol(client, await new_user(client), clock)
    code = user["recovery_codes"][0]
    mangled = " ".join(re.findall(".{1,3}", code.replace("-", "").upper()))

    response = await recovery_step(client, await mfa_token_of(client, user), mangled)

    assert response.status_code == 200


async def test_a_totp_code_is_not_a_recovery_code_nor_the_reverse(client, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)

    assert (
        await recovery_step(client, mfa_token, code_at(user["secret"], clock.now))
    ).status_code == 400
    assert (await otp_step(client, mfa_token, user["recovery_codes"][0])).status_code == 400


async def test_regenerating_voids_the_old_set(client, clock):
    user = await enrol(client, await new_user(client), clock)
    old = user["recovery_codes"]

    response = await client.post(
        "/users/me/mfa/recovery-codes",
        json={"current_password": DEFAULT_PASSWORD, "code": code_at(user["secret"], clock.now)},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 200
    new = response.json()["recovery_codes"]
    assert len(new) == 10 and not set(new) & set(old)
    assert (
        await recovery_step(client, await mfa_token_of(client, user), old[0])
    ).status_code == 400
    assert (
        await recovery_step(client, await mfa_token_of(client, user), new[0])
    ).status_code == 200


async def test_regenerating_needs_password_and_code(client, clock):
    user = await enrol(client, await new_user(client), clock)
    headers = bearer(user["access_token"])
    code = code_at(user["secret"], clock.now)

    wrong_password = await client.post(
        "/users/me/mfa/recovery-codes",
        json={"current_password": "not-my-password", "code": code},
        headers=headers,
    )
    wrong_code = await client.post(
        "/users/me/mfa/recovery-codes",
        json={
            "current_password": DEFAULT_PASSWORD,
            "code": "000000" if code != "000000" else "111111",
        },
        headers=headers,
    )

    assert wrong_password.status_code == wrong_code.status_code == 400
    assert (
        await recovery_step(client, await mfa_token_of(client, user), user["recovery_codes"][0])
    ).status_code == 200


async def test_regenerating_without_a_second_factor_is_a_409(client, clock):
    user = await new_user(client)

    response = await client.post(
        "/users/me/mfa/recovery-codes",
        json={"current_password": DEFAULT_PASSWORD, "code": "123456"},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 409


async def test_removal_with_password_and_code_turns_the_factor_off(client, clock):
    user = await enrol(client, await new_user(client), clock)

    response = await client.request(
        "DELETE",
        "/users/me/mfa/totp",
        json={"current_password": DEFAULT_PASSWORD, "code": code_at(user["secret"], clock.now)},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 204
    assert await mfa_status(client, user) == {"totp_enabled": False, "recovery_codes_left": 0}
    tokens = await password_step(client, user)
    assert tokens.status_code == 200
    assert jwt.get_unverified_claims(tokens.json()["access_token"])["amr"] == ["pwd"]


async def test_removal_with_a_recovery_code_works_and_spends_it(client, clock):
    user = await enrol(client, await new_user(client), clock)

    response = await client.request(
        "DELETE",
        "/users/me/mfa/totp",
        json={"current_password": DEFAULT_PASSWORD, "code": user["recovery_codes"][0]},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 204


@pytest.mark.parametrize("which", ["password", "code", "replayed code"])
async def test_removal_needs_the_password_and_a_fresh_code(client, clock, which):
    user = await enrol(client, await new_user(client), clock)
    code = code_at(user["secret"], clock.now)
    if which == "replayed code":
        assert (await otp_step(client, await mfa_token_of(client, user), code)).status_code == 200
    body = {
        "current_password": "not-my-password" if which == "password" else DEFAULT_PASSWORD,
        "code": f"{(int(code) + 1) % 1_000_000:06d}" if which == "code" else code,
    }

    response = await client.request(
        "DELETE", "/users/me/mfa/totp", json=body, headers=bearer(user["access_token"])
    )

    assert response.status_code == 400
    assert (await mfa_status(client, user))["totp_enabled"] is True


async def test_an_admin_removes_a_users_second_factor_and_ends_its_sessions(
    client, database_url, clock
):
    admin = await admin_tokens(client, database_url)
    user = await enrol(client, await new_user(client), clock)

    response = await client.delete(
        f"/users/{user['id']}/mfa", headers=bearer(admin["access_token"])
    )

    assert response.status_code == 204
    assert await me(client, user["access_token"]) == 401
    assert (await password_step(client, user)).status_code == 200


async def test_removing_a_second_factor_is_for_admins_only(client, database_url, clock):
    admin = await admin_tokens(client, database_url)
    user = await enrol(client, await new_user(client), clock)
    other = await new_user(client)

    refused = await client.delete(f"/users/{user['id']}/mfa", headers=bearer(other["access_token"]))
    unknown = await client.delete(
        "/users/00000000-0000-4000-8000-000000000000/mfa", headers=bearer(admin["access_token"])
    )

    assert refused.status_code == 403
    assert unknown.status_code == 404
    assert (await mfa_status(client, user))["totp_enabled"] is True


async def test_an_mfa_token_dies_with_an_admins_removal(client, database_url, clock):
    admin = await admin_tokens(client, database_url)
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)

    await client.delete(f"/users/{user['id']}/mfa", headers=bearer(admin["access_token"]))

    assert (
        await otp_step(client, mfa_token, code_at(user["secret"], clock.now))
    ).status_code == 400


async def test_wrong_codes_count_toward_the_login_throttle(client, clock):
    user = await enrol(client, await new_user(client), clock)
    right = code_at(user["secret"], clock.now)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    # LOGIN_RATE_LIMIT is 10 a minute: two mfa_tokens' five tries use it up.
    for _ in range(2):
        mfa_token = await mfa_token_of(client, user)
        for _ in range(5):
            assert (await otp_step(client, mfa_token, wrong)).status_code == 400

    throttled = await password_step(client, user)

    assert throttled.status_code == 429
    assert "retry-after" in throttled.headers


async def test_a_passed_password_step_does_not_reset_the_count_of_wrong_codes(client, clock):
    user = await enrol(client, await new_user(client), clock)
    right = code_at(user["secret"], clock.now)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    statuses = []
    for _ in range(11):
        # A new mfa_token each time: every password step passes, and the codes still add up.
        step = await password_step(client, user)
        statuses.append(step.status_code)
        if step.status_code == 403:
            statuses.append((await otp_step(client, step.json()["mfa_token"], wrong)).status_code)

    assert statuses[:20] == [403, 400] * 10
    assert statuses[20] == 429


async def test_a_successful_second_step_clears_the_account_count(client, clock):
    user = await enrol(client, await new_user(client), clock)
    right = code_at(user["secret"], clock.now)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    mfa_token = await mfa_token_of(client, user)
    for _ in range(4):
        await otp_step(client, mfa_token, wrong)
    assert (await otp_step(client, mfa_token, right)).status_code == 200
    clock.advance(30)

    for _ in range(8):
        assert (await password_step(client, user)).status_code == 403


async def test_the_audit_log_records_the_second_factor(client, clock, capsys):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)
    await otp_step(
        client, mfa_token, "000000" if code_at(user["secret"], clock.now) != "000000" else "111111"
    )
    await otp_step(client, mfa_token, code_at(user["secret"], clock.now))

    out = capsys.readouterr().out
    for event in ("mfa_enrolment_started", "mfa_enabled", "mfa_required", "mfa_failed"):
        assert f'"event": "{event}"' in out, event
    assert '"reason": "totp"' in out
    assert user["secret"] not in out and mfa_token not in out


def test_otpauth_uri_quotes_the_email():
    from app.security import new_totp_secret, totp_uri

    uri = totp_uri(new_totp_secret(), account="a+b@example.com")

    assert urllib.parse.unquote(uri.split("?")[0]) == "otpauth://totp/Passgate:a+b@example.com"


async def test_a_password_change_after_the_password_step_voids_its_mfa_token(client, clock):
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)
    changed = await client.post(
        "/users/me/password",
        json={"current_password": DEFAULT_PASSWORD, "new_password": "a-brand-new-passphrase"},
        headers=bearer(user["access_token"]),
    )
    assert changed.status_code == 204

    response = await otp_step(client, mfa_token, code_at(user["secret"], clock.now))

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_a_deactivation_after_the_password_step_voids_its_mfa_token(
    client, database_url, clock
):
    admin = await admin_tokens(client, database_url)
    user = await enrol(client, await new_user(client), clock)
    mfa_token = await mfa_token_of(client, user)
    deactivated = await client.patch(
        f"/users/{user['id']}", json={"is_active": False}, headers=bearer(admin["access_token"])
    )
    assert deactivated.status_code == 200

    response = await otp_step(client, mfa_token, code_at(user["secret"], clock.now))

    assert response.status_code == 400
