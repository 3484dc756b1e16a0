"""Accounts: creation, password login, listing, changes and deletion.

Signup and login run as units of work in `app/transactions.py` (one trip to the database
each); the rarer changes below use the request's session.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.email_addresses import email_key, lookup_key
from app.errors import (
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    SelfLockout,
    UserNotFound,
    WrongPassword,
)
from app.models import (
    USER_COLUMNS,
    Account,
    OneTimeToken,
    OutboxMail,
    TokenFamily,
    TotpFactor,
    User,
    uuid7,
)
from app.security import Passwords
from app.services import credentials
from app.services.mail import INSERT_MAIL, MailKind, mail_row
from app.transactions import Prepared, Statements, Transactions

USER_BY_EMAIL = Prepared(
    select(*USER_COLUMNS).where(User.email_normalized == bindparam("email")), row_type=Account
)
# The login's one read: the user, and whether a second factor stands between the password and
# a session (an EXISTS on the factor's primary key: a password-only login pays nothing more).
LOGIN_BY_EMAIL = Prepared(
    select(
        *USER_COLUMNS,
        exists()
        .where(TotpFactor.user_id == User.id, TotpFactor.confirmed_at.is_not(None))
        .label("second_factor"),
    ).where(User.email_normalized == bindparam("email"))
)
INSERT_USER = Prepared.insert(User.__table__)
USER_BY_ID = Prepared(select(*USER_COLUMNS).where(User.id == bindparam("id")), row_type=Account)
# Every mailed link of the user still unused: voided by a password change, reset or new address.
VOID_MAILED_TOKENS = Prepared(
    delete(OneTimeToken).where(
        OneTimeToken.user_id == bindparam("of_user_id"), OneTimeToken.used_at.is_(None)
    )
)


# The key to find or compare an address by, never raising (app/email_addresses.py).
normalize_email = lookup_key


async def create_user(
    db: Transactions,
    *,
    passwords: Passwords,
    name: str,
    email: str,
    password: str,
    is_admin: bool = False,
    email_verified: bool = False,
) -> Account:
    """Create an account; EmailTaken when the address is registered in any letter case.

    An unverified account gets a verification mail, queued in the same transaction.
    """
    # Hash before touching the database: no connection is held during the slow part.
    password_hash = await passwords.hash(password)
    account = Account(
        id=uuid7(),
        name=name,
        email=email,
        email_normalized=email_key(email),
        password_hash=password_hash,
        is_active=True,
        is_admin=is_admin,
        created_at=utcnow(),
        credentials_version=0,
        email_verified=email_verified,
    )
    verification = mail_row(
        user_id=account.id,
        kind=MailKind.EMAIL_VERIFICATION,
        recipient=email,
        now=account.created_at,
    )

    def insert_user(statements: Statements) -> None:
        statements.execute(INSERT_USER, account._asdict())
        if not email_verified:
            statements.execute(INSERT_MAIL, verification)

    try:
        await db.write(insert_user)
    except IntegrityError:
        # The unique index decides races between concurrent signups of one address.
        raise EmailTaken(email) from None
    return account


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_email(db: Transactions, email: str) -> Account | None:
    """The user with this address under `email_key`; None for an unknown or invalid address
    (looked up all the same, under a key no account has: it costs what a real lookup costs)."""
    params = {"email": lookup_key(email)}

    def find(statements: Statements) -> Account | None:
        account: Account | None = statements.execute(USER_BY_EMAIL, params).one_or_none()
        return account

    return await db.read(find)


@dataclass(frozen=True, slots=True)
class VerifiedLogin:
    """What a password check proved, for `tokens.start_login` to open a session on."""

    account: Account  # the snapshot the password was verified against
    rehash: str | None  # a hash of the same password with today's parameters, to store
    second_factor: bool  # a TOTP factor is on: no session before the second step


async def authenticate(
    db: Transactions,
    *,
    passwords: Passwords,
    email: str,
    password: str,
    require_verified: bool = False,
) -> VerifiedLogin:
    """The active user with this email and password, else InvalidCredentials.

    Unknown email, wrong password and inactive account take the same path and time: a hash is
    verified in every case. No connection is held during the hash, so what this returns is a
    snapshot: open the session with `tokens.start_login`, which is conditional on it.
    """
    # A point read: on SQLite it runs on the event loop, with no hop to the reader thread.
    found = await db.point_read_row(LOGIN_BY_EMAIL, {"email": lookup_key(email)})
    row = Account(*found[:-1]) if found is not None else None
    second_factor = found is not None and bool(found.second_factor)
    matches, new_hash = await passwords.verify_and_update(
        password, row.password_hash if row is not None else None
    )
    if row is None:
        raise InvalidCredentials("unknown_email")
    if not matches:
        raise InvalidCredentials("wrong_password", row.id)
    if not row.is_active:
        raise InvalidCredentials("inactive", row.id)
    if require_verified and not row.email_verified:
        # Only now, with the password known to be right: a wrong one keeps the generic answer.
        raise EmailNotVerified(row.id)
    return VerifiedLogin(account=row, rehash=new_hash, second_factor=second_factor)


class UserRow(NamedTuple):
    """What GET /users shows of a user: UserOut's fields, in its order."""

    id: uuid.UUID
    name: str
    email: str
    email_verified: bool
    is_active: bool
    is_admin: bool
    created_at: dt.datetime


_PAGE_COLUMNS = tuple(User.__table__.columns[field] for field in UserRow._fields)
# One page plus one row, to know whether another page follows. The first page and the pages
# after a cursor are two statements, so that each is compiled once and stays an index range scan.
FIRST_PAGE = Prepared(
    select(*_PAGE_COLUMNS).order_by(User.id).limit(bindparam("limit")), row_type=UserRow
)
PAGE_AFTER = Prepared(
    select(*_PAGE_COLUMNS)
    .where(User.id > bindparam("after"))
    .order_by(User.id)
    .limit(bindparam("limit")),
    row_type=UserRow,
)


async def list_users(
    db: Transactions, *, limit: int, after: uuid.UUID | None
) -> tuple[list[UserRow], uuid.UUID | None]:
    """One page, oldest first, and the id to continue after (None on the last page).

    Keyset pagination on the time-ordered primary key: every page is an index range scan, so
    page 10,000 costs what page 1 costs, and rows inserted meanwhile never shift a page. One
    prepared statement on the reading connection: through the ORM session the 50 objects of a
    page cost more CPU than everything else in the request.
    """
    if after is None:
        params: dict[str, Any] = {"limit": limit + 1}
        prepared = FIRST_PAGE
    else:
        params = {"limit": limit + 1, "after": after}
        prepared = PAGE_AFTER

    def read_page(statements: Statements) -> list[UserRow]:
        rows: list[UserRow] = statements.execute(prepared, params).rows
        return rows

    rows = await db.read(read_page)
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


async def change_password(
    db: Transactions,
    *,
    passwords: Passwords,
    user: Account,
    current_password: str,
    new_password: str,
    now: dt.datetime,
) -> None:
    """Replace the password after checking the current one; ends every login of the user.

    WrongPassword when the current password is wrong, or when the password (or the account)
    changed after `user` was read: of concurrent changes from one current password, one wins.
    """
    if not await passwords.verify(current_password, user.password_hash):
        raise WrongPassword
    new_hash = await passwords.hash(new_password)

    notice = mail_row(
        user_id=user.id, kind=MailKind.PASSWORD_CHANGED, recipient=user.email, now=now
    )

    def replace(statements: Statements) -> bool:
        changed = credentials.change_credentials(
            statements,
            user_id=user.id,
            verified_version=user.credentials_version,
            values={"password_hash": new_hash},
            now=now,
        )
        if changed:
            # API.md: a password change voids every mailed link, and mails a notice.
            statements.execute(VOID_MAILED_TOKENS, {"of_user_id": user.id})
            statements.execute(INSERT_MAIL, notice)
        return changed

    if not await db.write(replace):
        raise WrongPassword


async def update_user(
    db: Transactions,
    *,
    user_id: uuid.UUID,
    acting_admin: Account,
    name: str | None,
    is_active: bool | None,
    is_admin: bool | None,
    now: dt.datetime,
) -> Account:
    """Apply an admin's changes; deactivating ends the user's logins at once, in the same
    transaction, and voids every login still being verified (app/services/credentials.py)."""
    if user_id == acting_admin.id and (is_active is False or is_admin is False):
        raise SelfLockout
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if is_admin is not None:
        changes["is_admin"] = is_admin
    if is_active:
        changes["is_active"] = True

    def apply(statements: Statements) -> Account | None:
        if is_active is False:
            credentials.change_credentials(
                statements,
                user_id=user_id,
                verified_version=None,
                values={"is_active": False},
                now=now,
            )
        if changes:
            statements.execute(
                _update_statement(tuple(sorted(changes))),
                {f"new_{name}": value for name, value in changes.items()} | {"of_user_id": user_id},
            )
        account: Account | None = statements.execute(USER_BY_ID, {"id": user_id}).one_or_none()
        return account

    updated = await db.write(apply)
    if updated is None:
        # Deleted between being looked up and being updated (found by the fault tests' mixed
        # load): the same answer as if it had gone a moment earlier.
        raise UserNotFound(user_id)
    return updated


_updates: dict[tuple[str, ...], Prepared] = {}


def _update_statement(columns: tuple[str, ...]) -> Prepared:
    prepared = _updates.get(columns)
    if prepared is None:
        prepared = _updates[columns] = Prepared(
            update(User)
            .where(User.id == bindparam("of_user_id"))
            .values({name: bindparam(f"new_{name}") for name in columns})
        )
    return prepared


async def rename_user(db: Transactions, *, user_id: uuid.UUID, name: str) -> Account:
    """Change the user's own name; UserNotFound if it was deleted meanwhile."""

    def rename(statements: Statements) -> Account | None:
        statements.execute(_update_statement(("name",)), {"new_name": name, "of_user_id": user_id})
        account: Account | None = statements.execute(USER_BY_ID, {"id": user_id}).one_or_none()
        return account

    renamed = await db.write(rename)
    if renamed is None:
        raise UserNotFound(user_id)
    return renamed


async def delete_user(session: AsyncSession, *, user_id: uuid.UUID) -> bool:
    """Delete the account; its logins, tokens and mail go with it (ON DELETE CASCADE).

    On PostgreSQL the rows are locked in the order the other writers lock them, so a deletion
    never deadlocks with them: the mail sender locks an outbox row and then, minting the mail's
    token, the users row (the foreign key's KEY SHARE); a credential change locks the users row
    and then the token families. So: the outbox rows, the users row, the families after it.
    """
    await session.execute(delete(OutboxMail).where(OutboxMail.user_id == user_id))
    result = await session.execute(delete(User).where(User.id == user_id))
    # Gone with the users row already; deleted explicitly too, so no session could outlive
    # its account where the foreign key were not enforced.
    await session.execute(delete(TokenFamily).where(TokenFamily.user_id == user_id))
    await session.commit()
    return result.rowcount > 0


async def ensure_admin(
    db: Transactions,
    *,
    passwords: Passwords,
    email: str,
    name: str | None,
    password: str | None,
) -> tuple[Account, bool]:
    """Make the user with this email an active admin, creating it (password required) if needed.

    Returns the user and whether it was created. An existing user keeps its password.
    """
    # The operator vouches for the address it typed: the admin needs no verification mail.
    changes: dict[str, Any] = {"is_admin": True, "is_active": True, "email_verified": True}
    if name:
        changes["name"] = name
    promote = Prepared(
        update(User)
        .where(User.email_normalized == email_key(email))
        .values(**changes)
        .returning(*USER_COLUMNS),
        row_type=Account,
    )

    def promote_existing(statements: Statements) -> Account | None:
        account: Account | None = statements.execute(promote).one_or_none()
        return account

    promoted = await db.write(promote_existing)
    if promoted is not None:
        return promoted, False
    if password is None:
        raise ValueError("a password is needed to create an admin")
    created = await create_user(
        db,
        passwords=passwords,
        name=name or email.split("@", 1)[0],
        email=email,
        password=password,
        is_admin=True,
        email_verified=True,
    )
    return created, True
