"""Mail across real service processes: kill -9 right after a 202, and two senders on one database.

The services are `python -m uvicorn app.main:app` processes (tests/processes.py) delivering to a
real SMTP server in this process (aiosmtpd).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.models import OutboxMail
from tests.conftest import DEFAULT_PASSWORD, TEST_SECRET
from tests.mail import MailServer
from tests.processes import running_services, service_environment, start_service

UNLIMITED = "1000000000/second"


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts connections and never says a word: an SMTP server hung mid-greeting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def mail_environment(database_url: str, smtp_port: int, **extra: str) -> dict[str, str]:
    return service_environment(
        DATABASE_URL=database_url,
        SECRET_KEY=TEST_SECRET,
        MIGRATE_ON_START="true",
        SIGNUP_RATE_LIMIT=UNLIMITED,
        RECOVERY_RATE_LIMIT=UNLIMITED,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_port),
        SMTP_TLS="none",
        MAIL_POLL_INTERVAL_SECONDS="0.2",
        MAIL_RETRY_BASE_SECONDS="0.2",
        MAIL_RETRY_MAX_INTERVAL_SECONDS="1",
        **extra,
    )


def test_a_mail_survives_kill_9_right_after_the_202(tmp_path: Path, black_hole: int):
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'passgate.db'}"
    # The first process can reach no mail server (it hangs mid-greeting), so whatever mail it
    # holds when it dies exists only in the database. A claim it made expires after 3 s.
    first = start_service(
        mail_environment(database_url, black_hole, MAIL_CLAIM_SECONDS="3"), tmp_path
    )
    try:
        first.wait_ready()
        signed_up = httpx.post(
            f"{first.url}/signup",
            json={"name": "Ada", "email": "ada@example.com", "password": DEFAULT_PASSWORD},
            timeout=10,
        )
        assert signed_up.status_code == 201
        accepted = httpx.post(
            f"{first.url}/password-reset", json={"email": "ada@example.com"}, timeout=10
        )
        assert accepted.status_code == 202
        first.process.kill()  # SIGKILL: no shutdown, no flush, nothing
        first.process.wait()
    finally:
        first.stop()

    server = MailServer()
    server.start()
    second = start_service(
        mail_environment(database_url, server.port, MAIL_CLAIM_SECONDS="3"), tmp_path
    )
    try:
        second.wait_ready()
        [reset] = asyncio.run(server.wait_for("ada@example.com", subject="Reset your"))
        [verification] = asyncio.run(server.wait_for("ada@example.com", subject="Confirm your"))
        confirmed = httpx.post(
            f"{second.url}/password-reset/confirm",
            json={"token": reset.token, "new_password": "after-the-crash-passphrase"},
            timeout=10,
        )
        assert confirmed.status_code == 204, confirmed.text
        verified = httpx.post(
            f"{second.url}/email-verification/confirm",
            json={"token": verification.token},
            timeout=10,
        )
        # The reset proved the address already, and voided the verification link with the rest.
        assert verified.status_code == 400
    finally:
        second.stop()
        server.stop()


async def _sent_counts(database_url: str) -> tuple[int, int, int]:
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(
                    func.count(),
                    func.count(OutboxMail.sent_at),
                    func.max(OutboxMail.attempts),
                )
            )
        ).one()
    await engine.dispose()
    return row[0], row[1], row[2]


def test_two_processes_send_each_mail_once(tmp_path: Path, database_url: str, mail_server):
    """On PostgreSQL (TEST_DATABASE_URL) the claims race through FOR UPDATE SKIP LOCKED; on
    SQLite through the one writer lock."""
    users = 12
    env = mail_environment(database_url, mail_server.port)
    with running_services(2, env, tmp_path / "services") as services:
        emails = [f"user-{number}@example.com" for number in range(users)]

        async def drive() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                await asyncio.gather(
                    *(
                        client.post(
                            f"{services[number % 2].url}/signup",
                            json={"name": "U", "email": email, "password": DEFAULT_PASSWORD},
                        )
                        for number, email in enumerate(emails)
                    )
                )
                answers = await asyncio.gather(
                    *(
                        client.post(
                            f"{services[(number + 1) % 2].url}/password-reset",
                            json={"email": email},
                        )
                        for number, email in enumerate(emails)
                    )
                )
                assert {answer.status_code for answer in answers} == {202}
            for email in emails:
                await mail_server.wait_for(email, count=2)
            await asyncio.sleep(1.0)  # time for a duplicate, if there were to be one

        asyncio.run(drive())
        logs = [service.output() for service in services]

    per_recipient = collections.Counter(
        (recipient, mail.subject.split()[0])
        for mail in mail_server.messages()
        for recipient in mail.recipients
    )
    assert len(per_recipient) == 2 * users
    assert set(per_recipient.values()) == {1}
    total, sent, most_attempts = asyncio.run(_sent_counts(database_url))
    assert (total, sent, most_attempts) == (2 * users, 2 * users, 1)
    assert all("Traceback" not in log for log in logs)
