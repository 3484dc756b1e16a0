"""The tables: users, their logins (token families) and refresh tokens, mail and mailed tokens."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from typing import NamedTuple

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, utcnow

UNIX_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
UUID7_COUNTER_BITS = 42  # RFC 9562 §6.2, method 1: rand_a and the top of rand_b


def uuid7(at: dt.datetime | None = None, *, sequence: int | None = None) -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 §5.7): 48 bits of Unix milliseconds, then random bits.

    Sorting users by id sorts them by creation time, so one primary-key index serves both
    lookups and keyset pagination. `at` makes the id of a row created then (an imported
    account keeps its place in the list); `sequence` fills the 42 bits after the time with a
    counter, so ids made for one millisecond sort in the order they were made.
    """
    if at is None:
        milliseconds = time.time_ns() // 1_000_000
    else:
        milliseconds = (at - UNIX_EPOCH) // dt.timedelta(milliseconds=1)
        if not 0 <= milliseconds < 1 << 48:
            raise ValueError("a time-ordered id needs a time between 1970 and 10889")
    if sequence is None:
        value = milliseconds << 80 | int.from_bytes(os.urandom(10))
    else:
        if not 0 <= sequence < 1 << UUID7_COUNTER_BITS:
            raise ValueError("sequence out of range")
        value = (
            milliseconds << 80
            | (sequence >> 30) << 64
            | (sequence & (1 << 30) - 1) << 32
            | int.from_bytes(os.urandom(4))
        )
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return uuid.UUID(int=value)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(320))
    # The email lower-cased in Python (SQLite's lower() only folds ASCII), so that uniqueness
    # ignores letter case identically on every database.
    email_normalized: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Moves on at every event that must end logins and void decisions taken before it (a new
    # password, a deactivation, a second factor enrolled): see app/services/credentials.py.
    credentials_version: Mapped[int] = mapped_column(Integer, server_default="0")
    # Set when the user proves it reads mail at `email`: a verification or reset link used.
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    token_families: Mapped[list[TokenFamily]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )


# Every column of a user, in table order: what queries outside the ORM select.
USER_COLUMNS = tuple(User.__table__.columns)


class Account(NamedTuple):
    """A user row as the hot paths read it (app.transactions): a snapshot, not a model.

    The bearer check, login and signup hand these around: building one costs a microsecond,
    an ORM instance twenty, and a snapshot cannot be written back by accident. Routes that
    change a user load the model through a session instead.
    """

    id: uuid.UUID
    name: str
    email: str
    email_normalized: str
    password_hash: str
    is_active: bool
    is_admin: bool
    created_at: dt.datetime
    credentials_version: int
    email_verified: bool


class TokenFamily(Base):
    """One login: every refresh and access token descended from one password grant.

    Access tokens name their family in the `sid` claim and are accepted only while the family
    exists and is not revoked, so ending a login (logout, reuse detection, revocation) is one
    UPDATE, and there is no per-token deny list.
    """

    __tablename__ = "token_families"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Moves forward at each rotation: the family lives as long as its newest tokens.
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # What GET /users/me/sessions shows of the login. `ip` is the client address as the login
    # throttle keys it (an IPv6 client by its /64); `user_agent` is cut to 256 characters.
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(256), default=None)
    # RFC 8176 method values, space-separated ("pwd", "pwd otp mfa", "pwd mfa"), and when the
    # login happened: every access token of the login carries them, refreshed ones included.
    amr: Mapped[str] = mapped_column(String(32), default="pwd")
    auth_time: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Moves at each refresh.
    last_used_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="token_families", lazy="raise")
    refresh_tokens: Mapped[list[RefreshToken]] = relationship(
        back_populates="family", cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    family_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("token_families.id", ondelete="CASCADE"), index=True
    )
    # SHA-256 of the token: the token itself has 256 random bits, so a fast hash is enough,
    # and a database leak yields nothing that can be presented.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)

    family: Mapped[TokenFamily] = relationship(back_populates="refresh_tokens", lazy="raise")

    __table_args__ = (Index("ix_refresh_tokens_expires_at", "expires_at"),)


class OutboxMail(Base):
    """A mail to send: written in the transaction of the request that wants it sent.

    The sender (app/services/mail.py) claims a due row by setting `claimed_until`, composes the
    message (minting its one-time token only then), sends it, and records `sent_at`, or the
    error and the next attempt's `due_at`, or `failed_at` once retries run out.
    """

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # What the mail is for: one of app.services.mail.MailKind.
    kind: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # The last attempt's outcome: the SMTP server's reply or the connection error, never the
    # message (it holds a link with a token).
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)

    # The sender's query: pending rows by due time.
    __table_args__ = (Index("ix_outbox_pending", "sent_at", "failed_at", "due_at"),)


class OneTimeToken(Base):
    """A token sent by mail (password reset, address verification or change), stored hashed.

    Spent by one conditional UPDATE (used_at IS NULL AND expires_at > now); bound to one user,
    one purpose and the address it was sent to.
    """

    __tablename__ = "one_time_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(32))
    email: Mapped[str] = mapped_column(String(320))
    # SHA-256 of the token's 256 random bits: a database leak yields nothing to present.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # The user's credentials_version when the token was minted: a reset link dies with any
    # later credential change (app/services/credentials.py).
    credentials_version: Mapped[int] = mapped_column(Integer)


class TotpFactor(Base):
    """A user's TOTP authenticator: pending (for 10 minutes) until a first code confirms it.

    The secret is stored sealed (app.security.TotpSecretBox), never in clear. `last_step` is the
    newest 30-second step accepted: a code is taken only for a later step, in one conditional
    UPDATE, so each step is accepted at most once per user (RFC 6238 §5.2).
    """

    __tablename__ = "totp_factors"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret_encrypted: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set while pending: when the enrolment lapses. None once confirmed.
    pending_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)


class RecoveryCode(Base):
    """One single-use recovery code, stored only as a hash (app.security.hash_recovery_code)."""

    __tablename__ = "recovery_codes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)


class MfaToken(Base):
    """The proof of a right password that waits for its second factor at /token.

    Stored as a SHA-256 hash; it lives 5 minutes, is spent by its success, and each attempt
    takes one of its 5 tries before its code is checked, so parallel guesses cannot exceed 5.
    """

    __tablename__ = "mfa_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    spent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # The user's credentials_version when the password was verified: the session the second
    # step opens is conditional on it (app/services/credentials.py), so a password change or
    # deactivation in the meantime voids the token.
    credentials_version: Mapped[int] = mapped_column(Integer)
