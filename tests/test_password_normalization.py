"""Passwords compared as people type them: NFKC before hashing and verifying.

A password set in one Unicode form logs in when typed in another (NFC and NFD `ö`, full-width
letters); hashes stored before normalisation keep working and are rehashed at that login; and
unknown email, deactivated account and wrong password still cost the same verifications.
"""

from __future__ import annotations

import unicodedata
import uuid

import pytest
from passlib.hash import argon2

from app.models import User
from app.security import normalize_password
from tests.conftest import login, new_user, signup

NFC = unicodedata.normalize("NFC", "Motörhead-Überkill-Ñandú")
NFD = unicodedata.normalize("NFD", NFC)
FULL_WIDTH = "ｃｏｒｒｅｃｔ－ｈｏｒｓｅ－ｂａｔｔｅｒｙ"  # noqa: RUF001  # what an East Asian IME types


def test_the_forms_differ_as_text():
    assert NFC != NFD and len(NFD) > len(NFC)
    assert normalize_password(NFD) == normalize_password(NFC) == NFC
    assert normalize_password(FULL_WIDTH) == "correct-horse-battery"


async def _stored_hash(app, user_id: str) -> str:
    async with app.state.sessionmaker() as session:
        return (await session.get(User, uuid.UUID(user_id))).password_hash


async def _store_hash(app, user_id: str, password_hash: str) -> None:
    async with app.state.sessionmaker() as session:
        (await session.get(User, uuid.UUID(user_id))).password_hash = password_hash
        await session.commit()


def _hash_as_before_normalisation(settings, password: str) -> str:
    """A hash of the raw text with today's parameters: only the normalisation differs."""
    return argon2.using(
        type="ID",
        memory_cost=settings.password_hash_memory_kib,
        rounds=settings.password_hash_time_cost,
        parallelism=settings.password_hash_parallelism,
    ).hash(password)


@pytest.mark.parametrize(
    ("set_as", "typed_as"), [(NFC, NFD), (NFD, NFC), ("correct-horse-battery", FULL_WIDTH)]
)
async def test_a_password_logs_in_typed_in_another_unicode_form(client, set_as, typed_as):
    user = await new_user(client, password=set_as)

    response = await login(client, user["email"], typed_as)

    assert response.status_code == 200, response.text


async def test_a_password_change_accepts_the_current_password_in_another_form(client):
    user = await new_user(client, password=NFC)
    headers = {"Authorization": f"Bearer {user['access_token']}"}

    response = await client.post(
        "/users/me/password",
        json={"current_password": NFD, "new_password": "difference-engine-1822"},
        headers=headers,
    )

    assert response.status_code == 204
    assert (await login(client, user["email"], "difference-engine-1822")).status_code == 200


async def test_a_hash_of_an_unnormalised_password_works_and_is_rehashed_at_login(client, app):
    user = await new_user(client, password=NFC)
    legacy = _hash_as_before_normalisation(app.state.settings, NFD)
    await _store_hash(app, user["id"], legacy)
    # The stored hash is of the NFD text only: the NFC spelling does not match it yet.
    assert (await login(client, user["email"], NFC)).status_code == 400

    assert (await login(client, user["email"], NFD)).status_code == 200

    rehashed = await _stored_hash(app, user["id"])
    assert rehashed != legacy
    assert argon2.verify(NFC, rehashed)
    assert (await login(client, user["email"], NFC)).status_code == 200


async def _deactivate(app, user_id: str) -> None:
    async with app.state.sessionmaker() as session:
        (await session.get(User, uuid.UUID(user_id))).is_active = False
        await session.commit()


@pytest.mark.parametrize("typed", [NFD, "wrong-but-plain-ascii"], ids=["unnormalised", "ascii"])
async def test_unknown_inactive_and_wrong_password_cost_the_same_verifications(client, app, typed):
    passwords = app.state.passwords
    known = await new_user(client, password="analytical-engine-1843")
    inactive = await new_user(client, password="analytical-engine-1843")
    await _deactivate(app, inactive["id"])

    costs = {}
    for case, email in [
        ("unknown email", f"nobody-{uuid.uuid4().hex[:8]}@example.com"),
        ("wrong password", known["email"]),
        ("inactive account", inactive["email"]),
    ]:
        before = passwords.hashes_computed
        response = await login(client, email, typed)
        assert response.status_code == 400
        costs[case] = passwords.hashes_computed - before

    expected = 2 if typed != normalize_password(typed) else 1
    assert costs == dict.fromkeys(costs, expected)


async def test_a_common_password_in_full_width_letters_is_refused(client):
    response = await signup(client, password="ｐａｓｓｗｏｒｄ１２３")  # noqa: RUF001

    assert response.status_code == 422


async def test_the_minimum_length_counts_characters_as_normalised(client):
    # Seven letters, eight code points once the ö is decomposed.
    response = await signup(client, password=unicodedata.normalize("NFD", "Mötorhd"))

    assert response.status_code == 422


@pytest.mark.parametrize(
    "password",
    [
        # Seven code points as typed (the schema's minLength counts those), nine once the
        # ¾ is normalised to 3, a fraction slash and 4: found by schemathesis, accepted before.
        "~¾xg<9ã",
        # 129 code points as typed (over maxLength), 128 once each o + diaeresis is one ö.
        unicodedata.normalize("NFD", "ö") + "q7-" * 42 + "x",
    ],
    ids=["short-as-typed", "long-as-typed"],
)
async def test_the_length_limits_hold_for_the_password_as_typed_too(client, password):
    assert len(password) in (7, 129)
    assert len(normalize_password(password)) in (9, 128)

    response = await signup(client, password=password)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "password"]
