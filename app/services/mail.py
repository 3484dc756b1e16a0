"""Mail that is never lost: the outbox, and the sender that every process runs.

A request that wants a mail sent writes an `outbox` row in its own transaction, so a 202 means
the mail is in the database. The sender claims due rows one at a time (on PostgreSQL with
`FOR UPDATE SKIP LOCKED`, so replicas never take the same row; on SQLite the single writer
serialises claims), composes the message, minting its one-time token only then, and delivers
it over SMTP or, without SMTP_HOST, into an `.eml` file. A failure is retried with exponential
backoff; a process killed mid-send leaves a claim that expires after MAIL_CLAIM_SECONDS, and
another process (or the restarted one) sends the mail then with a fresh token.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.errors
import email.policy
import logging
import os
import random
import re
import secrets
import traceback
import uuid
from dataclasses import dataclass, replace
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiosmtplib
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db import utcnow
from app.email_addresses import needs_smtputf8, smtp_address
from app.files import make_private_dir, open_private_file
from app.metrics import EMAIL_OUTBOX_PENDING, count_email
from app.mime import MimeWriter
from app.models import OneTimeToken, OutboxMail, User, uuid7
from app.security import hash_refresh_token
from app.transactions import Prepared, Statements, Transactions

logger = logging.getLogger("passgate.mail")


class MailKind(StrEnum):
    """What a mail is for. The first three carry a one-time token of the same name."""

    EMAIL_VERIFICATION = "email_verification"
    PASSWORD_RESET = "password_reset"
    EMAIL_CHANGE = "email_change"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_RESET_DONE = "password_reset_done"
    EMAIL_CHANGED = "email_changed"


TOKEN_KINDS = frozenset(
    {MailKind.EMAIL_VERIFICATION, MailKind.PASSWORD_RESET, MailKind.EMAIL_CHANGE}
)

SUBJECTS = {
    MailKind.EMAIL_VERIFICATION: "Confirm your email address for {product}",
    MailKind.PASSWORD_RESET: "Reset your {product} password",
    MailKind.EMAIL_CHANGE: "Confirm your new email address for {product}",
    MailKind.PASSWORD_CHANGED: "Your {product} password was changed",
    MailKind.PASSWORD_RESET_DONE: "Your {product} password was reset",
    MailKind.EMAIL_CHANGED: "The email address of your {product} account was changed",
}

# How long after a reset or verification request the sender looks for its mail.
WAKE_SOON_SECONDS = (0.05, 0.5)
# How long after any other request that queued mail (signup, address change...).
WAKE_BATCH_SECONDS = 0.05
# The least time between the starts of two rounds that found mail, when a request wakes the
# sender (Mailer.wake).
BUSY_ROUND_SECONDS = 0.25
# Seconds a shutdown waits for the mail being sent before cutting it off.
STOP_GRACE_SECONDS = 2.0
# Longest error text kept in the outbox row.
MAX_ERROR_LENGTH = 500
# How an EmailMessage is written to a file: UTF-8 headers, so an address reads as typed.
FILE_POLICY = email.policy.default.clone(utf8=True)
# Mails claimed, written and recorded together when they go to .eml files.
FILE_BATCH = 32

INSERT_MAIL = Prepared.insert(OutboxMail.__table__)

_PENDING = (
    OutboxMail.sent_at.is_(None),
    OutboxMail.failed_at.is_(None),
    OutboxMail.due_at <= bindparam("now"),
    or_(OutboxMail.claimed_until.is_(None), OutboxMail.claimed_until <= bindparam("now")),
)
# One due mail, taken for this process until `until`. SKIP LOCKED: a row another replica is
# claiming right now is passed over instead of waited for (SQLite ignores the clause: there,
# the one writer claims).
CLAIM_MAIL = Prepared(
    update(OutboxMail)
    .where(
        OutboxMail.id
        == select(OutboxMail.id)
        .where(*_PENDING)
        .order_by(OutboxMail.due_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery(),
        *_PENDING,
    )
    .values(claimed_until=bindparam("until"), attempts=OutboxMail.attempts + 1)
    .returning(
        OutboxMail.id,
        OutboxMail.user_id,
        OutboxMail.kind,
        OutboxMail.recipient,
        OutboxMail.created_at,
        OutboxMail.attempts,
    )
)
MAIL_USER = Prepared(
    select(
        User.name, User.email, User.is_active, User.email_verified, User.credentials_version
    ).where(User.id == bindparam("user_id"))
)
VOID_TOKENS_OF_PURPOSE = Prepared(
    delete(OneTimeToken).where(
        OneTimeToken.user_id == bindparam("user_id"),
        OneTimeToken.purpose == bindparam("purpose"),
    )
)
INSERT_TOKEN = Prepared.insert(OneTimeToken.__table__)
# Stored and neither sent nor given up on: what passgate_email_outbox_pending reports.
COUNT_PENDING = Prepared(
    select(func.count())
    .select_from(OutboxMail)
    .where(OutboxMail.sent_at.is_(None), OutboxMail.failed_at.is_(None))
)
MARK_SENT = Prepared(
    update(OutboxMail)
    .where(OutboxMail.id == bindparam("mail_id"))
    .values(sent_at=bindparam("now"), claimed_until=None, last_error=None)
)
MARK_RETRY = Prepared(
    update(OutboxMail)
    .where(OutboxMail.id == bindparam("mail_id"))
    .values(due_at=bindparam("next_due_at"), claimed_until=None, last_error=bindparam("error"))
)
MARK_FAILED = Prepared(
    update(OutboxMail)
    .where(OutboxMail.id == bindparam("mail_id"))
    .values(failed_at=bindparam("now"), claimed_until=None, last_error=bindparam("error"))
)


def mail_row(
    *, user_id: uuid.UUID, kind: MailKind, recipient: str, now: dt.datetime
) -> dict[str, Any]:
    """The outbox row of a mail to send as soon as possible: for INSERT_MAIL, in any unit."""
    return {
        "id": uuid7(),
        "user_id": user_id,
        "kind": str(kind),
        "recipient": recipient,
        "created_at": now,
        "due_at": now,
        "claimed_until": None,
        "attempts": 0,
        "sent_at": None,
        "failed_at": None,
        "last_error": None,
    }


def new_one_time_token() -> str:
    """256 bits from the OS's CSPRNG, base64url: 43 characters."""
    return secrets.token_urlsafe(32)


def hash_one_time_token(token: str) -> str:
    return hash_refresh_token(token)


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: doubling, capped, jittered."""
    delay = min(
        settings.mail_retry_base_seconds * 2 ** max(0, attempts - 1),
        settings.mail_retry_max_interval_seconds,
    )
    # Up to 10% either way, so replicas that failed together do not retry in lockstep.
    return delay * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not a secret


@dataclass(frozen=True, slots=True)
class ClaimedMail:
    id: uuid.UUID
    user_id: uuid.UUID
    kind: MailKind
    recipient: str
    created_at: dt.datetime
    attempts: int
    # Filled when the mail is composed:
    name: str = ""
    token: str | None = None
    skipped: str | None = None  # why the mail is no longer worth sending
    unexpected: str | None = None  # what an unexpected error composing it said (`_unexpected`)


class Templates:
    """The mail templates shipped in the package: text, and HTML with autoescaping."""

    def __init__(self) -> None:
        loader = PackageLoader("app", "templates/mail")
        self._text = Environment(
            # Plain text is not HTML: escaping would put "&amp;" into the text part.
            loader=loader,
            autoescape=False,  # noqa: S701 - the text part; the HTML one below escapes
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self._html = Environment(
            loader=loader, autoescape=select_autoescape(["html"]), undefined=StrictUndefined
        )

    def render(self, kind: MailKind, context: dict[str, Any]) -> tuple[str, str]:
        text = self._text.get_template(f"{kind}.txt").render(context)
        html = self._html.get_template(f"{kind}.html").render(context)
        return text, html


def link_for(settings: Settings, kind: MailKind, token: str) -> str:
    """The page a token's link opens, from configuration only, the token in the fragment."""
    if kind == MailKind.PASSWORD_RESET:
        base = settings.password_reset_url or f"{settings.public_url}/password-reset"
    else:
        base = settings.email_verification_url or f"{settings.public_url}/email-verification"
    # The fragment never reaches a server's logs nor a Referer header.
    return f"{base}#token={token}"


def _lifetime_text(seconds: int) -> str:
    if seconds % 86_400 == 0:
        days = seconds // 86_400
        return f"{days} day{'s' if days != 1 else ''}"
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def token_lifetime(settings: Settings, kind: MailKind) -> int:
    if kind == MailKind.PASSWORD_RESET:
        return settings.password_reset_ttl_seconds
    return settings.email_verification_ttl_seconds


def _context(settings: Settings, mail: ClaimedMail) -> dict[str, Any]:
    return {
        "product_name": settings.product_name,
        "public_url": settings.public_url,
        "name": mail.name,
        "link": link_for(settings, mail.kind, mail.token) if mail.token else None,
        "lifetime": _lifetime_text(token_lifetime(settings, mail.kind)),
    }


def envelope_sender(settings: Settings) -> str:
    """MAIL_FROM's address as SMTP carries it: a domain beyond ASCII in A-labels (xn--), so
    no server needs SMTPUTF8 for it (Settings refuse a local part beyond ASCII)."""
    address = parseaddr(settings.mail_from)[1]
    return address if address.isascii() else smtp_address(address)


def from_header(settings: Settings) -> str | Address:
    """The From header: MAIL_FROM as configured, its domain in A-labels if it has to be."""
    name, address = parseaddr(settings.mail_from)
    sender = envelope_sender(settings)
    return settings.mail_from if sender == address else Address(name, addr_spec=sender)


def message_id_domain(settings: Settings) -> str:
    return envelope_sender(settings).rpartition("@")[2] or "localhost"


def build_message(settings: Settings, templates: Templates, mail: ClaimedMail) -> EmailMessage:
    """The message for a claimed, composed mail, through `email.message`: a text part and an
    HTML alternative. For the addresses `MimeWriter` does not write (see `compose`)."""
    text, html = templates.render(mail.kind, _context(settings, mail))
    message = EmailMessage()
    message["Subject"] = SUBJECTS[mail.kind].format(product=settings.product_name)
    message["From"] = from_header(settings)
    # As text, not Address(addr_spec=...): that raises for a local part beyond ASCII, which
    # email-validator accepts (RFC 6531); a file then holds it in UTF-8 (FILE_POLICY), and
    # aiosmtplib asks the server for SMTPUTF8.
    message["To"] = mail.recipient
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(domain=message_id_domain(settings))
    # RFC 3834: a machine sent this; auto-responders should not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def compose(
    settings: Settings,
    templates: Templates,
    writer: MimeWriter,
    mail: ClaimedMail,
    *,
    for_file: bool,
) -> bytes | EmailMessage:
    """The message as bytes (app/mime.py: the usual case, cheap), or as an EmailMessage for a
    recipient address that needs email.message's encoding.

    `for_file`: the parts are plain 8-bit UTF-8, so a person reading the .eml file with `cat`
    or an editor gets the link whole (quoted-printable would split it and write `#token=3D`).
    Over SMTP they are quoted-printable, 7-bit safe for any server.
    """
    if not writer.can_write(mail.recipient):
        message = build_message(settings, templates, mail)
        return _readable(message) if for_file else message
    text, html = templates.render(mail.kind, _context(settings, mail))
    return writer.write(
        subject=SUBJECTS[mail.kind].format(product=settings.product_name),
        recipient=mail.recipient,
        text=text,
        html=html,
        eight_bit=for_file,
    )


def _readable(message: EmailMessage) -> EmailMessage:
    """A copy whose text parts are plain 8-bit UTF-8, not quoted-printable (see `compose`)."""
    copy = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(copy, EmailMessage)
    for part in copy.walk():
        if part.get_content_maintype() == "text":
            content = part.get_content()
            part.set_content(content, subtype=part.get_content_subtype(), cte="8bit")
    return copy


def write_emls(
    folder: Path, messages: list[tuple[ClaimedMail, bytes | EmailMessage]]
) -> list[Path | Exception]:
    """Write each message into `folder` as one .eml file, complete or not at all: for each,
    its path, or why it could not be written (a full disk fails that mail, not the others).

    The folder (and any parent made for it) is 0700 and the files 0600 whatever the umask
    (app/files.py): the mails hold live links. The folder is made and resolved once for the
    batch, and a file then costs six system calls (open, fchmod, write, fsync, close, rename):
    this runs in a thread, and each call hands the GIL to the event loop and takes it back.
    """
    try:
        where = make_private_dir(folder).resolve()
    except OSError as exc:
        return [exc for _ in messages]
    written: list[Path | Exception] = []
    for mail, message in messages:
        try:
            written.append(where / _write_eml(str(where), mail, message))
        except Exception as exc:  # a full disk (or a bug) fails this mail, retried
            written.append(exc)
    return written


def _write_eml(folder: str, mail: ClaimedMail, message: bytes | EmailMessage) -> str:
    """The message into a private draft, synced to disk, then renamed into place: its name."""
    name = f"{utcnow().strftime('%Y%m%dT%H%M%S')}-{mail.kind}-{mail.id}.eml"
    draft = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    fd = open_private_file(draft)
    if fd is None:  # a name with 32 random bits in it: nobody else's
        raise FileExistsError(draft)
    try:
        data = message if isinstance(message, bytes) else message.as_bytes(policy=FILE_POLICY)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):  # the write's error is the one worth reporting
            os.unlink(draft)
        raise
    os.close(fd)
    os.replace(draft, os.path.join(folder, name))
    return name


class PermanentFailure(Exception):
    """The mail server refused the mail for good (a 5xx for the recipient), or cannot carry
    its address (no SMTPUTF8): no retry helps."""


class Mailer:
    """The sender task of one process, and the handle requests use to wake it."""

    def __init__(self, settings: Settings, db: Transactions) -> None:
        self._settings = settings
        self._db = db
        self._templates = Templates()
        self._writer = MimeWriter(from_header(settings), message_id_domain(settings))
        self._sender = envelope_sender(settings)
        self._wakeup = asyncio.Event()
        self._wake_pending = False  # a wake() timer is running
        self._last_round_at = -BUSY_ROUND_SECONDS  # loop time the last round with mail began
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        """A mail was queued: look in a moment instead of at the next poll.

        The moment (WAKE_BATCH_SECONDS) lets the mail of requests answered together go out
        together, in one claiming and one recording transaction: during a burst of signups a
        mail per request cost those requests' hashing processes a core's share. While mail
        keeps coming, rounds start at least BUSY_ROUND_SECONDS apart, so that each takes more
        of it (a fifth of the CPU per mail in W4 at 25 mails a round rather than 5); a mail
        after a quiet spell still leaves WAKE_BATCH_SECONDS after its request.
        """
        if self._wake_pending:
            return
        self._wake_pending = True
        loop = asyncio.get_running_loop()
        since_last_round = loop.time() - self._last_round_at
        delay = max(WAKE_BATCH_SECONDS, BUSY_ROUND_SECONDS - since_last_round)
        loop.call_later(delay, self._wake_now)

    def _wake_now(self) -> None:
        self._wake_pending = False
        self._wakeup.set()

    def wake_soon(self) -> None:
        """Look a moment from now, at a random time, uncorrelated with the request's answer."""
        delay = random.uniform(*WAKE_SOON_SECONDS)  # noqa: S311 - jitter, not a secret
        asyncio.get_running_loop().call_later(delay, self._wakeup.set)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="passgate-mail-sender")

    async def stop(self) -> None:
        """Stop after the mail in hand, or cut it off: a cut-off mail is sent again later."""
        if self._task is None:
            return
        self._stopping = True
        self._wakeup.set()
        done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE_SECONDS)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run_forever(self) -> None:
        while not self._stopping:
            try:
                while not self._stopping and await self.send_next():
                    pass
            except (SQLAlchemyError, OSError) as exc:  # the database may be briefly away
                logger.warning(
                    "mail sender: database unavailable, will retry: %s", type(exc).__name__
                )
            except Exception as exc:  # the sender must outlive any bug
                # Errors of one mail are that mail's outcome (`_unexpected`); this is what
                # escapes a round as a whole. The task goes on after the pause below, so it
                # cannot spin; cancellation (a BaseException) still ends it.
                logger.error("mail sender: unexpected %s, will retry", _error_origin(exc))
            # asyncio.wait rather than asyncio.timeout: on Python 3.11 a timeout expiring
            # together with a cancellation can swallow the cancellation.
            waiter = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait({waiter}, timeout=self._settings.mail_poll_interval_seconds)
            finally:
                waiter.cancel()
            self._wakeup.clear()

    def _batch_size(self) -> int:
        # Over SMTP each mail has its own claim and its own time budget within it (see
        # _deliver), so mails go one at a time. Files are written in a moment: a batch shares
        # one claiming transaction, one trip to a thread and one recording transaction.
        return 1 if self._settings.smtp_host is not None else FILE_BATCH

    async def send_next(self) -> bool:
        """Claim, compose and deliver the due mail (a batch of it for files); whether more may
        be due. A batch that was not full took every mail due when it was claimed: mail queued
        since then wakes the sender, so no claim that would find nothing follows it."""
        batch = self._batch_size()
        # From the claim's start: a request answered while the claim is under way wakes the
        # next round a full BUSY_ROUND_SECONDS after it, not WAKE_BATCH_SECONDS.
        previous_round_at = self._last_round_at
        self._last_round_at = asyncio.get_running_loop().time()
        mails = await self._claim_and_compose(batch)
        if not mails:
            self._last_round_at = previous_round_at
            return False
        outcomes: list[_Outcome] = []
        sending = []
        for mail in mails:
            if mail.unexpected is not None:
                count_email(str(mail.kind), "failed")
                outcomes.append(self._failed(mail, mail.unexpected))
            elif mail.skipped is None:
                sending.append(mail)
            else:
                outcomes.append(
                    _Outcome(
                        MARK_FAILED,
                        mail,
                        f"not sent: {mail.skipped}",
                        logging.INFO,
                        f"mail {mail.id} ({mail.kind}) not sent: {mail.skipped}",
                    )
                )
        if self._settings.smtp_host is None:
            outcomes += await self._write_files(sending)
        else:
            for mail in sending:
                outcomes.append(await self._send(mail))
        await self._record(outcomes)
        for outcome in outcomes:
            logger.log(outcome.log_level, "%s", outcome.log_line)
        return len(mails) == batch

    async def _claim_and_compose(self, batch: int) -> list[ClaimedMail]:
        now = utcnow()
        settings = self._settings
        claim = {"now": now, "until": now + dt.timedelta(seconds=settings.mail_claim_seconds)}

        def claim_one(statements: Statements) -> ClaimedMail | None:
            row = statements.execute(CLAIM_MAIL, claim).one_or_none()
            if row is None:
                return None
            mail = ClaimedMail(
                id=row.id,
                user_id=row.user_id,
                kind=MailKind(row.kind),
                recipient=row.recipient,
                created_at=row.created_at,
                attempts=row.attempts,
            )
            try:
                return prepare(statements, mail)
            except SQLAlchemyError:
                raise  # the transaction is over: the claim is undone, the round retried
            except Exception as exc:  # one mail's bug must not stop the others
                # Raising would undo the claim, and the mail, first in line, would block the
                # queue for ever: it is claimed, and retried later with backoff instead.
                return replace(mail, unexpected=_unexpected(mail, exc))

        def prepare(statements: Statements, mail: ClaimedMail) -> ClaimedMail:
            """The claimed mail with its user's name and its token, or why it is skipped."""
            user = statements.execute(MAIL_USER, {"user_id": mail.user_id}).one_or_none()
            if user is None:
                return replace(mail, skipped="the account is gone")
            skipped = _why_not_send(mail, user)
            if skipped is not None:
                return replace(mail, name=user.name, skipped=skipped)
            token = None
            if mail.kind in TOKEN_KINDS:
                # Minted now, not at the request: no token is ever at rest in clear. A retry
                # mints a fresh one, and each new one voids the older ones of its purpose.
                token = new_one_time_token()
                purpose = {"user_id": mail.user_id, "purpose": str(mail.kind)}
                statements.execute(VOID_TOKENS_OF_PURPOSE, purpose)
                statements.execute(
                    INSERT_TOKEN,
                    {
                        "id": uuid.uuid4(),
                        **purpose,
                        "email": mail.recipient,
                        "token_hash": hash_one_time_token(token),
                        "created_at": now,
                        "expires_at": now
                        + dt.timedelta(seconds=token_lifetime(settings, mail.kind)),
                        "used_at": None,
                        "credentials_version": user.credentials_version,
                    },
                )
            return replace(mail, name=user.name, token=token)

        def claim_and_compose(statements: Statements) -> list[ClaimedMail]:
            mails: list[ClaimedMail] = []
            while len(mails) < batch and (mail := claim_one(statements)) is not None:
                mails.append(mail)
            return mails

        return await self._db.write(claim_and_compose)

    async def _write_files(self, mails: list[ClaimedMail]) -> list[_Outcome]:
        """Each mail into its .eml file (all of them in one trip to a thread)."""
        if not mails:
            return []
        settings = self._settings
        outcomes = []
        ready = []
        for mail in mails:
            try:
                message = compose(settings, self._templates, self._writer, mail, for_file=True)
            except _UNCOMPOSABLE as exc:
                outcomes.append(_uncomposable(mail, exc))
            except Exception as exc:  # see `_unexpected`
                outcomes.append(self._failed_unexpectedly(mail, exc))
            else:
                ready.append((mail, message))

        results = await asyncio.to_thread(write_emls, settings.outbox_dir, ready) if ready else []
        for (mail, _), where in zip(ready, results, strict=True):
            if isinstance(where, Exception):
                count_email(str(mail.kind), "failed")
                error = _describe(where) if isinstance(where, OSError) else _unexpected(mail, where)
                outcomes.append(self._failed(mail, error))
            else:
                count_email(str(mail.kind), "sent")
                outcomes.append(
                    _Outcome(
                        MARK_SENT,
                        mail,
                        "",
                        logging.INFO,
                        f"mail {mail.id} ({mail.kind}) written to {where}",
                    )
                )
        return outcomes

    async def _send(self, mail: ClaimedMail) -> _Outcome:
        """One mail over SMTP."""
        try:
            # The envelope and the To header carry the address as SMTP does (`smtp_address`:
            # an A-label domain); the row and the account keep it as stored.
            outgoing = replace(mail, recipient=smtp_address(mail.recipient))
            message = compose(
                self._settings, self._templates, self._writer, outgoing, for_file=False
            )
        except _UNCOMPOSABLE as exc:  # InvalidEmail among them
            return _uncomposable(mail, exc)
        except Exception as exc:  # see `_unexpected`
            return self._failed_unexpectedly(mail, exc)
        try:
            await self._deliver(outgoing, message)
        except PermanentFailure as exc:
            count_email(str(mail.kind), "failed")
            return _Outcome(
                MARK_FAILED,
                mail,
                str(exc),
                logging.WARNING,
                f"mail {mail.id} ({mail.kind}) refused for good: {exc}",
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            count_email(str(mail.kind), "failed")
            return self._failed(mail, _describe(exc))
        except Exception as exc:  # see `_unexpected`
            # Such as aiosmtplib's UnicodeEncodeError for an address it cannot write.
            return self._failed_unexpectedly(mail, exc)
        count_email(str(mail.kind), "sent")
        return _Outcome(MARK_SENT, mail, "", logging.INFO, f"mail {mail.id} ({mail.kind}) sent")

    async def _deliver(self, mail: ClaimedMail, message: bytes | EmailMessage) -> None:
        """Send `mail` (its recipient as `smtp_address` gives it); PermanentFailure when the
        server will never take it."""
        settings = self._settings
        assert settings.smtp_host is not None
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=(
                settings.smtp_password.get_secret_value()
                if settings.smtp_password is not None
                else None
            ),
            use_tls=settings.smtp_tls == "tls",
            # True, not None ("if offered"): a server that stops offering STARTTLS must not
            # receive the password and the links in clear.
            start_tls=settings.smtp_tls == "starttls",
            # Verified against the system's CAs and these (SMTP_CA_FILE); aiosmtplib checks the
            # certificate and the host name by default (validate_certs), and it stays so.
            cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
            timeout=settings.smtp_timeout_seconds,
        )
        # The whole exchange stays well inside the claim, so no other process takes the mail
        # while this one may still send it.
        budget = max(1.0, settings.mail_claim_seconds * 0.8)
        async with asyncio.timeout(budget):
            await client.connect(timeout=settings.smtp_connect_timeout_seconds)
            try:
                if needs_smtputf8(mail.recipient):
                    # Asked of the EHLO reply, not found out from an error: no retry of this
                    # mail through this server could ever deliver it.
                    if client.is_ehlo_or_helo_needed:
                        await client.ehlo()
                    if not client.supports_extension("smtputf8"):
                        raise PermanentFailure(
                            "the recipient's address is beyond ASCII and needs SMTPUTF8, "
                            "which the mail server does not offer"
                        )
                if isinstance(message, bytes):
                    await client.sendmail(self._sender, [mail.recipient], message)
                else:  # asks for SMTPUTF8 itself when an address needs it
                    await client.send_message(
                        message, sender=self._sender, recipients=[mail.recipient]
                    )
            except aiosmtplib.SMTPRecipientsRefused as exc:
                client.close()
                if all(refusal.code >= 500 for refusal in exc.recipients):
                    refusal = exc.recipients[0]
                    raise PermanentFailure(
                        f"recipient refused: {refusal.code} {redact_addresses(refusal.message)}"
                    ) from None
                raise
            except BaseException:
                # Closed at once, not with QUIT: on cancellation (shutdown) nothing may wait.
                client.close()
                raise
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit()

    def _failed_unexpectedly(self, mail: ClaimedMail, exc: Exception) -> _Outcome:
        """A failed attempt for an error no code path expects (`_unexpected`), counted."""
        count_email(str(mail.kind), "failed")
        return self._failed(mail, _unexpected(mail, exc))

    def _failed(self, mail: ClaimedMail, error: str) -> _Outcome:
        """Retried later with backoff, or given up on once retries would run past the window."""
        now = utcnow()
        settings = self._settings
        delay = retry_delay(settings, mail.attempts)
        if (now - mail.created_at).total_seconds() + delay > settings.mail_retry_for_seconds:
            return _Outcome(
                MARK_FAILED,
                mail,
                error,
                logging.WARNING,
                f"mail {mail.id} ({mail.kind}) not delivered after {mail.attempts} attempts, "
                f"giving up: {error}",
            )
        return _Outcome(
            MARK_RETRY,
            mail,
            error,
            logging.WARNING,
            f"mail {mail.id} ({mail.kind}) not delivered (attempt {mail.attempts}), "
            f"next try in {delay:.0f}s: {error}",
            next_due_at=now + dt.timedelta(seconds=delay),
        )

    async def _record(self, outcomes: list[_Outcome]) -> None:
        """What became of each mail of a batch, in one transaction."""
        now = utcnow()
        params = [
            (
                outcome.statement,
                {
                    "mail_id": outcome.mail.id,
                    "now": now,
                    "next_due_at": outcome.next_due_at,
                    "error": outcome.error[:MAX_ERROR_LENGTH],
                },
            )
            for outcome in outcomes
        ]

        def store(statements: Statements) -> None:
            for prepared, values in params:
                statements.execute(prepared, values)

        await self._db.write(store)


# What email.message raises for a mail it cannot write (a defect is a ValueError): that mail
# fails, the sender goes on with the others.
_UNCOMPOSABLE = (ValueError, email.errors.MessageError)


def _error_origin(exc: BaseException) -> str:
    """An exception's type and where it was raised, never its text, which may quote an
    address, a link or a token."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    frame = frames[-1]
    return f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno} in {frame.name}"


def _unexpected(mail: ClaimedMail, exc: Exception) -> str:
    """Log an error no code path expects (a bug, ours or a library's) for one mail, and say
    what its outbox row records. That mail is retried with backoff like any failed one, and
    given up on after MAIL_RETRY_FOR_SECONDS; the sender goes on with the others."""
    logger.error("mail %s (%s): unexpected %s", mail.id, mail.kind, _error_origin(exc))
    return f"unexpected error: {type(exc).__name__}"


def _uncomposable(mail: ClaimedMail, exc: Exception) -> _Outcome:
    count_email(str(mail.kind), "failed")
    error = f"could not be composed: {type(exc).__name__}: {exc}"
    return _Outcome(
        MARK_FAILED, mail, error, logging.WARNING, f"mail {mail.id} ({mail.kind}) {error}"
    )


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What became of one mail: the statement that records it, and the log line that says so."""

    statement: Prepared
    mail: ClaimedMail
    error: str
    log_level: int
    log_line: str
    next_due_at: dt.datetime | None = None


async def update_outbox_gauge(db: Transactions) -> None:
    """Set passgate_email_outbox_pending from the outbox table (every replica shares it)."""

    def count_pending(statements: Statements) -> int:
        row = statements.execute(COUNT_PENDING).one_or_none()
        return int(row[0]) if row is not None else 0

    EMAIL_OUTBOX_PENDING.set(await db.read(count_pending))


def _why_not_send(mail: ClaimedMail, user: Any) -> str | None:
    """A link mail that no longer makes sense (the account changed since it was queued)."""
    from app.services.users import normalize_email

    if mail.kind in (MailKind.PASSWORD_RESET, MailKind.EMAIL_VERIFICATION):
        if not user.is_active:
            return "the account is deactivated"
        if normalize_email(user.email) != normalize_email(mail.recipient):
            return "the account's address changed"
        if mail.kind == MailKind.EMAIL_VERIFICATION and user.email_verified:
            return "the address is verified already"
    if mail.kind == MailKind.EMAIL_CHANGE and not user.is_active:
        return "the account is deactivated"
    return None


# Anything shaped like an address in a mail server's words ("550 5.1.1 <ada@example.com>:
# Recipient address rejected"), aiosmtplib's (a refusal lists its recipients) or an OS error's.
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"'@]+@[^\s<>()\[\],;:\"'@]+")


def redact_addresses(text: str) -> str:
    """The text with every mail address replaced: log lines and outbox rows outlive the account
    and are read by operators, so they name a mail by its id, never by whom it was for."""
    return _ADDRESS.sub("[address]", text)


def _describe(exc: BaseException) -> str:
    """An error for the log and the outbox row: the SMTP reply or the exception's kind."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"{type(exc).__name__}: {exc.code} {exc.message}"
    elif isinstance(exc, TimeoutError):
        text = "TimeoutError: no answer in time"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact_addresses(text)[:MAX_ERROR_LENGTH]
