"""import-users: accounts with their old password hashes, from JSON lines or the Flask tutorial.

Every hash here is made by the library that makes it in the wild (Werkzeug, bcrypt,
argon2-cffi, passlib), or, for Django, built by hand from its hasher's format.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import argon2
import bcrypt
import pytest
from passlib.hash import pbkdf2_sha256, pbkdf2_sha512
from sqlalchemy import select, update
from werkzeug.security import generate_password_hash

from app import cli, commands
from app.models import User
from tests.conftest import bearer, login, new_user
from tests.flask_tutorial import create_tutorial_app, log_in, sign_up

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "old-system-password-1"
WRONG = "old-system-password-2"
# What test_settings() configures: an upgraded hash carries these parameters.
OUR_ARGON2 = "$argon2id$v=19$m=1024,t=1,p=1$"


def django_pbkdf2_sha256(password: str, iterations: int) -> str:
    """Django's PBKDF2PasswordHasher.encode, from its documented format:
    algorithm$iterations$salt$base64(pbkdf2_hmac(sha256, password, salt, iterations))."""
    salt = secrets.token_urlsafe(16).replace("-", "a").replace("_", "b")[:22]
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


def django_argon2(password: str) -> str:
    """Django's Argon2PasswordHasher: its name, then argon2-cffi's string (Django's defaults)."""
    hasher = argon2.PasswordHasher(time_cost=2, memory_cost=102_400, parallelism=8)
    return "argon2" + hasher.hash(password)


def django_bcrypt_sha256(password: str) -> str:
    """Django's BCryptSHA256PasswordHasher: bcrypt of the password's SHA-256 hex digest."""
    digest = hashlib.sha256(password.encode()).hexdigest().encode()
    return "bcrypt_sha256$" + bcrypt.hashpw(digest, bcrypt.gensalt(rounds=10)).decode()


def werkzeug_single_round(method: str, password: str) -> str:
    """What Werkzeug before 2.3 made for method="sha256" (the tutorial's) or "sha1" (before
    0.9's default): one HMAC of the password keyed with the salt. Werkzeug 3 no longer can."""
    salt = secrets.token_hex(4)
    digest = hmac.new(salt.encode(), password.encode(), method).hexdigest()
    return f"{method}${salt}${digest}"


def bcrypt_hash(password: str, *, prefix: bytes = b"2b", rounds: int = 10) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds, prefix=prefix)).decode()


ACCEPTED = {
    # Werkzeug 2.3 to 3.1's default, and the pbkdf2 defaults of 0.15, 2.0, 2.3 and 3.1.
    "werkzeug scrypt (2.3-3.1 default)": lambda: generate_password_hash(PASSWORD),
    "werkzeug pbkdf2 150000 (0.15-1.0)": lambda: generate_password_hash(
        PASSWORD, method="pbkdf2:sha256:150000", salt_length=8
    ),
    "werkzeug pbkdf2 260000 (2.0-2.2)": lambda: generate_password_hash(
        PASSWORD, method="pbkdf2:sha256:260000"
    ),
    "werkzeug pbkdf2 600000 (2.3-3.0)": lambda: generate_password_hash(
        PASSWORD, method="pbkdf2:sha256:600000"
    ),
    "werkzeug pbkdf2 (3.1 default)": lambda: generate_password_hash(PASSWORD, method="pbkdf2"),
    "werkzeug pbkdf2 sha512": lambda: generate_password_hash(
        PASSWORD, method="pbkdf2:sha512:210000"
    ),
    "bcrypt 2b": lambda: bcrypt_hash(PASSWORD),
    "bcrypt 2a": lambda: bcrypt_hash(PASSWORD, prefix=b"2a"),
    # PHP's password_hash writes $2y$: the same algorithm as $2b$ under another name.
    "bcrypt 2y": lambda: "$2y$" + bcrypt_hash(PASSWORD)[4:],
    "argon2-cffi defaults": lambda: argon2.PasswordHasher().hash(PASSWORD),
    "argon2i": lambda: argon2.PasswordHasher(
        time_cost=3, memory_cost=4096, parallelism=2, type=argon2.Type.I
    ).hash(PASSWORD),
    "passlib pbkdf2_sha256": lambda: pbkdf2_sha256.using(rounds=200_000).hash(PASSWORD),
    "passlib pbkdf2_sha512": lambda: pbkdf2_sha512.using(rounds=100_000).hash(PASSWORD),
    "django pbkdf2_sha256 (4.0)": lambda: django_pbkdf2_sha256(PASSWORD, 320_000),
    "django argon2": lambda: django_argon2(PASSWORD),
    "django bcrypt_sha256": lambda: django_bcrypt_sha256(PASSWORD),
    "django bcrypt": lambda: "bcrypt$" + bcrypt_hash(PASSWORD),
}

REFUSED = {
    "plain": ("plain$$" + PASSWORD, "weak hash: a password in plain text"),
    "werkzeug md5": (werkzeug_single_round("md5", PASSWORD), "weak hash: MD5"),
    "werkzeug sha1 (before 0.9)": (werkzeug_single_round("sha1", PASSWORD), "weak hash: SHA-1"),
    "werkzeug sha256 (the tutorial's)": (
        werkzeug_single_round("sha256", PASSWORD),
        "weak hash: a single salted SHA-2 round",
    ),
    "werkzeug pbkdf2 sha1 1000 (0.9-0.11)": (
        generate_password_hash(PASSWORD, method="pbkdf2:sha1:1000", salt_length=8),
        "weak hash: PBKDF2 with SHA-1",
    ),
    "werkzeug pbkdf2 50000 (0.12-0.14)": (
        generate_password_hash(PASSWORD, method="pbkdf2:sha256:50000", salt_length=8),
        "weak hash: PBKDF2 with 50000 iterations",
    ),
    "werkzeug pbkdf2 without iterations": (
        "pbkdf2:sha256$abcdefgh$" + "0" * 64,
        "without an explicit hash and iteration count",
    ),
    "passlib pbkdf2_sha256 default rounds": (
        pbkdf2_sha256.using(rounds=29_000).hash(PASSWORD),
        "weak hash: PBKDF2 with 29000 iterations",
    ),
    "django 1.11 pbkdf2": (
        django_pbkdf2_sha256(PASSWORD, 36_000),
        "weak hash: PBKDF2 with 36000 iterations",
    ),
    "md5 hex": (hashlib.md5(PASSWORD.encode()).hexdigest(), "weak hash: MD5"),  # noqa: S324  # the weak format under test
    "sha1 hex": (hashlib.sha1(PASSWORD.encode()).hexdigest(), "weak hash: SHA-1"),  # noqa: S324
    "md5-crypt": ("$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", "weak hash: MD5"),
    "scrypt 1 GiB": (
        "scrypt:1048576:8:1$abcdefghijklmnop$" + "0" * 128,
        "hash too costly: scrypt n=1048576,r=8,p=1",
    ),
    "scrypt p=64": ("scrypt:16384:8:64$abcdefghijklmnop$" + "0" * 128, "hash too costly"),
    "pbkdf2 100 million": (
        "pbkdf2:sha256:100000000$abcdefgh$" + "0" * 64,
        "hash too costly: PBKDF2 with 100000000 iterations",
    ),
    "bcrypt cost 20": (
        "$2b$20$" + bcrypt_hash(PASSWORD, rounds=4)[7:],
        "hash too costly: bcrypt cost 20",
    ),
    "argon2 4 GiB": (
        "$argon2id$v=19$m=4194304,t=3,p=1$c29tZXNhbHRzb21lc2FsdA$" + "A" * 43,
        "hash too costly: Argon2 m=4194304",
    ),
    "argon2 t=1000": (
        "$argon2id$v=19$m=65536,t=1000,p=1$c29tZXNhbHRzb21lc2FsdA$" + "A" * 43,
        "hash too costly",
    ),
    "django argon2 4 GiB": (
        "argon2$argon2id$v=19$m=4194304,t=3,p=1$c29tZXNhbHRzb21lc2FsdA$" + "A" * 43,
        "hash too costly: Argon2 m=4194304",
    ),
    "django bcrypt_sha256 cost 20": (
        "bcrypt_sha256$$2b$20$" + bcrypt_hash(PASSWORD, rounds=4)[7:],
        "hash too costly: bcrypt cost 20",
    ),
    "garbage": ("not-a-hash-at-all", "unsupported hash format"),
    "truncated bcrypt": (bcrypt_hash(PASSWORD, rounds=4)[:40], "unsupported hash format"),
    "too long": ("$2b$10$" + "a" * 300, "longer than 255"),
}


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    )
    return path


async def run_import(
    settings, path: Path | None = None, *, tutorial: Path | None = None, dry_run=False
):
    return await commands.import_users(
        settings,
        file=str(path) if path is not None else None,
        flask_tutorial=str(tutorial) if tutorial is not None else None,
        dry_run=dry_run,
        emit=lambda line: None,
    )


async def stored_hash(app, email: str) -> str | None:
    async with app.state.sessionmaker() as session:
        return await session.scalar(
            select(User.password_hash).where(User.email_normalized == email.lower())
        )


async def user_count(app) -> int:
    async with app.state.sessionmaker() as session:
        return len((await session.scalars(select(User.id))).all())


@pytest.mark.parametrize("make_hash", ACCEPTED.values(), ids=ACCEPTED.keys())
async def test_an_imported_hash_logs_in_with_its_password_and_becomes_argon2id(
    client, app, settings, tmp_path, make_hash
):
    old_hash = make_hash()
    path = write_lines(
        tmp_path / "users.jsonl",
        [{"email": "ada@example.com", "name": "Ada", "password_hash": old_hash}],
    )
    report = await run_import(settings, path)
    assert (report.created, report.skipped, report.rejected) == (1, 0, 0), report.lines

    wrong = await login(client, "ada@example.com", WRONG)
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    assert await stored_hash(app, "ada@example.com") == old_hash  # a failure changes nothing

    right = await login(client, "ada@example.com", PASSWORD)
    assert right.status_code == 200, right.text
    upgraded = await stored_hash(app, "ada@example.com")
    assert upgraded.startswith(OUR_ARGON2)

    assert (await login(client, "ada@example.com", PASSWORD)).status_code == 200
    assert (await login(client, "ada@example.com", WRONG)).status_code == 400
    me = await client.get("/users/me", headers=bearer(right.json()["access_token"]))
    assert me.json()["email"] == "ada@example.com"


@pytest.mark.parametrize(("bad_hash", "reason"), REFUSED.values(), ids=REFUSED.keys())
async def test_weak_malformed_and_too_costly_hashes_are_rejected_without_being_printed(
    app, settings, tmp_path, bad_hash, reason
):
    path = write_lines(
        tmp_path / "users.jsonl",
        [{"email": "weak@example.com", "name": "Weak", "password_hash": bad_hash}],
    )
    report = await run_import(settings, path)

    assert (report.created, report.rejected) == (0, 1)
    [line] = report.lines
    assert line.startswith("line 1 (weak@example.com): rejected: ")
    assert reason in line
    assert bad_hash not in line and PASSWORD not in line
    assert await user_count(app) == 0


@pytest.mark.parametrize(
    "bomb",
    [REFUSED["argon2 4 GiB"][0], REFUSED["scrypt 1 GiB"][0], REFUSED["bcrypt cost 20"][0]],
    ids=["argon2", "scrypt", "bcrypt"],
)
async def test_a_too_costly_hash_in_the_database_fails_a_login_without_being_computed(
    client, app, bomb
):
    # A row the import would refuse, written behind its back: the login refuses it as well,
    # at the cost of an unknown email (computing it would take gigabytes or minutes).
    user = await new_user(client)
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(User).where(User.email == user["email"]).values(password_hash=bomb)
        )
        await session.commit()
    before = app.state.passwords.hashes_computed

    response = await login(client, user["email"], user["password"])

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert app.state.passwords.hashes_computed == before + 1  # one dummy verification
    assert await stored_hash(app, user["email"]) == bomb


async def test_a_password_longer_than_bcrypt_takes_is_an_invalid_grant(
    client, app, settings, tmp_path
):
    exactly_72 = "é" * 36  # 72 bytes of UTF-8: all that bcrypt ever looked at
    path = write_lines(
        tmp_path / "users.jsonl",
        [
            {"email": "long@example.com", "name": "Long", "password_hash": bcrypt_hash(exactly_72)},
            {"email": "fits@example.com", "name": "Fits", "password_hash": bcrypt_hash(exactly_72)},
        ],
    )
    await run_import(settings, path)

    # Old bcrypt libraries cut this to its first 72 bytes, so the old system let it in;
    # API.md makes it an ordinary failure, never a 500, and the hash stays as it was.
    too_long = await login(client, "long@example.com", exactly_72 + "x")
    assert too_long.status_code == 400
    assert too_long.json()["error"] == "invalid_grant"
    assert (await stored_hash(app, "long@example.com")).startswith("$2b$")

    fits = await login(client, "fits@example.com", exactly_72)
    assert fits.status_code == 200
    assert (await stored_hash(app, "fits@example.com")).startswith(OUR_ARGON2)


async def test_a_long_password_fits_django_bcrypt_sha256_which_hashes_it_first(
    client, app, settings, tmp_path
):
    long_password = "correct horse battery staple " * 4  # 116 bytes
    path = write_lines(
        tmp_path / "users.jsonl",
        [
            {
                "email": "long@example.com",
                "name": "Long",
                "password_hash": django_bcrypt_sha256(long_password),
            }
        ],
    )
    await run_import(settings, path)

    assert (await login(client, "long@example.com", long_password[:72])).status_code == 400
    assert (await login(client, "long@example.com", long_password)).status_code == 200
    assert (await stored_hash(app, "long@example.com")).startswith(OUR_ARGON2)


async def test_running_the_import_twice_changes_nothing_more(client, app, settings, tmp_path):
    path = write_lines(
        tmp_path / "users.jsonl",
        [
            {"email": "ada@example.com", "name": "Ada", "password_hash": bcrypt_hash(PASSWORD)},
            {"email": "bob@example.com", "name": "Bob", "password_hash": bcrypt_hash(PASSWORD)},
        ],
    )
    first = await run_import(settings, path)
    assert (first.created, first.skipped, first.rejected) == (2, 0, 0)
    assert first.lines == []
    assert (await login(client, "ada@example.com", PASSWORD)).status_code == 200
    upgraded = await stored_hash(app, "ada@example.com")

    second = await run_import(settings, path)

    assert (second.created, second.skipped, second.rejected) == (0, 2, 0)
    assert second.lines == [
        "line 1 (ada@example.com): skipped: already registered",
        "line 2 (bob@example.com): skipped: already registered",
    ]
    assert await user_count(app) == 2
    assert await stored_hash(app, "ada@example.com") == upgraded  # not set back to bcrypt


async def test_an_address_registered_by_signup_is_skipped_in_any_letter_case(
    client, app, settings, tmp_path
):
    user = await new_user(client, email="taken@example.com")
    path = write_lines(
        tmp_path / "users.jsonl",
        [{"email": "TAKEN@Example.COM", "name": "Other", "password_hash": bcrypt_hash(WRONG)}],
    )
    report = await run_import(settings, path)

    assert (report.created, report.skipped) == (0, 1)
    assert report.lines == ["line 1 (TAKEN@example.com): skipped: already registered"]
    assert (await login(client, "taken@example.com", user["password"])).status_code == 200


async def test_two_rows_of_one_address_are_one_account_and_a_reported_duplicate(
    client, app, settings, tmp_path
):
    path = write_lines(
        tmp_path / "users.jsonl",
        [
            {"email": "ada@example.com", "name": "Ada", "password_hash": bcrypt_hash(PASSWORD)},
            {"email": "bob@example.com", "name": "Bob", "password_hash": bcrypt_hash(PASSWORD)},
            {"email": "ADA@example.com", "name": "Ada 2", "password_hash": bcrypt_hash(WRONG)},
        ],
    )
    report = await run_import(settings, path)

    assert (report.created, report.skipped, report.rejected) == (2, 0, 1)
    assert report.lines == ["line 3 (ADA@example.com): rejected: duplicate of line 1"]
    assert await user_count(app) == 2
    assert (await login(client, "ada@example.com", PASSWORD)).status_code == 200
    again = await run_import(settings, path)
    assert again.lines[-1] == "line 3 (ADA@example.com): rejected: duplicate of line 1"


async def test_a_dry_run_reports_everything_and_writes_nothing(app, settings, tmp_path):
    path = write_lines(
        tmp_path / "users.jsonl",
        [
            {"email": "ada@example.com", "name": "Ada", "password_hash": bcrypt_hash(PASSWORD)},
            {"email": "md5@example.com", "name": "Md5", "password_hash": "0" * 32},
        ],
    )
    report = await run_import(settings, path, dry_run=True)

    assert (report.created, report.rejected) == (1, 1)
    assert report.lines == ["line 2 (md5@example.com): rejected: weak hash: MD5"]
    assert (
        report.summary()
        == "dry run: 1 would be created, 0 skipped, 1 rejected; nothing was written"
    )
    assert await user_count(app) == 0


async def test_each_bad_row_is_reported_with_its_line_and_reason(app, settings, tmp_path):
    good = bcrypt_hash(PASSWORD)
    path = write_lines(
        tmp_path / "users.jsonl",
        [
            "{not json",
            "[1, 2]",
            {"email": "a@example.com", "name": "A", "password_hash": good, "password": "x"},
            {"email": "b@example.com", "name": "B"},
            {"email": "not an email", "name": "C", "password_hash": good},
            {"email": "d@example.com", "name": "   ", "password_hash": good},
            {"email": "e@example.com", "name": "E", "password_hash": good, "is_admin": "yes"},
            {
                "email": "f@example.com",
                "name": "F",
                "password_hash": good,
                "created_at": "3000-01-01T00:00:00Z",
            },
            {
                "email": "g@example.com",
                "name": "G",
                "password_hash": good,
                "created_at": "yesterday",
            },
            '{"email": "h@example.com", "email": "i@example.com", "name": "H", "password_hash": "x"}',
            "",
            {"email": "ok@example.com", "name": "Ok", "password_hash": good},
        ],
    )
    report = await run_import(settings, path)

    assert (report.created, report.skipped, report.rejected) == (1, 0, 10)
    reasons = dict(line.split(": ", 1) for line in report.lines)
    assert list(reasons)[2:4] == ["line 3 (a@example.com)", "line 4 (b@example.com)"]
    reasons = {key.split(" (")[0]: reason for key, reason in reasons.items()}
    assert reasons == {
        "line 1": "rejected: not valid JSON",
        "line 2": "rejected: not a JSON object",
        "line 3": 'rejected: unknown field "password"',
        "line 4": "rejected: missing password_hash",
        "line 5": reasons["line 5"],
        "line 6": "rejected: invalid name: must not be blank",
        "line 7": "rejected: invalid is_admin: not true or false",
        "line 8": "rejected: invalid created_at: in the future",
        "line 9": "rejected: invalid created_at: not an ISO 8601 date and time",
        "line 10": "rejected: not valid JSON",
    }
    assert reasons["line 5"].startswith("rejected: invalid email: ")
    assert all(good not in line for line in report.lines)


async def test_imported_users_are_listed_in_the_order_they_joined(client, app, settings, tmp_path):
    viewer = await new_user(client)
    path = write_lines(
        tmp_path / "users.jsonl",
        [
            {
                "email": "c@example.com",
                "name": "C",
                "password_hash": bcrypt_hash(PASSWORD),
                "created_at": "2021-05-01T10:00:00+02:00",
            },
            {
                "email": "a@example.com",
                "name": "A",
                "password_hash": bcrypt_hash(PASSWORD),
                "created_at": "2019-01-01T00:00:00Z",
            },
            {"email": "now@example.com", "name": "Now", "password_hash": bcrypt_hash(PASSWORD)},
            # The same millisecond as line 2, and no offset: UTC.
            {
                "email": "b@example.com",
                "name": "B",
                "password_hash": bcrypt_hash(PASSWORD),
                "created_at": "2019-01-01 00:00:00",
                "is_admin": True,
            },
        ],
    )
    await run_import(settings, path)

    page = (await client.get("/users", headers=bearer(viewer["access_token"]))).json()

    listed = [(user["email"], user["created_at"]) for user in page["users"]]
    assert [email for email, _ in listed] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        viewer["email"],
        "now@example.com",
    ]
    assert listed[0][1] == "2019-01-01T00:00:00Z"
    assert listed[2][1] == "2021-05-01T08:00:00Z"
    assert [user["is_admin"] for user in page["users"]] == [False, True, False, False, False]


async def test_email_verified_is_imported_and_defaults_to_false(client, settings, tmp_path):
    path = write_lines(
        tmp_path / "users.jsonl",
        [
            {
                "email": "yes@example.com",
                "name": "Yes",
                "password_hash": bcrypt_hash(PASSWORD),
                "email_verified": True,
            },
            {"email": "no@example.com", "name": "No", "password_hash": bcrypt_hash(PASSWORD)},
        ],
    )
    await run_import(settings, path)

    for email, verified in (("yes@example.com", True), ("no@example.com", False)):
        tokens = (await login(client, email, PASSWORD)).json()
        me = (await client.get("/users/me", headers=bearer(tokens["access_token"]))).json()
        assert me["email_verified"] is verified


def tutorial_database(path: Path) -> dict[str, str]:
    """A tutorial database whose users signed up under Werkzeug versions of every era."""
    users = {
        "scrypt": (None, "ada@example.com"),
        "pbkdf2-150000": ("pbkdf2:sha256:150000", "bob@example.com"),
        "pbkdf2-260000": ("pbkdf2:sha256:260000", "carol@example.com"),
        "pbkdf2-600000": ("pbkdf2:sha256:600000", "dan@example.com"),
        "pbkdf2-3.1": ("pbkdf2", "Eve@Example.com"),
        "pbkdf2-50000": ("pbkdf2:sha256:50000", "weak@example.com"),
    }
    passwords = {}
    for label, (method, email) in users.items():
        tutorial = create_tutorial_app(path, password_method=method)
        password = f"{label}-secret"
        sign_up(tutorial, name=label, email=email, password=password)
        assert log_in(tutorial, email=email, password=password) == 200  # real hashes
        passwords[email] = password
    return passwords


async def test_a_flask_tutorial_database_moves_over_with_its_passwords(
    client, app, settings, tmp_path
):
    database = tmp_path / "tutorial.db"
    passwords = tutorial_database(database)
    before = database.read_bytes()

    report = await run_import(settings, tutorial=database)

    assert (report.created, report.skipped, report.rejected) == (5, 0, 1)
    assert report.lines == [
        "user id 6 (weak@example.com): rejected: weak hash: PBKDF2 with 50000 iterations (at least 100,000)"
    ]
    assert database.read_bytes() == before  # opened read-only
    for email, password in passwords.items():
        if email == "weak@example.com":
            continue
        assert (await login(client, email, password + "!")).status_code == 400
        response = await login(client, email, password)
        assert response.status_code == 200, email
        assert (await stored_hash(app, email)).startswith(OUR_ARGON2)
    again = await run_import(settings, tutorial=database)
    assert (again.created, again.skipped, again.rejected) == (0, 5, 1)


async def test_a_tutorial_row_that_is_not_utf_8_is_rejected_alone(client, settings, tmp_path):
    database = tmp_path / "tutorial.db"
    sign_up(create_tutorial_app(database), name="Ada", email="ada@example.com", password=PASSWORD)
    with sqlite3.connect(database) as connection:
        connection.execute(
            # Text in the file that is not UTF-8, as a buggy old client could have left it.
            "INSERT INTO user (public_id, name, email, password) "
            "VALUES (?, CAST(X'FFFE' AS TEXT), ?, ?)",
            ("x", "bad@example.com", generate_password_hash(PASSWORD)),
        )
    connection.close()

    report = await run_import(settings, tutorial=database)

    assert (report.created, report.rejected) == (1, 1)
    assert report.lines[0].startswith("user id 2 (bad@example.com): rejected: invalid name")
    assert (await login(client, "ada@example.com", PASSWORD)).status_code == 200


async def test_a_file_that_is_not_a_tutorial_database_is_one_clear_error(settings, tmp_path):
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello")
    with pytest.raises(cli.CommandError, match="as a SQLite database"):
        await run_import(settings, tutorial=not_sqlite)
    other_app = tmp_path / "other.db"
    with sqlite3.connect(other_app) as connection:
        connection.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT)")
    connection.close()
    with pytest.raises(cli.CommandError, match="no Flask tutorial user table"):
        await run_import(settings, tutorial=other_app)
    with pytest.raises(cli.CommandError, match="no such file"):
        await run_import(settings, tutorial=tmp_path / "missing.db")
    with pytest.raises(cli.CommandError, match="cannot read"):
        await run_import(settings, tmp_path / "missing.jsonl")


def import_command(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
        "SECRET_KEY": "test-secret-key-that-is-long-enough-for-hs256!",
        "MIGRATE_ON_START": "false",
    }
    return subprocess.run(
        [sys.executable, "-m", "app", "import-users", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


async def test_the_command_prints_problems_and_a_summary_and_exits_1_on_a_rejection(
    client, database_url, tmp_path
):
    secret_hash = bcrypt_hash(PASSWORD)
    path = write_lines(
        tmp_path / "users.jsonl",
        [
            {"email": "ada@example.com", "name": "Ada", "password_hash": secret_hash},
            {"email": "md5@example.com", "name": "Md5", "password_hash": "0" * 32},
        ],
    )
    result = import_command(database_url, str(path))

    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "line 2 (md5@example.com): rejected: weak hash: MD5",
        "1 created, 0 skipped, 1 rejected",
    ]
    assert secret_hash not in result.stdout + result.stderr
    assert (await login(client, "ada@example.com", PASSWORD)).status_code == 200

    tutorial = tmp_path / "tutorial.db"
    sign_up(create_tutorial_app(tutorial), name="Bob", email="bob@example.com", password=PASSWORD)
    result = import_command(database_url, "--from-flask-tutorial", str(tutorial))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1 created, 0 skipped, 0 rejected"]
    assert (await login(client, "bob@example.com", PASSWORD)).status_code == 200
