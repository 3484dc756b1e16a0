"""Logins and their tokens: issuing, rotation with reuse detection, revocation, cleanup."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidCredentials, InvalidRefreshToken
from app.lookups import TokenUserLookup
from app.models import (
    MfaToken,
    OneTimeToken,
    OutboxMail,
    RefreshToken,
    TokenFamily,
    TotpFactor,
    User,
)
from app.security import AccessTokens, InvalidToken, hash_refresh_token, new_refresh_token
from app.services import credentials
from app.transactions import Prepared, Statements, Transactions

# RFC 8176 §2 method values of a login, as access tokens carry them in `amr`.
PASSWORD_ONLY = ("pwd",)
PASSWORD_AND_OTP = ("pwd", "otp", "mfa")
PASSWORD_AND_RECOVERY_CODE = ("pwd", "mfa")

# How much of a login request's User-Agent a session keeps (API.md, Sessions).
USER_AGENT_MAX_LENGTH = 256


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str
    user_id: uuid.UUID
    family_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class LoginContext:
    """Where a login comes from and how it was proven: what its session shows and its tokens carry."""

    ip: str | None
    user_agent: str | None
    amr: tuple[str, ...] = PASSWORD_ONLY


INSERT_REFRESH_TOKEN = Prepared.insert(RefreshToken.__table__)

# Everything a rotation decides on, found by the presented token's hash.
REFRESH_TOKEN_STATE = Prepared(
    select(
        RefreshToken.id,
        RefreshToken.family_id,
        RefreshToken.expires_at,
        RefreshToken.used_at,
        TokenFamily.revoked_at,
        TokenFamily.user_id,
        TokenFamily.amr,
        TokenFamily.auth_time,
        User.is_active,
    )
    .join(TokenFamily, RefreshToken.family_id == TokenFamily.id)
    .join(User, TokenFamily.user_id == User.id)
    .where(RefreshToken.token_hash == bindparam("token_hash"))
)
SPEND_REFRESH_TOKEN = Prepared(
    update(RefreshToken)
    .where(RefreshToken.id == bindparam("token_id"), RefreshToken.used_at.is_(None))
    .values(used_at=bindparam("now"))
)
# Conditional on the family still standing: on PostgreSQL the UPDATE waits for a concurrent
# revocation of the family to commit and then finds it revoked (app/services/credentials.py).
EXTEND_FAMILY = Prepared(
    update(TokenFamily)
    .where(TokenFamily.id == bindparam("family_id"), TokenFamily.revoked_at.is_(None))
    .values(expires_at=bindparam("new_expiry"), last_used_at=bindparam("now"))
)
REVOKE_FAMILY_STATEMENT = (
    update(TokenFamily)
    .where(TokenFamily.id == bindparam("family_id"), TokenFamily.revoked_at.is_(None))
    .values(revoked_at=bindparam("now"))
)
REVOKE_FAMILY = Prepared(REVOKE_FAMILY_STATEMENT)

# How long a delivered or abandoned mail's outbox row is kept, for the operator to look into.
OUTBOX_KEEP = dt.timedelta(days=7)

REUSED = "Refresh token has already been used; the login has been revoked"

# What introspection says of a refresh token: the rotation's own conditions, and its times.
REFRESH_TOKEN_INTROSPECTION = Prepared(
    select(
        RefreshToken.id,
        RefreshToken.created_at,
        RefreshToken.expires_at,
        TokenFamily.id.label("family_id"),
        TokenFamily.user_id,
        TokenFamily.amr,
    )
    .join(TokenFamily, RefreshToken.family_id == TokenFamily.id)
    .join(User, TokenFamily.user_id == User.id)
    .where(
        RefreshToken.token_hash == bindparam("token_hash"),
        RefreshToken.used_at.is_(None),
        RefreshToken.expires_at > bindparam("now"),
        TokenFamily.revoked_at.is_(None),
        User.is_active.is_(True),
    )
)


def family_row(
    *,
    family_id: uuid.UUID,
    user_id: uuid.UUID,
    context: LoginContext,
    now: dt.datetime,
    expires_at: dt.datetime,
) -> dict[str, object]:
    """The token_families row of a login opened now: every column, for `credentials.open_family`."""
    user_agent = context.user_agent
    return {
        "id": family_id,
        "user_id": user_id,
        "created_at": now,
        "expires_at": expires_at,
        "revoked_at": None,
        "ip": context.ip,
        "user_agent": user_agent[:USER_AGENT_MAX_LENGTH] if user_agent is not None else None,
        "amr": " ".join(context.amr),
        "auth_time": now,
        "last_used_at": now,
    }


@dataclass(frozen=True, slots=True)
class NewLogin:
    """The rows that open a login, made before its transaction, and the tokens to hand out."""

    family: dict[str, object]
    first_token: dict[str, object]
    refresh_token: str
    user_id: uuid.UUID
    family_id: uuid.UUID
    amr: tuple[str, ...]
    now: dt.datetime

    @classmethod
    def make(
        cls,
        *,
        user_id: uuid.UUID,
        context: LoginContext,
        refresh_ttl: dt.timedelta,
        now: dt.datetime,
    ) -> NewLogin:
        family_id = uuid.uuid4()
        expires_at = now + refresh_ttl
        refresh_token = new_refresh_token()
        return cls(
            family=family_row(
                family_id=family_id,
                user_id=user_id,
                context=context,
                now=now,
                expires_at=expires_at,
            ),
            first_token=_refresh_token_row(
                refresh_token, family_id, now=now, expires_at=expires_at
            ),
            refresh_token=refresh_token,
            user_id=user_id,
            family_id=family_id,
            amr=context.amr,
            now=now,
        )

    def open(self, statements: Statements, *, verified_version: int) -> bool:
        """Inside a unit of work: write the login's family and its first refresh token, if the
        user is still active with the credentials verified at `verified_version`; else False
        and nothing written (app/services/credentials.py)."""
        if not credentials.open_family(
            statements, family=self.family, verified_version=verified_version
        ):
            return False
        statements.execute(INSERT_REFRESH_TOKEN, self.first_token)
        return True

    def issue(self, access_tokens: AccessTokens) -> IssuedTokens:
        return _issued(
            access_tokens,
            self.refresh_token,
            user_id=self.user_id,
            family_id=self.family_id,
            amr=self.amr,
            auth_time=self.now,
            now=self.now,
        )


async def start_login(
    db: Transactions,
    *,
    user_id: uuid.UUID,
    verified_version: int,
    access_tokens: AccessTokens,
    refresh_ttl: dt.timedelta,
    context: LoginContext,
    now: dt.datetime,
    rehash: str | None = None,
) -> IssuedTokens:
    """Open a login for a user whose credentials were verified at `verified_version`.

    InvalidCredentials when the account changed since (new password, deactivated, deleted):
    see app/services/credentials.py. `rehash`, a stronger hash of the verified password, is
    stored in the same transaction, under the same condition.
    """
    login = NewLogin.make(user_id=user_id, context=context, refresh_ttl=refresh_ttl, now=now)

    def open_login(statements: Statements) -> bool:
        if not login.open(statements, verified_version=verified_version):
            return False
        if rehash is not None:
            credentials.store_rehash(
                statements, user_id=user_id, verified_version=verified_version, new_hash=rehash
            )
        return True

    if not await db.write(open_login):
        # Verified, then overtaken: to the client the same answer as wrong credentials.
        raise InvalidCredentials("credentials_changed", user_id)
    return login.issue(access_tokens)


def _refresh_token_row(
    refresh_token: str, family_id: uuid.UUID, *, now: dt.datetime, expires_at: dt.datetime
) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "family_id": family_id,
        "token_hash": hash_refresh_token(refresh_token),
        "created_at": now,
        "expires_at": expires_at,
        "used_at": None,
    }


def _issued(
    access_tokens: AccessTokens,
    refresh_token: str,
    *,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    amr: tuple[str, ...],
    auth_time: dt.datetime,
    now: dt.datetime,
) -> IssuedTokens:
    return IssuedTokens(
        access_token=access_tokens.issue(
            user_id=user_id, family_id=family_id, amr=amr, auth_time=auth_time, now=now
        ),
        expires_in=access_tokens.ttl_seconds,
        refresh_token=refresh_token,
        user_id=user_id,
        family_id=family_id,
    )


@dataclass(frozen=True, slots=True)
class _Rotation:
    """What a rotation's transaction decided: a renewed login, or why not."""

    user_id: uuid.UUID | None = None
    family_id: uuid.UUID | None = None
    amr: str = ""
    auth_time: dt.datetime | None = None
    refused: str | None = None
    reused_by: uuid.UUID | None = None  # set when the refusal is reuse: the login's user


async def rotate_refresh_token(
    db: Transactions,
    *,
    presented: str,
    access_tokens: AccessTokens,
    refresh_ttl: dt.timedelta,
    now: dt.datetime,
) -> IssuedTokens:
    """Spend a refresh token for a new pair. A token presented twice revokes its whole family."""
    token_hash = hash_refresh_token(presented)
    new_token = new_refresh_token()
    new_expiry = now + refresh_ttl

    def rotate(statements: Statements) -> _Rotation:
        row = statements.execute(REFRESH_TOKEN_STATE, {"token_hash": token_hash}).one_or_none()
        if row is None:
            return _Rotation(refused="Refresh token is invalid")
        if row.revoked_at is not None:
            return _Rotation(refused="Refresh token has been revoked")
        # The conditional UPDATE is the single point of truth: of any number of concurrent
        # requests with this token, exactly one sees a row change, on SQLite and PostgreSQL
        # alike. Losers, like a token spent earlier, count as the token presented twice.
        if row.used_at is None and row.expires_at > now and row.is_active:
            # The family first: it locks the family row, so a revocation that committed
            # since the read above is seen here, and one that comes later waits for us.
            extended = statements.execute(
                EXTEND_FAMILY, {"family_id": row.family_id, "new_expiry": new_expiry, "now": now}
            )
            if extended.rowcount != 1:
                return _Rotation(refused="Refresh token has been revoked")
            spent = statements.execute(SPEND_REFRESH_TOKEN, {"token_id": row.id, "now": now})
            if spent.rowcount == 1:
                statements.execute(
                    INSERT_REFRESH_TOKEN,
                    _refresh_token_row(new_token, row.family_id, now=now, expires_at=new_expiry),
                )
                return _Rotation(
                    user_id=row.user_id,
                    family_id=row.family_id,
                    amr=row.amr,
                    auth_time=row.auth_time,
                )
        elif row.used_at is None:
            if row.expires_at <= now:
                return _Rotation(refused="Refresh token has expired")
            return _Rotation(refused="Account is disabled")
        # RFC 9700 §4.14.2: a spent refresh token presented again means one of its two
        # holders is an attacker, and we cannot tell which, so every token of that login
        # dies. Committed with this transaction, before the refusal is answered.
        statements.execute(REVOKE_FAMILY, {"family_id": row.family_id, "now": now})
        return _Rotation(refused=REUSED, reused_by=row.user_id)

    outcome = await db.write(rotate)
    if outcome.refused is not None:
        raise InvalidRefreshToken(outcome.refused, reused_by=outcome.reused_by)
    assert outcome.user_id is not None and outcome.family_id is not None
    assert outcome.auth_time is not None
    # The new pair belongs to the same login: its amr and auth_time, not the refresh's.
    return _issued(
        access_tokens,
        new_token,
        user_id=outcome.user_id,
        family_id=outcome.family_id,
        amr=tuple(outcome.amr.split()),
        auth_time=outcome.auth_time,
        now=now,
    )


async def revoke_family(session: AsyncSession, *, family_id: uuid.UUID, now: dt.datetime) -> None:
    await session.execute(REVOKE_FAMILY_STATEMENT, {"family_id": family_id, "now": now})


async def revoke_refresh_token(
    session: AsyncSession, *, presented: str, now: dt.datetime
) -> uuid.UUID | None:
    """RFC 7009: end the login this refresh token belongs to; its user, or None if unknown."""
    row = (
        await session.execute(
            select(TokenFamily.id, TokenFamily.user_id)
            .join(RefreshToken, RefreshToken.family_id == TokenFamily.id)
            .where(RefreshToken.token_hash == hash_refresh_token(presented))
        )
    ).one_or_none()
    if row is not None:
        await revoke_family(session, family_id=row.id, now=now)
    await session.commit()
    return row.user_id if row is not None else None


async def revoke_all_families(
    session: AsyncSession, *, user_id: uuid.UUID, now: dt.datetime
) -> None:
    """End every login of the user in one statement; the caller commits."""
    await session.execute(
        update(TokenFamily)
        .where(TokenFamily.user_id == user_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def end_all_logins(session: AsyncSession, *, user_id: uuid.UUID, now: dt.datetime) -> None:
    """Logout: every refresh token and every access token issued so far stop working."""
    await revoke_all_families(session, user_id=user_id, now=now)
    await session.commit()


async def purge_expired(session: AsyncSession, *, now: dt.datetime) -> int:
    """Delete expired refresh tokens and ended logins; returns how many rows went."""
    tokens = await session.execute(delete(RefreshToken).where(RefreshToken.expires_at <= now))
    # Deleting a family takes its remaining (spent) refresh tokens with it.
    await session.execute(
        delete(RefreshToken).where(
            RefreshToken.family_id.in_(
                select(TokenFamily.id).where(
                    or_(TokenFamily.expires_at <= now, TokenFamily.revoked_at.is_not(None))
                )
            )
        )
    )
    families = await session.execute(
        delete(TokenFamily).where(
            or_(TokenFamily.expires_at <= now, TokenFamily.revoked_at.is_not(None))
        )
    )
    # Mailed one-time tokens once expired (spent ones stay until then: one answer for both),
    # and delivered or abandoned mail after a week, so the outbox keeps no address for long.
    one_time = await session.execute(delete(OneTimeToken).where(OneTimeToken.expires_at <= now))
    mails = await session.execute(
        delete(OutboxMail).where(
            or_(OutboxMail.sent_at <= now - OUTBOX_KEEP, OutboxMail.failed_at <= now - OUTBOX_KEEP)
        )
    )
    # Second steps never completed, and enrolments never confirmed.
    challenges = await session.execute(delete(MfaToken).where(MfaToken.expires_at <= now))
    pending = await session.execute(
        delete(TotpFactor).where(TotpFactor.confirmed_at.is_(None), TotpFactor.pending_until <= now)
    )
    await session.commit()
    return (
        tokens.rowcount
        + families.rowcount
        + one_time.rowcount
        + mails.rowcount
        + challenges.rowcount
        + pending.rowcount
    )


async def introspect_token(
    db: Transactions,
    *,
    presented: str,
    access_tokens: AccessTokens,
    lookup: TokenUserLookup,
    now: dt.datetime,
) -> dict[str, Any] | None:
    """RFC 7662 §2.2: the claims of a token that stands right now, or None for any other.

    An access token stands when the bearer check would accept it (signature, type, claims,
    then its login and user in the database); a refresh token when a rotation would spend it.
    Refresh tokens never contain a dot, so the token's form says which it is.
    """
    if presented.count(".") == 2:
        try:
            claims = access_tokens.decode(presented, now=now)
        except InvalidToken:
            return None
        if await lookup.find(user_id=claims.user_id, family_id=claims.family_id) is None:
            return None
        return _introspection(
            access_tokens,
            token_type="access_token",  # noqa: S106 - RFC 7662 token type
            user_id=claims.user_id,
            family_id=claims.family_id,
            issued_at=claims.issued_at,
            expires_at=claims.expires_at,
            jti=claims.jti,
            amr=claims.amr,
        )
    params = {"token_hash": hash_refresh_token(presented), "now": now}

    def find_refresh_token(statements: Statements) -> Any:
        return statements.execute(REFRESH_TOKEN_INTROSPECTION, params).one_or_none()

    row = await db.read(find_refresh_token)
    if row is None:
        return None
    return _introspection(
        access_tokens,
        token_type="refresh_token",  # noqa: S106 - RFC 7662 token type
        user_id=row.user_id,
        family_id=row.family_id,
        issued_at=int(row.created_at.timestamp()),
        expires_at=int(row.expires_at.timestamp()),
        jti=str(row.id),
        amr=tuple(row.amr.split()),
    )


def _introspection(
    access_tokens: AccessTokens,
    *,
    token_type: str,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    issued_at: int,
    expires_at: int,
    jti: str,
    amr: tuple[str, ...],
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "active": True,
        "token_type": token_type,
        "sub": str(user_id),
        "exp": expires_at,
        "iat": issued_at,
        "iss": access_tokens.issuer,
        "jti": jti,
        "amr": list(amr),
        "sid": str(family_id),
    }
    if access_tokens.audience is not None:
        answer["aud"] = access_tokens.audience
    return answer
