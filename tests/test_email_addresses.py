"""One account per address, in every script: signup, login, the throttle and create-admin share
one normalisation (app/email_addresses.py); the migration re-keys old rows without losing any."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import unicodedata
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app import commands
from app.email_addresses import InvalidEmail, canonical_email, email_key, lookup_key
from app.migrate import downgrade_blocking, upgrade_blocking
from app.ratelimit import account_key
from tests.conftest import login, signup, test_settings

NFC_ADDRESS = "zoë@example.com"
NFD_ADDRESS = unicodedata.normalize("NFD", NFC_ADDRESS)
FULLWIDTH_DOMAIN = "ada@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com"  # fullwidth "example"
FULLWIDTH_LOCAL = "\uff45\uff58@example.com"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        (NFD_ADDRESS, NFC_ADDRESS),
        ("ada@xn--bcher-kva.example", "ada@bücher.example"),
        (FULLWIDTH_DOMAIN, "ada@example.com"),
        ("  Ada@Example.COM ", "Ada@example.com"),
    ],
    ids=["nfd", "punycode", "fullwidth-domain", "spaces-and-case"],
)
async def test_an_account_logs_in_with_the_very_string_it_signed_up_with(client, typed, stored):
    created = await signup(client, email=typed)
    assert created.status_code == 201, created.text
    assert created.json()["email"] == stored

    assert (await login(client, typed)).status_code == 200
    assert (await login(client, stored)).status_code == 200


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("straße@example.com", "STRASSE@example.com"),
        ("strasse@example.com", "Straße@example.com"),
        ("οδοσ@example.com", "ΟΔΟΣ@example.com"),
        ("ΟΔΟΣ@example.com", "οδος@example.com"),  # final sigma
        (FULLWIDTH_LOCAL, "EX@example.com"),
        ("ada@bücher.example", "ADA@xn--bcher-kva.example"),
        (NFC_ADDRESS, NFD_ADDRESS.upper()),
    ],
    ids=["sharp-s", "sharp-s-later", "greek", "final-sigma", "fullwidth", "idna", "nfd"],
)
async def test_two_spellings_of_one_address_are_one_account(client, first, second):
    assert (await signup(client, email=first)).status_code == 201

    again = await signup(client, email=second, password="another-long-passphrase")

    assert again.status_code == 409
    assert (await login(client, second)).status_code == 200  # the first account's password


async def test_addresses_that_only_look_alike_stay_two_accounts(client):
    assert (await signup(client, email="ada@example.com")).status_code == 201
    # Cyrillic a (U+0430) is a different letter, not a spelling: no folding makes it Latin.
    assert (await signup(client, email="\u0430da@example.com")).status_code == 201


@pytest.mark.parametrize(
    "username",
    [
        "not-an-address",
        "ada@",
        "@example.com",
        "ada@localhost",
        "Ada <ada@example.com>",
        "ada\uff20example.com",  # a fullwidth at sign: folds to "@", yet no address
    ],
)
async def test_a_login_with_no_address_is_a_failed_login_costing_a_hash(client, app, username):
    await signup(client, email="ada@example.com")
    hashes = app.state.passwords.hashes_computed

    response = await login(client, username)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    # The same path as an unknown address: a (dummy) hash is verified, so no faster answer.
    assert app.state.passwords.hashes_computed == hashes + 1


def test_every_spelling_of_an_address_counts_against_one_throttle_key():
    spellings = [
        "straße@example.com",
        "STRASSE@EXAMPLE.COM",
        " Strasse@example.com",
        "strasse@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
    ]
    assert len({account_key(spelling) for spelling in spellings}) == 1
    assert account_key(NFD_ADDRESS) == account_key(NFC_ADDRESS.upper())
    assert account_key("not an address") == account_key("NOT AN ADDRESS")
    assert account_key("not an address") != account_key("not an address either")


def test_keys_and_canonical_forms():
    assert canonical_email("ada@xn--bcher-kva.example") == "ada@bücher.example"
    assert email_key("ΟΔΟΣ@Example.com") == email_key("οδος@example.com") == "οδοσ@example.com"
    assert email_key(FULLWIDTH_LOCAL) == "ex@example.com"
    with pytest.raises(InvalidEmail):
        email_key("ada@localhost")
    assert lookup_key("ADA@Example.com") == "ada@example.com"
    assert lookup_key("ada\uff20example.com") != lookup_key("ada@example.com")
    long_fold = "\ufdfa" * 21 + "@example.com"  # a ligature NFKD spells in 18 letters
    assert canonical_email(long_fold) == long_fold
    with pytest.raises(InvalidEmail):  # its key would not fit the column's 320 characters
        email_key(long_fold)


async def test_create_admin_finds_the_account_under_another_spelling(client, database_url):
    await signup(client, email="straße@example.com")

    message = await commands.create_admin(
        test_settings(database_url=database_url),
        email="STRASSE@example.com",
        name=None,
        read_password=lambda: pytest.fail("an existing account needs no password"),
    )

    assert message.startswith("made admin straße@example.com")


# The migration: rows made under the old lower-case keys, re-keyed and back again.

BEFORE_EMAIL_KEYS = "0005_mail"
OLD_ROWS = [
    # (email as stored, key under lower())
    ("straße@example.com", "straße@example.com"),
    ("STRASSE@example.com", "strasse@example.com"),
    ("ΟΔΟΣ@example.com", "οδος@example.com"),
    ("οδοσ@example.com", "οδοσ@example.com"),
    (FULLWIDTH_LOCAL, FULLWIDTH_LOCAL.lower()),
    ("ada@bücher.example", "ada@bücher.example"),
    ("legacy@localhost", "legacy@localhost"),
]


async def _insert_old_rows(url: str) -> list[uuid.UUID]:
    engine = create_async_engine(url)
    ids = []
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    async with engine.begin() as connection:
        for position, (email, key) in enumerate(OLD_ROWS):
            user_id = uuid.uuid4()
            ids.append(user_id)
            await connection.execute(
                text(
                    "INSERT INTO users (id, name, email, email_normalized, password_hash, "
                    "is_active, is_admin, created_at, credentials_version) VALUES "
                    "(:id, 'Old', :email, :key, 'x', true, false, :created_at, 0)"
                ),
                {
                    "id": user_id.hex if url.startswith("sqlite") else user_id,
                    "email": email,
                    "key": key,
                    "created_at": start + dt.timedelta(days=position),
                },
            )
    await engine.dispose()
    return ids


async def _keys(url: str) -> dict[str, str]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT email, email_normalized FROM users"))).all()
    await engine.dispose()
    return {email: key for email, key in rows}


async def test_the_migration_rekeys_reports_collisions_and_loses_no_row(empty_database_url, caplog):
    url = empty_database_url
    await asyncio.to_thread(upgrade_blocking, url, BEFORE_EMAIL_KEYS)
    ids = dict(zip([email for email, _ in OLD_ROWS], await _insert_old_rows(url), strict=True))
    before = await _keys(url)

    with caplog.at_level(logging.WARNING, logger="passgate.migrations"):
        await asyncio.to_thread(upgrade_blocking, url, "0006_email_keys")

    after = await _keys(url)
    assert set(after) == set(before)  # every row is still there
    assert len(set(after.values())) == len(after)
    # The row that already held the new key keeps it; the others keep their previous key.
    assert after["STRASSE@example.com"] == "strasse@example.com"
    assert after["straße@example.com"] == "straße@example.com"
    assert after["οδοσ@example.com"] == "οδοσ@example.com"
    assert after["ΟΔΟΣ@example.com"] == "οδος@example.com"
    assert after[FULLWIDTH_LOCAL] == "ex@example.com"  # no collision: simply re-keyed
    assert after["legacy@localhost"] == "legacy@localhost"
    report = "\n".join(record.getMessage() for record in caplog.records)
    for email in ("straße@example.com", "STRASSE@example.com"):
        assert str(ids[email]) in report
    for email in ("ΟΔΟΣ@example.com", "οδοσ@example.com", "legacy@localhost"):
        assert str(ids[email]) in report
    assert str(ids["ada@bücher.example"]) not in report

    await asyncio.to_thread(downgrade_blocking, url, BEFORE_EMAIL_KEYS)

    assert await _keys(url) == before
