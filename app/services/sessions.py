"""Sessions: the logins (token families) a user can see and end one by one."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import TokenFamily


async def list_sessions(
    session: AsyncSession, *, user_id: uuid.UUID, now: dt.datetime
) -> Sequence[TokenFamily]:
    """The user's live logins (not ended, not expired), newest first."""
    families = (
        await session.scalars(
            select(TokenFamily)
            .where(
                TokenFamily.user_id == user_id,
                TokenFamily.revoked_at.is_(None),
                TokenFamily.expires_at > now,
            )
            .order_by(TokenFamily.created_at.desc(), TokenFamily.id.desc())
        )
    ).all()
    await session.commit()
    return families


async def end_session(
    session: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID, now: dt.datetime
) -> bool:
    """End one live login of this user; False when it has none by that id.

    The user's id is part of the condition, so another user's session is "not found", exactly
    like an id that names nothing.
    """
    result = await session.execute(
        update(TokenFamily)
        .where(
            TokenFamily.id == session_id,
            TokenFamily.user_id == user_id,
            TokenFamily.revoked_at.is_(None),
            TokenFamily.expires_at > now,
        )
        .values(revoked_at=now)
    )
    await session.commit()
    return result.rowcount == 1


async def end_sessions(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    now: dt.datetime,
    keep: uuid.UUID | None = None,
) -> int:
    """End every login of the user but `keep`; how many ended."""
    statement = update(TokenFamily).where(
        TokenFamily.user_id == user_id, TokenFamily.revoked_at.is_(None)
    )
    if keep is not None:
        statement = statement.where(TokenFamily.id != keep)
    result = await session.execute(statement.values(revoked_at=now))
    await session.commit()
    return result.rowcount
