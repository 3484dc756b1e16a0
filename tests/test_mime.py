"""app/mime.py writes what email.message would, for every mail kind, in both encodings."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import uuid

import pytest

from app.mime import MimeWriter
from app.services.mail import (
    TOKEN_KINDS,
    ClaimedMail,
    MailKind,
    Templates,
    _readable,
    build_message,
    compose,
    message_id_domain,
    new_one_time_token,
)
from tests.conftest import test_settings

SETTINGS = [
    test_settings(),
    test_settings(product_name="Pässgäte Ω", mail_from="Zoë «Ω» <accounts@acme.example>"),
    # A link longer than a line of quoted-printable, and than any header line.
    test_settings(email_verification_url="https://example.com/" + "v" * 300 + "/verify"),
]


def parsed(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    assert not message.defects
    return message


@pytest.mark.parametrize("settings", SETTINGS, ids=["ascii", "unicode", "long link"])
@pytest.mark.parametrize("kind", list(MailKind))
@pytest.mark.parametrize("for_file", [True, False], ids=["file", "smtp"])
def test_the_written_mail_reads_as_email_message_builds_it(settings, kind, for_file):
    templates = Templates()
    writer = MimeWriter(settings.mail_from, message_id_domain(settings))
    mail = ClaimedMail(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        kind=kind,
        recipient="ada.lovelace+test@example.com",
        created_at=dt.datetime.now(dt.UTC),
        attempts=1,
        name='Zoë <b>"Ω"</b> & co\tx',
        token=new_one_time_token() if kind in TOKEN_KINDS else None,
    )
    written = compose(settings, templates, writer, mail, for_file=for_file)
    assert isinstance(written, bytes)
    built = build_message(settings, templates, mail)
    expected = parsed((_readable(built) if for_file else built).as_bytes())
    actual = parsed(written)

    for header in ("Subject", "From", "To", "Auto-Submitted", "MIME-Version"):
        assert str(actual[header]) == str(expected[header]), header
    assert actual["Message-ID"].endswith(expected["Message-ID"].rpartition("@")[2])
    assert actual.get_content_type() == "multipart/alternative"
    for subtype in ("plain", "html"):
        part = actual.get_body(preferencelist=(subtype,))
        assert part.get_content() == expected.get_body(preferencelist=(subtype,)).get_content()
        assert part.get_content_charset() in ("utf-8", "us-ascii", None)
        encoding = part["Content-Transfer-Encoding"]
        if not for_file:
            assert encoding in ("7bit", "quoted-printable")  # safe for any SMTP server
    assert all(len(line) <= 998 for line in written.split(b"\n"))
    if not for_file:
        assert written.isascii()
    if for_file and mail.token is not None:
        # An .eml file keeps the link on one line, as a person copies it.
        assert mail.token.encode() in written


def test_an_address_beyond_ascii_is_left_to_email_message():
    settings = test_settings()
    writer = MimeWriter(settings.mail_from, message_id_domain(settings))
    assert writer.can_write("ada@example.com")
    for address in ("zoë@example.com", "ada@bücher.example", '"a b"@example.com', "a@b@c"):
        assert not writer.can_write(address)
        with pytest.raises(ValueError):
            writer.write(subject="s", recipient=address, text="t", html="h", eight_bit=True)
