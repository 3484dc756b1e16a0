"""The bytes of one of our mails, written directly instead of through `email.message`.

Every mail Passgate sends has one shape: a few headers and a multipart/alternative body of a
UTF-8 text part and a UTF-8 HTML part. Built as an `EmailMessage`, flattened, and (for an
.eml file) parsed back and flattened again so the parts read as plain UTF-8, one mail cost
about 6 ms of CPU, most of it in the header registry re-parsing every header it writes: more
than the signup that queued the mail, whose Argon2 hash the hashing threads then waited for
(`make bench` W4; `tests/bench/signup_cost.py` counts it per thread). Written here it costs a
few tens of microseconds.

What varies from mail to mail is ASCII by construction (the date, the Message-ID, the boundary)
or is the recipient's address, which is written here only when it is plain ASCII with no
character that would need quoting; `MimeWriter.can_write` says so, and the caller builds the
mail through `email.message` otherwise. Headers that may hold any text (From, Subject) are
folded and encoded once, by the standard library's own policy, and reused. Bodies are UTF-8,
8bit where every line fits the 998-octet limit of RFC 5322 and `eight_bit` is asked for (an
.eml file a person reads), else quoted-printable (SMTP, 7-bit safe for any server).
"""

from __future__ import annotations

import binascii
import email.policy
import re
import secrets
from email.headerregistry import Address
from email.utils import format_datetime, make_msgid

from app.db import utcnow

# RFC 5322 3.4.1 dot-atom local part and a domain of LDH labels: nothing to quote or encode.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
MAX_LINE_OCTETS = 998  # RFC 5322 2.1.1, without the line break
_POLICY = email.policy.default  # LF line ends, as `as_bytes()` of an EmailMessage writes them


def folded_header(name: str, value: str | Address) -> bytes:
    """One header line as the standard library's policy writes it (RFC 2047 for non-ASCII)."""
    return _POLICY.fold_binary(name, _POLICY.header_factory(name, value))


def is_plain_address(address: str) -> bool:
    return len(address) <= 254 and _PLAIN_ADDRESS.fullmatch(address) is not None


def _body(text: str, eight_bit: bool) -> tuple[bytes, bytes]:
    """The part's Content-Transfer-Encoding and its encoded body, LF line ends."""
    # The same line ends whatever the template had, and a final one, as the policy writes.
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    if not lines.endswith("\n"):
        lines += "\n"
    data = lines.encode()
    if eight_bit and all(len(line) <= MAX_LINE_OCTETS for line in data.split(b"\n")):
        return b"8bit", data
    if data.isascii() and all(len(line) <= 78 for line in data.split(b"\n")):
        return b"7bit", data
    return b"quoted-printable", binascii.b2a_qp(data, quotetabs=False, istext=True)


class MimeWriter:
    """Writes our mails for one sender address; the constant headers are folded once."""

    def __init__(self, mail_from: str | Address, message_id_domain: str) -> None:
        self._from = folded_header("From", mail_from)
        self._domain = message_id_domain
        self._subjects: dict[str, bytes] = {}

    def can_write(self, recipient: str) -> bool:
        """Whether `write` may be used for this recipient (else build an EmailMessage)."""
        return self._domain.isascii() and is_plain_address(recipient)

    def write(
        self, *, subject: str, recipient: str, text: str, html: str, eight_bit: bool
    ) -> bytes:
        """The whole message: headers, a text part and an HTML alternative."""
        if not self.can_write(recipient):
            raise ValueError("the recipient's address needs email.message's encoding")
        folded_subject = self._subjects.get(subject)
        if folded_subject is None:
            folded_subject = self._subjects[subject] = folded_header("Subject", subject)
        # 128 random bits: no body of ours contains it (the parts are checked all the same).
        boundary = b"===============" + secrets.token_hex(16).encode() + b"=="
        parts = []
        for subtype, content in ((b"plain", text), (b"html", html)):
            encoding, body = _body(content, eight_bit)
            if boundary in body:  # pragma: no cover - 2**-128
                raise ValueError("boundary found in a part")
            parts.append(
                b"Content-Type: text/" + subtype + b'; charset="utf-8"\n'
                b"Content-Transfer-Encoding: " + encoding + b"\n\n" + body
            )
        head = b"".join(
            (
                folded_subject,
                self._from,
                b"To: " + recipient.encode("ascii") + b"\n",
                b"Date: " + format_datetime(utcnow()).encode("ascii") + b"\n",
                b"Message-ID: " + make_msgid(domain=self._domain).encode("ascii") + b"\n",
                # RFC 3834: a machine sent this; auto-responders should not answer it.
                b"Auto-Submitted: auto-generated\n",
                b"MIME-Version: 1.0\n",
                b'Content-Type: multipart/alternative;\n boundary="' + boundary + b'"\n',
                b"\n",
            )
        )
        # The line break before a delimiter belongs to the delimiter (RFC 2046 5.1.1): each
        # part's own final line break is kept by the one after it.
        separator = b"--" + boundary + b"\n"
        return (
            head + b"".join(separator + part + b"\n" for part in parts) + b"--" + boundary + b"--\n"
        )
