"""Mail over TLS to a real aiosmtpd with a certificate made here, and what never reaches a log.

STARTTLS (the default) and implicit TLS deliver when the server's certificate comes from the
CA in SMTP_CA_FILE; a certificate no trusted CA issued, or one for another name, is refused
(the service verifies by default and has no way to stop verifying). SMTP errors, which quote
the recipient, reach the log and the outbox row with the address taken out.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.models import OutboxMail
from tests.conftest import signup
from tests.conftest import test_settings as make_settings
from tests.mail import Captured, MailServer
from tests.test_mail import outbox_rows, wait_until
from tests.test_recovery import VERIFY, service

SMTP_LOGIN = ("passgate-mailer", "smtp-password-for-the-test")


@dataclass(frozen=True)
class Certificates:
    ca_file: Path  # what SMTP_CA_FILE names
    server_context: ssl.SSLContext  # the server's certificate for 127.0.0.1, by that CA
    other_name_context: ssl.SSLContext  # the same CA's certificate for another host only
    self_signed_context: ssl.SSLContext  # a certificate no configured CA vouches for


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    names: list[x509.GeneralName],
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _server_context(
    folder: Path, name: str, certificate: x509.Certificate, key: Any
) -> ssl.SSLContext:
    chain = folder / f"{name}.pem"
    chain.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain)
    return context


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("certificates")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Passgate test CA", ca_key, None, [])
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def issued(name: str, names: list[x509.GeneralName]) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(name, key, ("Passgate test CA", ca_key), names)
        return _server_context(folder, name, certificate, key)

    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _certificate("127.0.0.1", stranger_key, None, [])
    loopback = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    return Certificates(
        ca_file=ca_file,
        server_context=issued("127.0.0.1", loopback),
        other_name_context=issued("mail.example.org", [x509.DNSName("mail.example.org")]),
        self_signed_context=_server_context(folder, "stranger", stranger, stranger_key),
    )


class Logins:
    """aiosmtpd's authenticator: accepts SMTP_LOGIN, and remembers who logged in over what."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login = (data.login.decode(), data.password.decode())
        self.seen.append((login[0], session.ssl is not None))
        return AuthResult(success=login == SMTP_LOGIN)


async def sign_up_through(
    database_url: str, server: MailServer, **overrides: Any
) -> tuple[list[Captured], OutboxMail]:
    """Start `server`, sign up ada@example.com with a service sending there (STARTTLS unless
    `overrides` say otherwise) and stop both once the sender has recorded the attempt: what
    the server received, and the mail's outbox row."""
    server.start()
    try:
        settings = make_settings(
            database_url=database_url,
            **server.settings(**{"smtp_tls": "starttls", **overrides}),
        )
        async with service(settings) as (app, client):
            assert (await signup(client, email="ada@example.com")).status_code == 201

            async def recorded() -> bool:
                rows = await outbox_rows(app)
                return bool(rows) and (
                    rows[0].sent_at is not None or rows[0].last_error is not None
                )

            await wait_until(recorded)
            [row] = await outbox_rows(app)
    finally:
        server.stop()
    return server.messages(), row


def delivered(received: list[Captured], row: OutboxMail) -> Captured:
    """The one verification mail that came, with its link, recorded as sent."""
    [mail] = received
    assert mail.recipients == ["ada@example.com"] and VERIFY in mail.subject
    assert mail.token
    assert row.sent_at is not None and row.last_error is None
    return mail


async def test_starttls_delivers_and_logs_in_only_once_encrypted(database_url, certificates):
    logins = Logins()
    server = MailServer(
        tls_context=certificates.server_context,
        require_starttls=True,
        authenticator=logins,
        auth_required=True,
    )
    delivered(
        *await sign_up_through(
            database_url,
            server,
            smtp_ca_file=certificates.ca_file,
            smtp_username=SMTP_LOGIN[0],
            smtp_password=SMTP_LOGIN[1],
        )
    )
    # aiosmtpd refuses AUTH before STARTTLS (auth_require_tls); the login came over TLS.
    assert logins.seen == [(SMTP_LOGIN[0], True)]


async def test_implicit_tls_delivers(database_url, certificates):
    server = MailServer(ssl_context=certificates.server_context)
    delivered(
        *await sign_up_through(
            database_url, server, smtp_tls="tls", smtp_ca_file=certificates.ca_file
        )
    )


@pytest.mark.parametrize(
    ("mode", "context", "with_ca_file"),
    [
        ("starttls", "self_signed_context", True),  # no configured CA issued it
        ("starttls", "server_context", False),  # the system's CAs do not know the test CA
        ("tls", "other_name_context", True),  # the right CA, for another host name
    ],
)
async def test_a_certificate_that_does_not_verify_gets_no_mail(
    database_url, certificates, mode: str, context: str, with_ca_file: bool
):
    tls = getattr(certificates, context)
    server = MailServer(**({"tls_context": tls} if mode == "starttls" else {"ssl_context": tls}))
    received, row = await sign_up_through(
        database_url,
        server,
        smtp_tls=mode,
        smtp_ca_file=certificates.ca_file if with_ca_file else None,
        smtp_username=SMTP_LOGIN[0],
        smtp_password=SMTP_LOGIN[1],
    )
    assert received == []
    assert row.sent_at is None
    assert "CERTIFICATE_VERIFY_FAILED" in row.last_error, row.last_error


@pytest.mark.parametrize(
    ("reply", "gives_up"),
    [
        ("450 4.2.1 <ada@example.com>: mailbox ada@example.com busy, try later", False),
        ("550 5.1.1 <ada@example.com>: Recipient address rejected: unknown user", True),
    ],
)
async def test_smtp_errors_reach_the_log_and_the_outbox_without_the_address(
    database_url,
    mail_server: MailServer,
    caplog: pytest.LogCaptureFixture,
    reply: str,
    gives_up: bool,
):
    mail_server.refusals["ada@example.com"] = reply
    settings = make_settings(database_url=database_url, **mail_server.settings())
    caplog.set_level(logging.INFO, logger="passgate.mail")
    async with service(settings) as (app, client):
        assert (await signup(client, email="ada@example.com")).status_code == 201

        async def answered() -> bool:
            rows = await outbox_rows(app)
            return bool(rows) and rows[0].last_error is not None

        await wait_until(answered)
        [row] = await outbox_rows(app)

    assert (row.failed_at is not None) is gives_up
    assert "ada@example.com" not in row.last_error
    assert "[address]" in row.last_error, row.last_error
    assert reply[:3] in row.last_error  # the server's code stays, to tell the two apart
    mail_lines = [
        record.getMessage() for record in caplog.records if record.name == "passgate.mail"
    ]
    assert any(str(row.id) in line for line in mail_lines), mail_lines
    assert not any("ada@example.com" in line for line in mail_lines), mail_lines
