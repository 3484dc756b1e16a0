"""Logins and their tokens: issuing, rotation with reuse detection, revocation, cleanup."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidCredentials, InvalidRefreshToken
from app.models import RefreshToken, TokenFamily, User
from app.security import AccessTokens, hash_refresh_token, new_refresh_token


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str
    user_id: uuid.UUID
    family_id: uuid.UUID


async def start_login(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    access_tokens: AccessTokens,
    refresh_ttl: dt.timedelta,
    now: dt.datetime,
) -> IssuedTokens:
    """Open a new token family for a successful password grant and issue its first pair."""
    family = TokenFamily(
        id=uuid.uuid4(), user_id=user_id, created_at=now, expires_at=now + refresh_ttl
    )
    session.add(family)
    issued = _issue_pair(session, family=family, access_tokens=access_tokens, now=now)
    try:
        await session.commit()
    except IntegrityError:
        # The account was deleted while its password was being checked (no connection is
        # held across the hash): to the client, an unknown email. Found by the fault tests.
        await session.rollback()
        raise InvalidCredentials("unknown_email", user_id) from None
    return issued


def _issue_pair(
    session: AsyncSession, *, family: TokenFamily, access_tokens: AccessTokens, now: dt.datetime
) -> IssuedTokens:
    refresh_token = new_refresh_token()
    session.add(
        RefreshToken(
            family_id=family.id,
            token_hash=hash_refresh_token(refresh_token),
            created_at=now,
            expires_at=family.expires_at,
        )
    )
    return IssuedTokens(
        access_token=access_tokens.issue(user_id=family.user_id, family_id=family.id, now=now),
        expires_in=access_tokens.ttl_seconds,
        refresh_token=refresh_token,
        user_id=family.user_id,
        family_id=family.id,
    )


async def rotate_refresh_token(
    session: AsyncSession,
    *,
    presented: str,
    access_tokens: AccessTokens,
    refresh_ttl: dt.timedelta,
    now: dt.datetime,
) -> IssuedTokens:
    """Spend a refresh token for a new pair. A token presented twice revokes its whole family."""
    row = (
        await session.execute(
            select(
                RefreshToken.id,
                RefreshToken.family_id,
                RefreshToken.expires_at,
                RefreshToken.used_at,
                TokenFamily.revoked_at,
                TokenFamily.user_id,
                User.is_active,
            )
            .join(TokenFamily, RefreshToken.family_id == TokenFamily.id)
            .join(User, TokenFamily.user_id == User.id)
            .where(RefreshToken.token_hash == hash_refresh_token(presented))
        )
    ).one_or_none()
    if row is None:
        await session.commit()
        raise InvalidRefreshToken("Refresh token is invalid")
    if row.revoked_at is not None:
        await session.commit()
        raise InvalidRefreshToken("Refresh token has been revoked")
    if row.used_at is not None:
        await _revoke_for_reuse(session, family_id=row.family_id, user_id=row.user_id, now=now)
    if row.expires_at <= now:
        await session.commit()
        raise InvalidRefreshToken("Refresh token has expired")
    if not row.is_active:
        await session.commit()
        raise InvalidRefreshToken("Account is disabled")

    # The conditional UPDATE is the single point of truth: of any number of concurrent
    # requests with this token, exactly one sees a row change, on SQLite and PostgreSQL alike.
    spent = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:
        await session.rollback()
        # Another request spent it a moment ago: to us that is the same token presented twice.
        await _revoke_for_reuse(session, family_id=row.family_id, user_id=row.user_id, now=now)

    new_expiry = now + refresh_ttl
    await session.execute(
        update(TokenFamily).where(TokenFamily.id == row.family_id).values(expires_at=new_expiry)
    )
    family = TokenFamily(id=row.family_id, user_id=row.user_id, expires_at=new_expiry)
    issued = _issue_pair(session, family=family, access_tokens=access_tokens, now=now)
    await session.commit()
    return issued


async def _revoke_for_reuse(
    session: AsyncSession, *, family_id: uuid.UUID, user_id: uuid.UUID, now: dt.datetime
) -> None:
    # RFC 9700 §4.14.2: a spent refresh token presented again means one of its two holders
    # is an attacker, and we cannot tell which, so every token of that login dies.
    await revoke_family(session, family_id=family_id, now=now)
    await session.commit()
    raise InvalidRefreshToken(
        "Refresh token has already been used; the login has been revoked", reused_by=user_id
    )


async def revoke_family(session: AsyncSession, *, family_id: uuid.UUID, now: dt.datetime) -> None:
    await session.execute(
        update(TokenFamily)
        .where(TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=now)
    )


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
    await session.commit()
    return tokens.rowcount + families.rowcount
