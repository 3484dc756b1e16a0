"""Password reset, address verification and address change: the mailed one-time tokens.

A request only queues a mail (app/services/mail.py) in its own transaction; the token is minted
when the sender composes the mail. A token is spent by one conditional UPDATE (unused and
unexpired), so of two concurrent confirmations exactly one sees a row change, on SQLite and
PostgreSQL alike; whatever the token does happens in that same transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from app.errors import EmailTaken, InvalidOneTimeToken
from app.models import USER_COLUMNS, Account, OneTimeToken, OutboxMail, User
from app.security import Passwords
from app.services import credentials
from app.services.mail import INSERT_MAIL, MailKind, hash_one_time_token, mail_row
from app.services.users import USER_BY_EMAIL, normalize_email
from app.transactions import Prepared, Statements, Transactions

# The shape of every token we mint (secrets.token_urlsafe(32)): anything else is not one.
TOKEN_LENGTH = 43
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _spend(purposes: tuple[MailKind, ...]) -> Prepared:
    return Prepared(
        update(OneTimeToken)
        .where(
            OneTimeToken.token_hash == bindparam("presented_hash"),
            # Equalities, not IN: a prepared statement has no expanding parameters.
            or_(*(OneTimeToken.purpose == str(purpose) for purpose in purposes)),
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > bindparam("now"),
        )
        .values(used_at=bindparam("now"))
        .returning(
            OneTimeToken.user_id,
            OneTimeToken.purpose,
            OneTimeToken.email,
            OneTimeToken.credentials_version,
        )
    )


SPEND_RESET_TOKEN = _spend((MailKind.PASSWORD_RESET,))
SPEND_ADDRESS_TOKEN = _spend((MailKind.EMAIL_VERIFICATION, MailKind.EMAIL_CHANGE))
LIVE_TOKEN = Prepared(
    select(OneTimeToken.id).where(
        OneTimeToken.token_hash == bindparam("token_hash"),
        OneTimeToken.purpose == bindparam("purpose"),
        OneTimeToken.used_at.is_(None),
        OneTimeToken.expires_at > bindparam("now"),
    )
)
USER_BY_ID = Prepared(
    select(*USER_COLUMNS).where(User.id == bindparam("user_id")), row_type=Account
)
MARK_VERIFIED = Prepared(
    update(User)
    .where(User.id == bindparam("user_id"), User.is_active.is_(True))
    .values(email_verified=True)
)
CHANGE_EMAIL = Prepared(
    update(User)
    .where(User.id == bindparam("user_id"), User.is_active.is_(True))
    .values(
        email=bindparam("new_email"),
        email_normalized=bindparam("new_email_normalized"),
        email_verified=True,
    )
)
VOID_UNUSED_TOKENS = Prepared(
    delete(OneTimeToken).where(
        OneTimeToken.user_id == bindparam("user_id"), OneTimeToken.used_at.is_(None)
    )
)
VOID_UNUSED_OF_PURPOSE = Prepared(
    delete(OneTimeToken).where(
        OneTimeToken.user_id == bindparam("user_id"),
        OneTimeToken.purpose == bindparam("purpose"),
        OneTimeToken.used_at.is_(None),
    )
)


@dataclass(frozen=True, slots=True)
class MailRequest:
    """What a reset or verification request did: the user mailed, or why no mail went."""

    user_id: uuid.UUID | None
    reason: str | None = None


def _token_hash(token: str) -> str:
    if len(token) != TOKEN_LENGTH or not _BASE64URL.issuperset(token):
        raise InvalidOneTimeToken
    return hash_one_time_token(token)


async def request_link(
    db: Transactions, *, kind: MailKind, email: str, now: dt.datetime
) -> MailRequest:
    """Queue a reset or verification mail for the address if it should get one.

    Registered or not, the work is the same two statements in one short transaction, and
    nothing slow: the mail leaves after the answer, so its time does not tell the cases apart.
    """
    params = {"email": normalize_email(email)}
    row = mail_row(user_id=uuid.uuid4(), kind=kind, recipient="", now=now)
    queue_params = {f"new_{key}": value for key, value in row.items()} | params

    def queue(statements: Statements) -> MailRequest:
        user: Account | None = statements.execute(USER_BY_EMAIL, params).one_or_none()
        # Runs whether or not the address is registered (inserting nothing when it is not):
        # the same round trips either way.
        queued = statements.execute(_QUEUE_LINK[kind], queue_params).rowcount == 1
        if user is None:
            return MailRequest(None, "unknown_email")
        if not queued:
            return MailRequest(None, "inactive" if not user.is_active else "verified")
        return MailRequest(user.id)

    return await db.write(queue)


def _queue_link(kind: MailKind) -> Prepared:
    """INSERT INTO outbox ... SELECT ... FROM users WHERE the address should get this mail."""
    columns = tuple(OutboxMail.__table__.columns)
    conditions = [User.email_normalized == bindparam("email"), User.is_active.is_(True)]
    if kind == MailKind.EMAIL_VERIFICATION:
        conditions.append(User.email_verified.is_(False))
    selected = {"user_id": User.id, "recipient": User.email}
    return Prepared(
        insert(OutboxMail).from_select(
            [column.key for column in columns],
            select(
                *[
                    selected.get(column.key, bindparam(f"new_{column.key}", type_=column.type))
                    for column in columns
                ]
            ).where(*conditions),
        )
    )


_QUEUE_LINK = {
    kind: _queue_link(kind) for kind in (MailKind.PASSWORD_RESET, MailKind.EMAIL_VERIFICATION)
}


async def reset_password(
    db: Transactions, *, passwords: Passwords, token: str, new_password: str, now: dt.datetime
) -> uuid.UUID:
    """Spend a reset token to set a new password; the user's id, else InvalidOneTimeToken.

    In one transaction: the token is spent, the password set, the address counted as verified,
    every login ended and every other mailed token voided, and a notice queued. A second
    factor, once there is one, is left as it is.
    """
    token_hash = _token_hash(token)
    probe = {"token_hash": token_hash, "purpose": str(MailKind.PASSWORD_RESET), "now": now}

    def is_live(statements: Statements) -> bool:
        return statements.execute(LIVE_TOKEN, probe).one_or_none() is not None

    # Checked before the slow hash, so junk tokens cost a lookup and no hashing thread; the
    # spend below decides for real.
    if not await db.read(is_live):
        raise InvalidOneTimeToken
    new_hash = await passwords.hash(new_password)

    def spend_and_reset(statements: Statements) -> uuid.UUID:
        spent = statements.execute(SPEND_RESET_TOKEN, {"presented_hash": token_hash, "now": now})
        row = spent.one_or_none()
        if row is None:
            raise InvalidOneTimeToken
        user: Account | None = statements.execute(
            USER_BY_ID, {"user_id": row.user_id}
        ).one_or_none()
        if user is None or normalize_email(user.email) != normalize_email(row.email):
            raise InvalidOneTimeToken  # rolls the spend back with everything else
        # Conditional on the credentials the link was issued under: a password change, a
        # deactivation (even undone since) or another reset after the mail kills the link. It
        # moves the stamp on and ends every login, so a login still checking the old password
        # cannot open a session after this (app/services/credentials.py).
        if not user.is_active or not credentials.change_credentials(
            statements,
            user_id=user.id,
            verified_version=row.credentials_version,
            values={"password_hash": new_hash},
            now=now,
        ):
            raise InvalidOneTimeToken  # rolls the spend back with everything else
        statements.execute(MARK_VERIFIED, {"user_id": user.id})
        statements.execute(VOID_UNUSED_TOKENS, {"user_id": user.id})
        statements.execute(
            INSERT_MAIL,
            mail_row(
                user_id=user.id, kind=MailKind.PASSWORD_RESET_DONE, recipient=user.email, now=now
            ),
        )
        return user.id

    return await db.write(spend_and_reset)


async def confirm_address(
    db: Transactions, *, token: str, now: dt.datetime
) -> tuple[Account, str | None]:
    """Spend a verification or address-change token; the user, and its old address if changed.

    InvalidOneTimeToken for any bad token, EmailTaken if the new address was registered since
    the link was sent (the token then stays unspent).
    """
    token_hash = _token_hash(token)

    def spend_and_confirm(statements: Statements) -> tuple[Account, str | None]:
        row = statements.execute(
            SPEND_ADDRESS_TOKEN, {"presented_hash": token_hash, "now": now}
        ).one_or_none()
        if row is None:
            raise InvalidOneTimeToken
        user: Account | None = statements.execute(
            USER_BY_ID, {"user_id": row.user_id}
        ).one_or_none()
        if user is None or not user.is_active:
            raise InvalidOneTimeToken
        old_email: str | None = None
        if row.purpose == MailKind.EMAIL_VERIFICATION:
            # Bound to the address it was sent to: after a change, an old link proves nothing.
            if normalize_email(user.email) != normalize_email(row.email):
                raise InvalidOneTimeToken
            statements.execute(MARK_VERIFIED, {"user_id": user.id})
            statements.execute(
                VOID_UNUSED_OF_PURPOSE,
                {"user_id": user.id, "purpose": str(MailKind.EMAIL_VERIFICATION)},
            )
        else:
            old_email = user.email
            try:
                statements.execute(
                    CHANGE_EMAIL,
                    {
                        "user_id": user.id,
                        "new_email": row.email,
                        "new_email_normalized": normalize_email(row.email),
                    },
                )
            except IntegrityError:
                raise EmailTaken(row.email) from None
            # API.md: an address change voids every mailed token of the account.
            statements.execute(VOID_UNUSED_TOKENS, {"user_id": user.id})
            statements.execute(
                INSERT_MAIL,
                mail_row(
                    user_id=user.id, kind=MailKind.EMAIL_CHANGED, recipient=old_email, now=now
                ),
            )
        updated: Account = statements.execute(USER_BY_ID, {"user_id": user.id}).one_or_none()
        return updated, old_email

    return await db.write(spend_and_confirm)


async def request_email_change(
    db: Transactions, *, user: Account, new_email: str, now: dt.datetime, quiet: bool
) -> None:
    """Queue the confirmation link to the new address; EmailTaken if it is registered.

    `quiet`: the new address got such a link moments ago, so none is sent this time.
    """
    params = {"email": normalize_email(new_email)}

    def queue(statements: Statements) -> None:
        if statements.execute(USER_BY_EMAIL, params).one_or_none() is not None:
            raise EmailTaken(new_email)
        if not quiet:
            statements.execute(
                INSERT_MAIL,
                mail_row(user_id=user.id, kind=MailKind.EMAIL_CHANGE, recipient=new_email, now=now),
            )

    await db.write(queue)
