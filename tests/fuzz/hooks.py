"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS): every case runs as a real admin.

The fuzzer calls /logout and DELETE /users/me too, which end the session or the account. The
provider below logs in again when a request answers 401 (schemathesis then replays it), and
creates the account again when it is gone, so every operation keeps being tested with a valid
token. The account is an administrator, made with `python -m app create-admin` as an operator
would, so the admin routes are fuzzed past their 403.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import schemathesis

from tests.live_server import server_environment

BASE_URL = os.environ["PASSGATE_FUZZ_URL"]
DATA_DIR = Path(os.environ["PASSGATE_FUZZ_DATA_DIR"])
EMAIL = os.environ["PASSGATE_FUZZ_EMAIL"]
PASSWORD = os.environ["PASSGATE_FUZZ_PASSWORD"]


def log_in() -> httpx.Response:
    return httpx.post(
        f"{BASE_URL}/token",
        data={"grant_type": "password", "username": EMAIL, "password": PASSWORD},
        trust_env=False,
    )


def create_admin() -> None:
    """Create the fuzzing account as an administrator, with the service's own command."""
    environment = {**server_environment(DATA_DIR, {}), "ADMIN_PASSWORD": PASSWORD}
    subprocess.run(
        [sys.executable, "-m", "app", "create-admin", "--email", EMAIL, "--name", "Fuzzing admin"],
        cwd=DATA_DIR,
        env=environment,
        check=True,
        stdout=subprocess.DEVNULL,
    )


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
