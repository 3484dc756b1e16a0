"""Delivery: the outbox, a mail server that is down for a while, .eml files without SMTP_HOST."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import stat
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.config import Settings
from app.models import OutboxMail
from app.services.mail import BUSY_ROUND_SECONDS
from tests.conftest import signup
from tests.conftest import test_settings as make_settings
from tests.mail import TOKEN_IN_LINK, MailServer
from tests.test_recovery import VERIFY, confirm_address, service


@pytest.fixture
def settings(database_url: str, mail_server: MailServer) -> Settings:
    return make_settings(database_url=database_url, **mail_server.settings())


async def outbox_rows(app) -> list[OutboxMail]:
    async with app.state.sessionmaker() as session:
        rows = (await session.scalars(select(OutboxMail).order_by(OutboxMail.id))).all()
        await session.commit()
        return list(rows)


async def wait_until(condition, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_mail_server_down_for_a_while_delays_mail_and_loses_none(database_url):
    server = MailServer()  # its port is chosen, but nothing listens there yet
    settings = make_settings(database_url=database_url, **server.settings())
    async with service(settings) as (app, client):
        assert (await signup(client, email="ada@example.com")).status_code == 201

        async def retried_twice() -> bool:
            rows = await outbox_rows(app)
            return rows[0].attempts >= 2

        await wait_until(retried_twice)
        [row] = await outbox_rows(app)
        assert row.sent_at is None and row.failed_at is None
        assert "ConnectionRefusedError" in row.last_error or "connect" in row.last_error.lower()

        server.start()
        try:
            [mail] = await server.wait_for("ada@example.com", subject=VERIFY)
            assert (await confirm_address(client, mail.token)).status_code == 200

            async def recorded() -> bool:
                return (await outbox_rows(app))[0].sent_at is not None

            await wait_until(recorded)  # the outcome is written just after the server's 250
            [row] = await outbox_rows(app)
        finally:
            server.stop()

    assert row.sent_at is not None and row.last_error is None
    assert row.attempts >= 3


async def test_a_delivered_mail_is_recorded_once_sent(app, client, mail_server):
    await signup(client, email="ada@example.com")
    await mail_server.wait_for("ada@example.com")

    async def recorded() -> bool:
        return (await outbox_rows(app))[0].sent_at is not None

    await wait_until(recorded)
    [row] = await outbox_rows(app)
    assert row.attempts == 1 and row.kind == "email_verification"
    assert len(mail_server.messages("ada@example.com")) == 1


async def test_without_smtp_host_mail_goes_to_eml_files_a_log_line_names(
    database_url, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    folder = tmp_path / "mail" / "outbox"
    settings = make_settings(database_url=database_url, mail_outbox_dir=folder)
    caplog.set_level(logging.INFO, logger="passgate.mail")
    async with service(settings) as (_, client):
        await signup(client, email="ada@example.com")

        async def written() -> bool:
            return any(folder.glob("*.eml")) if folder.exists() else False

        await wait_until(written)
        [path] = folder.glob("*.eml")
        await wait_until(lambda: _logged(caplog, str(path)))

        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",)).get_content()
        match = TOKEN_IN_LINK.search(text)
        assert match is not None
        assert (await confirm_address(client, match.group(1))).status_code == 200

    assert message["To"] == "ada@example.com"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Only complete files: no draft is left behind.
    assert [p.name for p in folder.iterdir()] == [path.name]
    # The log names the file, never the link in it.
    assert match.group(1) not in caplog.text


async def _logged(caplog: pytest.LogCaptureFixture, needle: str) -> bool:
    return needle in caplog.text


async def test_the_html_part_escapes_what_users_typed(client, mail_server):
    await signup(client, email="ada@example.com", name='<b onmouseover="x">Ada</b> & co')

    [mail] = await mail_server.wait_for("ada@example.com")

    assert '<b onmouseover="x">' not in mail.html
    assert "&lt;b onmouseover=" in mail.html and "&amp; co" in mail.html
    # The text part is not HTML: it shows the name as typed.
    assert '<b onmouseover="x">Ada</b> & co' in mail.text


async def test_mail_names_the_product_and_comes_from_the_configured_sender(
    database_url, mail_server
):
    settings = make_settings(
        database_url=database_url,
        product_name="Acme Login",
        mail_from="Acme <accounts@acme.example>",
        **mail_server.settings(),
    )
    async with service(settings) as (_, client):
        await signup(client, email="ada@example.com")
        [mail] = await mail_server.wait_for("ada@example.com")

    assert mail.subject == "Confirm your email address for Acme Login"
    assert mail.message["From"] == "Acme <accounts@acme.example>"
    assert mail.message["Message-ID"].endswith("@acme.example>")
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert "Acme Login" in mail.text and "Acme Login" in mail.html


async def test_a_burst_of_signups_gets_one_file_each_written_together(database_url, tmp_path: Path):
    # Mails that queue together are claimed, written and recorded in batches (FILE_BATCH):
    # every one of them still gets its own file with its own working link, and is sent once.
    folder = tmp_path / "outbox"
    settings = make_settings(
        database_url=database_url, mail_outbox_dir=folder, signup_rate_limit="1000/minute"
    )
    addresses = [f"user-{n}@example.com" for n in range(40)]
    async with service(settings) as (app, client):
        responses = await asyncio.gather(*(signup(client, email=a) for a in addresses))
        assert {response.status_code for response in responses} == {201}

        async def all_sent() -> bool:
            rows = await outbox_rows(app)
            return len(rows) == 40 and all(row.sent_at is not None for row in rows)

        await wait_until(all_sent)
        files = sorted(folder.glob("*.eml"))
        assert len(files) == 40
        recipients = {}
        for path in files:
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            text = message.get_body(preferencelist=("plain",)).get_content()
            recipients[message["To"]] = TOKEN_IN_LINK.search(text).group(1)
        assert sorted(recipients) == sorted(addresses)
        # Every link is live: the tokens minted in one batch are each their own user's.
        for token in list(recipients.values())[:5]:
            assert (await confirm_address(client, token)).status_code == 200
        assert all(row.attempts == 1 for row in await outbox_rows(app))


async def test_a_stream_of_signups_is_mailed_in_rounds_at_least_a_quarter_second_apart(
    database_url, tmp_path: Path
):
    # While mail keeps coming, the sender's rounds start BUSY_ROUND_SECONDS apart, each taking
    # all that queued meanwhile (Mailer.wake). A round records its mails with one timestamp,
    # so the distinct sent_at values count the rounds. One signup every 20 ms for 1.5 s: with
    # rounds 0.05 s after each wake-up, as before, that took 25 rounds. Now the first starts
    # 0.05 s after the first signup and the last at most 0.25 s after the last one: at most
    # (streamed + 0.2) / 0.25 + 1 rounds, 8 here.
    settings = make_settings(
        database_url=database_url,
        mail_outbox_dir=tmp_path / "outbox",
        signup_rate_limit="1000/minute",
    )
    async with service(settings) as (app, client):
        started = time.monotonic()
        answers = []
        for n in range(75):
            answers.append(asyncio.create_task(signup(client, email=f"user-{n}@example.com")))
            await asyncio.sleep(0.02)
        assert {(await answer).status_code for answer in answers} == {201}
        streamed = time.monotonic() - started

        async def all_sent() -> bool:
            rows = await outbox_rows(app)
            return len(rows) == 75 and all(row.sent_at is not None for row in rows)

        await wait_until(all_sent)
        rounds = len({row.sent_at for row in await outbox_rows(app)})
    assert 2 <= rounds <= streamed / BUSY_ROUND_SECONDS + 2, (rounds, streamed)


@pytest.mark.parametrize("over_smtp", [True, False], ids=["smtp", "eml file"])
async def test_text_beyond_ascii_arrives_whole_in_every_header_and_part(
    database_url, tmp_path: Path, mail_server: MailServer, over_smtp: bool
):
    # Plain ASCII recipients are written by app/mime.py, others through email.message: both
    # must carry a non-ASCII product name, sender name and user name intact.
    delivery = mail_server.settings() if over_smtp else {"mail_outbox_dir": tmp_path / "out"}
    settings = make_settings(
        database_url=database_url,
        product_name="Pässgäte Ω",
        mail_from="Zoë Ω Support <accounts@acme.example>",
        **delivery,
    )
    # A recipient beyond ASCII goes with SMTPUTF8, which the test server offers (a server that
    # does not: tests/test_mail_international.py).
    addresses = ["ada@example.com", "zoë@bücher.example"]
    async with service(settings) as (_, client):
        for address in addresses:
            assert (await signup(client, email=address, name="Zoë «Ω»")).status_code == 201
        if over_smtp:
            messages = [(await mail_server.wait_for(address))[0].message for address in addresses]
        else:
            folder = tmp_path / "out"

            async def both_written() -> bool:
                return (
                    len(list(folder.glob("*.eml"))) == len(addresses) if folder.exists() else False
                )

            await wait_until(both_written)
            messages = [
                email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                for path in folder.glob("*.eml")
            ]
    assert sorted(str(message["To"]) for message in messages) == sorted(addresses)
    for message in messages:
        assert message["Subject"] == "Confirm your email address for Pässgäte Ω"
        assert message["From"] == "Zoë Ω Support <accounts@acme.example>"
        assert message["Message-ID"].endswith("@acme.example>")
        assert message["Auto-Submitted"] == "auto-generated"
        text = message.get_body(preferencelist=("plain",)).get_content()
        html = message.get_body(preferencelist=("html",)).get_content()
        assert "Hello Zoë «Ω»," in text and "Pässgäte Ω" in text
        assert "Zoë «Ω»" in html
        assert TOKEN_IN_LINK.search(text) is not None
        raw = message.as_bytes()
        if not over_smtp:
            # A file reads as plain UTF-8: the link is whole on its line, never `=3D`.
            assert "Pässgäte Ω".encode() in raw and b"#token=3D" not in raw
