"""Every line the service prints, from a real `python -m app serve`: one format, nothing secret.

The server runs as make run and the image run it; clients send passwords and tokens where
they should not (query strings) and where they should (bodies, headers), and none of it may
reach the output, while each access line keeps method, path, status, duration and request id.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from app.logs import StandardStreamHandler, configure_logging
from tests.conftest import DEFAULT_PASSWORD, TEST_DATABASE_URL
from tests.processes import ServiceProcess, free_port, service_environment

ROOT = Path(__file__).resolve().parent.parent
TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+ \[[^\]]+\] "
)
SERVER_SECRET = "log-test-server-secret-that-is-long-enough-for-hs256"
QUERY_SECRETS = ("QsPassword-8c1f", "QsAccessToken-77d2", "QsRefresh-5ab0", "QsHealth-e3f9")


def start_serve(tmp_path: Path, *, workers: int = 1, **settings: str) -> ServiceProcess:
    """`python -m app serve`, the command behind make run and the image, on a free port."""
    port = free_port()
    log = tmp_path / "service.log"
    env = service_environment(
        **{
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'passgate.db'}",
            "SECRET_KEY": SERVER_SECRET,
            "PYTHONPATH": str(ROOT),
            **settings,
        }
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    service = ServiceProcess(process=process, url=f"http://127.0.0.1:{port}", log=log)
    service.wait_ready()
    return service


def misbehave(url: str) -> list[str]:
    """Requests that put secrets everywhere; returns every secret that was sent."""
    email = "ada@example.com"
    secrets = [DEFAULT_PASSWORD, *QUERY_SECRETS]
    with httpx.Client(base_url=url, timeout=10) as http:
        assert (
            http.post(
                "/signup", json={"name": "Ada", "email": email, "password": DEFAULT_PASSWORD}
            ).status_code
            == 201
        )
        tokens = http.post(
            "/token",
            data={"grant_type": "password", "username": email, "password": DEFAULT_PASSWORD},
            headers={"X-Request-ID": "login-request-1"},
        ).json()
        secrets += [tokens["access_token"], tokens["refresh_token"]]
        # Credentials in query strings, as careless clients send them.
        http.post(
            f"/token?grant_type=password&username={email}&password={QUERY_SECRETS[0]}",
            headers={"X-Request-ID": "query-login-1"},
        )
        http.get(f"/users/me?access_token={QUERY_SECRETS[1]}")
        http.get(f"/users/me?access_token={tokens['access_token']}")
        me = http.get("/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.status_code == 200
        http.get(f"/health?token={QUERY_SECRETS[3]}")
        http.post(f"/revoke?token={QUERY_SECRETS[2]}", data={"token": tokens["refresh_token"]})
        # A path with a line break in it must not start a forged line.
        http.get("/nowhere%0A2026-01-01T00:00:00.000Z INFO passgate.audit forged")
    return secrets


def wait_for(service: ServiceProcess, needle: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        output = service.log.read_text(errors="replace")
        if needle in output:
            return output
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared:\n{service.output()}")


def stopped_output(service: ServiceProcess) -> str:
    service.stop()
    return service.log.read_text(errors="replace")


def test_text_lines_hold_no_secret_and_every_line_has_one_format(tmp_path: Path) -> None:
    service = start_serve(tmp_path)
    try:
        secrets = misbehave(service.url)
        wait_for(service, "GET /nowhere")
    finally:
        output = stopped_output(service)

    for secret in secrets:
        assert secret not in output
    assert "?" not in "".join(line for line in output.splitlines() if "passgate.access" in line)
    lines = output.splitlines()
    # uvicorn's own lines (startup, shutdown) come out in the same format as ours.
    assert any("uvicorn.error" in line and "Application startup complete" in line for line in lines)
    for line in lines:
        assert TEXT_LINE.match(line), line
    access = [line for line in lines if " passgate.access " in line]
    assert any("[query-login-1] POST /token 400 " in line for line in access), access
    assert any(" GET /users/me 401 " in line for line in access), access
    assert any(" GET /users/me 200 " in line for line in access), access
    # The login's audit event and its access line share the request id.
    assert any("passgate.audit [login-request-1] login_succeeded" in line for line in lines)
    assert any("passgate.access [login-request-1] POST /token 200" in line for line in lines)
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert any("\\n2026-01-01" in line for line in access)
    # Without SMTP_HOST the startup line says where the mail files go.
    start = next(line for line in lines if " passgate [-] Passgate " in line)
    assert f"mail=no SMTP_HOST: .eml files in {(tmp_path / 'outbox').resolve()} " in start


def test_json_lines_everywhere_with_workers_and_a_startup_line(tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    key.write_bytes(
        subprocess.run(
            [sys.executable, "-m", "app", "generate-key", "--alg", "ES256"],
            env={"PYTHONPATH": str(ROOT)},
            capture_output=True,
            check=True,
        ).stdout
    )
    # A mail server that is not there: the signup's verification mail fails to go, and
    # neither that warning nor the startup line may show the SMTP login.
    smtp_port = free_port()
    smtp_login = ("smtp-user-not-to-print", "Smtp-Password-Not-To-Print")
    service = start_serve(
        tmp_path,
        workers=2,
        LOG_FORMAT="json",
        JWT_ALGORITHM="ES256",
        JWT_PRIVATE_KEY_FILE=str(key),
        PUBLIC_URL="https://auth.example.com",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_port),
        SMTP_TLS="tls",
        SMTP_USERNAME=smtp_login[0],
        SMTP_PASSWORD=smtp_login[1],
    )
    try:
        secrets = misbehave(service.url)
        kid = httpx.get(f"{service.url}/.well-known/jwks.json").json()["keys"][0]["kid"]
        wait_for(service, "/nowhere")
        wait_for(service, "not delivered")
    finally:
        output = stopped_output(service)

    for secret in [*secrets, SERVER_SECRET, *smtp_login]:
        assert secret not in output
    lines = [json.loads(line) for line in output.splitlines()]  # every line is a JSON object
    for line in lines:
        assert {"time", "level", "logger", "request_id", "message"} <= line.keys(), line
    loggers = {line["logger"] for line in lines}
    assert {"passgate", "passgate.access", "passgate.audit", "uvicorn.error"} <= loggers
    # The supervisor that starts the two workers writes JSON too.
    assert any("parent process" in line["message"] for line in lines), loggers

    access = [line for line in lines if line["logger"] == "passgate.access"]
    for line in access:
        assert {"method", "path", "status", "duration_ms"} <= line.keys()
        assert "?" not in line["path"] and "?" not in line["message"]
    query_login = next(line for line in access if line["request_id"] == "query-login-1")
    assert (query_login["method"], query_login["path"], query_login["status"]) == (
        "POST",
        "/token",
        400,
    )

    starts = [line for line in lines if line["logger"] == "passgate"]
    assert len(starts) == 2  # one per worker
    start = starts[0]
    assert start["database"] == f"sqlite {tmp_path / 'passgate.db'}"
    assert start["algorithm"] == "ES256"
    assert start["signing_kid"] == kid
    assert start["public_url"] == "https://auth.example.com"
    assert start["docs"] == "https://auth.example.com/docs"
    assert start["redis"].startswith("not configured")
    assert start["mail"] == f"SMTP 127.0.0.1:{smtp_port} (implicit TLS, login)"
    assert start["version"]


def test_the_startup_line_names_the_postgresql_host_but_not_its_password(tmp_path: Path) -> None:
    if TEST_DATABASE_URL is None:
        pytest.skip("TEST_DATABASE_URL is not set: no PostgreSQL to start against")
    # asyncpg is given a password it never needs (the test server trusts local connections).
    url = make_url(TEST_DATABASE_URL).set(password="Pg-Password-Not-To-Print")
    service = start_serve(
        tmp_path,
        DATABASE_URL=url.render_as_string(hide_password=False),
        MIGRATE_ON_START="false",
    )
    try:
        output = wait_for(service, "Passgate ")
    finally:
        output = stopped_output(service)
    assert "Pg-Password-Not-To-Print" not in output
    assert f"database=postgresql {url.host}:{url.port or 5432}/{url.database}" in output


def test_python_warnings_become_lines_of_the_same_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Importing app.main (conftest does) already captured warnings, before pytest's own
    # per-test recorder took warnings.showwarning over: start from scratch.
    logging.captureWarnings(False)
    configure_logging("json")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("an old way of doing things", DeprecationWarning, stacklevel=1)
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        logging_reset()
    assert line["logger"] == "py.warnings"
    assert line["level"] == "WARNING"
    assert "an old way of doing things" in line["message"]


def logging_reset() -> None:
    """Leave the test process's logging as pytest set it up."""

    logging.captureWarnings(False)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, StandardStreamHandler):
            root.removeHandler(handler)
