"""docs/mfa.md's examples, run as written against a real server: the httpx and Authlib logins
that handle `mfa_required`, with codes from pyotp."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from jose import jwt

from tests.conftest import DEFAULT_PASSWORD
from tests.live_server import running_service

DOC = Path(__file__).resolve().parent.parent / "docs" / "mfa.md"
DOC_BASE_URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("service")) as url:
        yield url


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def example(defining: str, base_url: str) -> Callable[..., Any]:
    """The function `defining` from the doc's Python blocks, pointed at the test server."""
    [block] = [b for b in python_blocks() if f"def {defining}(" in b]
    namespace: dict[str, Any] = {"__name__": "docs_example"}  # not "__main__": no input()
    exec(compile(block.replace(DOC_BASE_URL, base_url), str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace[defining]


def account(base_url: str, *, second_factor: bool) -> tuple[str, str | None]:
    """A new account's email and, if it has a second factor, its TOTP secret."""
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=base_url, trust_env=False) as client:
        body = {"name": "Ada", "email": email, "password": DEFAULT_PASSWORD}
        assert client.post("/signup", json=body).status_code == 201
        if not second_factor:
            return email, None
        tokens = client.post(
            "/token",
            data={"grant_type": "password", "username": email, "password": DEFAULT_PASSWORD},
        ).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        started = client.post(
            "/users/me/mfa/totp", json={"current_password": DEFAULT_PASSWORD}, headers=headers
        )
        secret = started.json()["secret"]
        confirmed = client.post(
            "/users/me/mfa/totp/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=headers
        )
        assert confirmed.status_code == 200, confirmed.text
    return email, secret


def next_code(secret: str) -> Callable[[], str]:
    # The current step confirmed enrolment and is spent; the next one is accepted a step early.
    return lambda: pyotp.TOTP(secret).at(time.time() + 30)


def test_the_docs_have_the_examples_they_promise():
    names = {name for block in python_blocks() for name in re.findall(r"^def (\w+)", block, re.M)}
    assert {"log_in", "authlib_client"} <= names


def test_the_httpx_example_logs_in_through_the_second_step(base_url):
    log_in = example("log_in", base_url)
    email, secret = account(base_url, second_factor=True)
    assert secret is not None

    tokens = log_in(email, DEFAULT_PASSWORD, next_code(secret))

    assert jwt.get_unverified_claims(tokens["access_token"])["amr"] == ["pwd", "otp", "mfa"]


def test_the_httpx_example_logs_in_without_a_second_factor_and_asks_no_code(base_url):
    log_in = example("log_in", base_url)
    email, _ = account(base_url, second_factor=False)

    def no_code() -> str:
        raise AssertionError("asked for a code")

    tokens = log_in(email, DEFAULT_PASSWORD, no_code)

    assert jwt.get_unverified_claims(tokens["access_token"])["amr"] == ["pwd"]


def test_the_httpx_example_reports_a_wrong_code(base_url):
    log_in = example("log_in", base_url)
    email, _ = account(base_url, second_factor=True)

    with pytest.raises(RuntimeError, match="login failed"):
        log_in(email, DEFAULT_PASSWORD, lambda: "000000")


def test_the_authlib_example_logs_in_through_the_second_step_and_renews(base_url):
    authlib_client = example("authlib_client", base_url)
    email, secret = account(base_url, second_factor=True)
    assert secret is not None

    client = authlib_client(email, DEFAULT_PASSWORD, next_code(secret))
    try:
        me = client.get(f"{base_url}/users/me")
        renewed = client.refresh_token(f"{base_url}/token")
    finally:
        client.close()

    assert me.status_code == 200 and me.json()["email"] == email
    assert jwt.get_unverified_claims(renewed["access_token"])["amr"] == ["pwd", "otp", "mfa"]


def test_the_authlib_example_logs_in_without_a_second_factor(base_url):
    authlib_client = example("authlib_client", base_url)
    email, _ = account(base_url, second_factor=False)

    client = authlib_client(email, DEFAULT_PASSWORD, lambda: pytest.fail("asked for a code"))
    try:
        assert client.get(f"{base_url}/users/me").status_code == 200
    finally:
        client.close()
