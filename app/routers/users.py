"""Accounts: signup, the current user, the user list and admin changes."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status

from app.db import SessionDep, utcnow
from app.deps import AdminUser, CurrentUser, PasswordsDep, UserByPath
from app.errors import EmailTaken, SelfLockout, WrongPassword
from app.models import User
from app.schemas import ErrorOut, PasswordChange, UserCreate, UserOut, UserPage, UserUpdate
from app.services import users

router = APIRouter()

AUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid, expired or revoked access token"},
}
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    **AUTHENTICATED,
    403: {"model": ErrorOut, "description": "The caller is not an administrator"},
    404: {"model": ErrorOut, "description": "No user has this id"},
}


def encode_cursor(after: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(after.bytes).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> uuid.UUID:
    """The id a cursor continues after; a 422 naming the parameter for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"==")
        if len(cursor) != 22 or len(raw) != 16:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["query", "cursor"], "msg": "Invalid cursor", "type": "value_error"}],
        ) from None
    return uuid.UUID(bytes=raw)


@router.post(
    "/signup",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses={
        201: {
            "headers": {"Location": {"description": "`/users/{id}`", "schema": {"type": "string"}}}
        },
        409: {"model": ErrorOut, "description": "The email is already registered"},
    },
    tags=["accounts"],
)
async def signup(
    body: UserCreate, session: SessionDep, passwords: PasswordsDep, response: Response
) -> User:
    """Create an account. An email can be registered once, whatever its letter case."""
    try:
        user = await users.create_user(session, passwords=passwords, **body.model_dump())
    except EmailTaken:
        raise HTTPException(status.HTTP_409_CONFLICT, "Email already registered") from None
    response.headers["Location"] = f"/users/{user.id}"
    return user


@router.get("/users", response_model=UserPage, responses=AUTHENTICATED, tags=["users"])
async def list_users(
    _: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Users per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=64, description="`next_cursor` from the previous page."),
    ] = None,
) -> UserPage:
    """List users, oldest first. Follow `next_cursor` until it is null to see everyone."""
    after = decode_cursor(cursor) if cursor is not None else None
    page, next_after = await users.list_users(session, limit=limit, after=after)
    return UserPage(
        users=[UserOut.model_validate(user) for user in page],
        next_cursor=encode_cursor(next_after) if next_after else None,
    )


@router.get("/users/me", response_model=UserOut, responses=AUTHENTICATED, tags=["accounts"])
async def read_me(user: CurrentUser) -> User:
    """The account the access token belongs to."""
    return user


@router.post(
    "/users/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **AUTHENTICATED,
        400: {"model": ErrorOut, "description": "The current password is wrong"},
    },
    tags=["accounts"],
)
async def change_my_password(
    body: PasswordChange, user: CurrentUser, session: SessionDep, passwords: PasswordsDep
) -> None:
    """Change your password. Every session of the account ends, this one included: log in again."""
    try:
        await users.change_password(
            session,
            passwords=passwords,
            user=user,
            current_password=body.current_password,
            new_password=body.new_password,
            now=utcnow(),
        )
    except WrongPassword:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Current password is wrong") from None


@router.delete(
    "/users/me", status_code=status.HTTP_204_NO_CONTENT, responses=AUTHENTICATED, tags=["accounts"]
)
async def delete_me(user: CurrentUser, session: SessionDep) -> None:
    """Delete your account and every token issued to it."""
    await users.delete_user(session, user_id=user.id)


@router.get(
    "/users/{user_id}",
    response_model=UserOut,
    responses={**AUTHENTICATED, 404: {"model": ErrorOut, "description": "No user has this id"}},
    tags=["users"],
)
async def read_user(_: CurrentUser, user: UserByPath) -> User:
    """One user by id."""
    return user


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    responses={
        **ADMIN_ONLY,
        403: {
            "model": ErrorOut,
            "description": "Not an administrator, or an admin demoting or deactivating itself",
        },
    },
    tags=["admin"],
)
async def update_user(
    admin: AdminUser, user: UserByPath, body: UserUpdate, session: SessionDep
) -> User:
    """Rename, (de)activate or (un)make an admin. A deactivated user's tokens stop working at once."""
    try:
        return await users.update_user(
            session, user=user, acting_admin=admin, **body.model_dump(), now=utcnow()
        )
    except SelfLockout:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "Admins cannot remove their own admin right or deactivate themselves",
        ) from None


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **ADMIN_ONLY,
        403: {
            "model": ErrorOut,
            "description": "Not an administrator, or an admin deleting itself",
        },
    },
    tags=["admin"],
)
async def delete_user(admin: AdminUser, user: UserByPath, session: SessionDep) -> None:
    """Delete a user and every token issued to it."""
    if user.id == admin.id:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "Admins cannot delete themselves; use DELETE /users/me"
        )
    await users.delete_user(session, user_id=user.id)
