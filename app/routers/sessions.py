"""Sessions: see where you are logged in, and end one login without ending the others."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status

from app.audit import AuditEvent, record
from app.db import SessionDep, utcnow
from app.deps import AdminUser, CurrentSessionId, CurrentUser, UserByPath
from app.models import TokenFamily
from app.schemas import ErrorOut, SessionOut, SessionsOut
from app.services import sessions

router = APIRouter()

AUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid, expired or revoked access token"},
}
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    **AUTHENTICATED,
    403: {"model": ErrorOut, "description": "The caller is not an administrator"},
    404: {"model": ErrorOut, "description": "No user has this id"},
}


def _sessions_out(families: Sequence[TokenFamily], current: uuid.UUID | None) -> SessionsOut:
    return SessionsOut(
        sessions=[
            SessionOut(
                id=family.id,
                created_at=family.created_at,
                last_used_at=family.last_used_at,
                expires_at=family.expires_at,
                ip=family.ip,
                user_agent=family.user_agent,
                amr=family.amr.split(),
                current=family.id == current,
            )
            for family in families
        ]
    )


@router.get(
    "/users/me/sessions", response_model=SessionsOut, responses=AUTHENTICATED, tags=["sessions"]
)
async def list_my_sessions(
    user: CurrentUser, current: CurrentSessionId, session: SessionDep
) -> SessionsOut:
    """Where you are logged in: each live login, newest first. `current` marks this one."""
    families = await sessions.list_sessions(session, user_id=user.id, now=utcnow())
    return _sessions_out(families, current)


@router.delete(
    "/users/me/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **AUTHENTICATED,
        404: {"model": ErrorOut, "description": "You have no live session with this id"},
    },
    tags=["sessions"],
)
async def end_my_session(
    user: CurrentUser,
    session: SessionDep,
    session_id: Annotated[uuid.UUID, Path(description="The session's id.")],
) -> None:
    """End one login: its access and refresh tokens stop working at once (this one too, if named)."""
    if not await sessions.end_session(
        session, user_id=user.id, session_id=session_id, now=utcnow()
    ):
        # Another user's session gets this answer too: ids are not confirmed to strangers.
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Session not found")
    record(AuditEvent.SESSION_ENDED, user_id=user.id, reason="self")


@router.delete(
    "/users/me/sessions",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=AUTHENTICATED,
    tags=["sessions"],
)
async def end_my_sessions(
    user: CurrentUser,
    current: CurrentSessionId,
    session: SessionDep,
    except_current: Annotated[
        bool, Query(description="Keep this session, end every other one.")
    ] = False,
) -> None:
    """End your sessions: all of them, or with `except_current=true` all but this one."""
    await sessions.end_sessions(
        session, user_id=user.id, now=utcnow(), keep=current if except_current else None
    )
    record(
        AuditEvent.SESSIONS_ENDED,
        user_id=user.id,
        reason="self_except_current" if except_current else "self",
    )


@router.get(
    "/users/{user_id}/sessions",
    response_model=SessionsOut,
    responses=ADMIN_ONLY,
    tags=["admin"],
)
async def list_user_sessions(
    admin: AdminUser, user: UserByPath, session: SessionDep
) -> SessionsOut:
    """A user's live sessions, newest first (`current` is always false here)."""
    families = await sessions.list_sessions(session, user_id=user.id, now=utcnow())
    return _sessions_out(families, None)


@router.delete(
    "/users/{user_id}/sessions",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ADMIN_ONLY,
    tags=["admin"],
)
async def end_user_sessions(admin: AdminUser, user: UserByPath, session: SessionDep) -> None:
    """End every session of a user: all its access and refresh tokens stop working at once."""
    user_id = user.id
    await sessions.end_sessions(session, user_id=user_id, now=utcnow())
    record(AuditEvent.SESSIONS_ENDED, user_id=user_id, reason="admin", actor_id=admin.id)
