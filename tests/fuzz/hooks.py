"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS): every case runs as a real admin.

The fuzzer calls /logout and DELETE /users/me too, which end the session or the account. The
provider below logs in again when a request answers 401 (schemathesis then replays it), and
signs the account up again when it is gone, so every operation keeps being tested with a
valid token. The account is an administrator, so the admin routes are fuzzed past their 403;
it is promoted in the database, since no API call can make the first admin.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import httpx
import schemathesis

BASE_URL = os.environ["PASSGATE_FUZZ_URL"]
DATABASE = os.environ["PASSGATE_FUZZ_DATABASE"]
EMAIL = os.environ["PASSGATE_FUZZ_EMAIL"]
PASSWORD = os.environ["PASSGATE_FUZZ_PASSWORD"]


def log_in() -> httpx.Response:
    return httpx.post(
        f"{BASE_URL}/token",
        data={"grant_type": "password", "username": EMAIL, "password": PASSWORD},
        trust_env=False,
    )


def create_admin() -> None:
    """Sign the fuzzing account up (again) and make it an administrator."""
    response = httpx.post(
        f"{BASE_URL}/signup",
        json={"name": "Fuzzing admin", "email": EMAIL, "password": PASSWORD},
        trust_env=False,
    )
    if response.status_code not in (201, 409):
        raise RuntimeError(f"cannot sign up the fuzzing account: {response.status_code}")
    with sqlite3.connect(DATABASE) as connection:
        connection.execute("UPDATE users SET is_admin = 1 WHERE email_normalized = ?", (EMAIL.lower(),))


def access_token() -> str:
    response = log_in()
    if response.status_code != 200:
        create_admin()
        response = log_in()
    response.raise_for_status()
    return str(response.json()["access_token"])


@schemathesis.auth(refresh_interval=600)
class PassgateAdmin:
    def get(self, case: Any, context: Any) -> str:
        return access_token()

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
