"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, its controller in a thread."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.processes import free_port

TOKEN_IN_LINK = re.compile(r"#token=([A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class Captured:
    recipients: list[str]
    message: EmailMessage
    sender: str = ""  # the envelope's MAIL FROM
    mail_options: tuple[str, ...] = ()  # its parameters, such as SMTPUTF8

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "no text part"
        return part.get_content()

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None, "no HTML part"
        return part.get_content()

    @property
    def link(self) -> str:
        [link] = {word for word in self.text.split() if "#token=" in word}
        return link

    @property
    def token(self) -> str:
        match = TOKEN_IN_LINK.search(self.text)
        assert match is not None, f"no token link in:\n{self.text}"
        return match.group(1)


class _Handler:
    def __init__(self, server: MailServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self._server.refusals.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._server.lock:
            self._server.received.append(
                Captured(
                    recipients=list(envelope.rcpt_tos),
                    message=message,
                    sender=str(envelope.mail_from),
                    mail_options=tuple(envelope.mail_options),
                )
            )
        return "250 OK"


class MailServer:
    """An SMTP server on a port of the OS's choosing; `start` may come later than the port.

    `controller_options` go to aiosmtpd's Controller and SMTP: `tls_context` with
    `require_starttls` for STARTTLS, `ssl_context` for implicit TLS, `authenticator`.
    aiosmtpd's Controller offers SMTPUTF8 (RFC 6531) unless given `enable_SMTPUTF8=False`, as
    many real servers are. `refusals` maps a recipient to the reply its RCPT TO gets instead of 250.
    """

    def __init__(self, port: int | None = None, **controller_options: Any) -> None:
        self.port = port or free_port()
        self.received: list[Captured] = []
        self.refusals: dict[str, str] = {}
        self.lock = threading.Lock()
        self._options = controller_options
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, **self._options
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Settings that deliver here at once, and retry fast."""
        return {
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "smtp_tls": "none",
            "mail_poll_interval_seconds": 0.2,
            "mail_retry_base_seconds": 0.2,
            "mail_retry_max_interval_seconds": 1.0,
            **overrides,
        }

    def messages(self, to: str | None = None) -> list[Captured]:
        with self.lock:
            return [m for m in self.received if to is None or to in m.recipients]

    def _arrived(self, to: str, count: int, subject: str, deadline: float) -> list[Captured]:
        """The first `count` such mails if they came, [] to wait on; fails after the deadline."""
        found = [m for m in self.messages(to) if subject in m.subject]
        if len(found) >= count:
            return found[:count]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(found)} of {count} mails to {to} ({subject!r}) in time; "
                f"received: {[(m.recipients, m.subject) for m in self.messages()]}"
            )
        return []

    async def wait_for(
        self, to: str, *, count: int = 1, subject: str = "", within: float = 20.0
    ) -> list[Captured]:
        """The first `count` mails to `to` (whose subject contains `subject`), once they came."""
        deadline = time.monotonic() + within
        while True:
            if found := self._arrived(to, count, subject, deadline):
                return found
            await asyncio.sleep(0.05)

    def wait_for_blocking(
        self, to: str, *, count: int = 1, subject: str = "", within: float = 20.0
    ) -> list[Captured]:
        """`wait_for` for synchronous tests; it never needs an event loop of its own, so it
        also works where one already runs in the thread (Playwright's sync API)."""
        deadline = time.monotonic() + within
        while True:
            if found := self._arrived(to, count, subject, deadline):
                return found
            time.sleep(0.05)
