"""A first run with `make run`'s defaults and no mail server: mail lands in the outbox folder.

A real service process, started as `make run` starts it (`python -m app serve`, no SMTP_HOST,
the SQLite database under ./data of its working folder), and a person who reads its log and
opens the file it names in a text editor.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import httpx

from tests.conftest import DEFAULT_PASSWORD
from tests.processes import ServiceProcess, service_environment, start_service

LOG_LINE = re.compile(r"written to (?P<path>\S+\.eml)")


def _logged_file(service: ServiceProcess, timeout: float = 30.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = LOG_LINE.search(service.log.read_text(errors="replace"))
        if match:
            return Path(match.group("path"))
        time.sleep(0.1)
    raise AssertionError(f"no log line names an .eml file:\n{service.output()}")


def test_a_first_run_without_a_mail_server_logs_the_file_holding_the_verification_link(
    tmp_path: Path,
) -> None:
    # Nothing but what make run sets: the defaults, apart from a cheap password hash.
    env = service_environment(ENVIRONMENT="development")
    service = start_service(env, tmp_path, as_make_run=True)
    try:
        service.wait_ready()
        address = f"ada-{uuid.uuid4().hex[:8]}@example.com"
        signup = httpx.post(
            f"{service.url}/signup",
            json={"name": "Ada Lovelace", "email": address, "password": DEFAULT_PASSWORD},
            trust_env=False,
        )
        assert signup.status_code == 201, signup.text

        named = _logged_file(service)
        path = named if named.is_absolute() else tmp_path / named
        assert path.resolve().parent == (tmp_path / "data" / "outbox").resolve()
        raw = path.read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        assert message["To"] == address
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        # Outside production, serve builds links from the address it serves when PUBLIC_URL
        # is unset, so the link works as it stands.
        link_pattern = re.escape(f"{service.url}/email-verification#token=") + "[A-Za-z0-9_-]{43,}"
        [link] = re.findall(link_pattern, body.get_content())
        # Whole in the file itself, as `cat` or an editor shows it: no encoding splits it.
        assert link.encode() in raw

        token = link.split("#token=", 1)[1]
        assert token not in service.log.read_text(errors="replace")
        confirmed = httpx.post(
            f"{service.url}/email-verification/confirm", json={"token": token}, trust_env=False
        )
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["email_verified"] is True
    finally:
        service.stop()
