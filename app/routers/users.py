"""Accounts: signup, the current user, the user list and admin changes."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from app.audit import AuditEvent, record
from app.db import SessionDep, utcnow
from app.deps import (
    AdminUser,
    CurrentUser,
    MailerDep,
    PasswordsDep,
    TransactionsDep,
    UserByPath,
)
from app.errors import (
    EmailTaken,
    SelfLockout,
    UserNotFound,
    WrongPassword,
    too_many_attempts,
)
from app.metrics import SIGNUPS
from app.models import Account, User
from app.ratelimit import ClientAddress, Throttle, Throttled, ThrottleDep, client_address
from app.schemas import (
    AcceptedOut,
    EmailChange,
    ErrorOut,
    PasswordChange,
    ProfileUpdate,
    UserCreate,
    UserOut,
    UserPage,
    UserUpdate,
    user_json,
    user_page_json,
)
from app.security import Passwords
from app.services import recovery, users
from app.services.mail import Mailer, MailKind
from app.transactions import Transactions

router = APIRouter()

AUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid, expired or revoked access token"},
}
THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorOut,
        "description": "Too many attempts; `Retry-After` gives the seconds to wait",
    },
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
        **THROTTLED,
    },
    tags=["accounts"],
)
async def signup(body: UserCreate, request: Request, response: Response) -> Account:
    """Create an account. An email can be registered once, whatever its letter case.
    A link to verify the address is mailed to it."""
    # The services from app.state rather than as dependencies, as at /token: each costs
    # FastAPI's solver tens of microseconds, CPU that the signup's hash does not get (W4).
    state = request.app.state
    db: Transactions = state.transactions
    passwords: Passwords = state.passwords
    throttle: Throttle = state.throttle
    mailer: Mailer = state.mailer
    address = client_address(request)
    try:
        await throttle.start_signup(address=address)
    except Throttled as exc:
        record(AuditEvent.THROTTLED, reason=exc.key)
        raise too_many_attempts(exc.retry_after) from None
    try:
        user = await users.create_user(db, passwords=passwords, **body.model_dump())
    except EmailTaken:
        raise HTTPException(status.HTTP_409_CONFLICT, "Email already registered") from None
    mailer.wake()
    record(AuditEvent.SIGNUP, user_id=user.id)
    SIGNUPS.inc()
    response.headers["Location"] = f"/users/{user.id}"
    return user


@router.get("/users", response_model=UserPage, responses=AUTHENTICATED, tags=["users"])
async def list_users(
    _: CurrentUser,
    db: TransactionsDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Users per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=64, description="`next_cursor` from the previous page."),
    ] = None,
) -> Response:
    """List users, oldest first. Follow `next_cursor` until it is null to see everyone."""
    after = decode_cursor(cursor) if cursor is not None else None
    page, next_after = await users.list_users(db, limit=limit, after=after)
    # The body is built from the rows directly (see user_page_json); response_model above
    # still documents it as a UserPage.
    return Response(
        user_page_json(page, encode_cursor(next_after) if next_after else None),
        media_type="application/json",
    )


@router.get("/users/me", response_model=UserOut, responses=AUTHENTICATED, tags=["accounts"])
async def read_me(user: CurrentUser) -> Response:
    """The account the access token belongs to."""
    # The body is built from the row directly (see user_json); response_model above still
    # documents it as a UserOut.
    return Response(user_json(user), media_type="application/json")


@router.post(
    "/users/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **AUTHENTICATED,
        400: {"model": ErrorOut, "description": "The current password is wrong"},
        **THROTTLED,
    },
    tags=["accounts"],
)
async def change_my_password(
    body: PasswordChange,
    user: CurrentUser,
    db: TransactionsDep,
    passwords: PasswordsDep,
    throttle: ThrottleDep,
    address: ClientAddress,
    mailer: MailerDep,
) -> None:
    """Change your password. Every session of the account ends, this one included: log in again.
    A notice is mailed to the account's address."""
    # The same counts as /token: a stolen access token must not buy extra password guesses.
    try:
        await throttle.start_login(account=user.email, address=address)
    except Throttled as exc:
        record(AuditEvent.THROTTLED, user_id=user.id, reason=exc.key)
        raise too_many_attempts(exc.retry_after) from None
    try:
        await users.change_password(
            db,
            passwords=passwords,
            user=user,
            current_password=body.current_password,
            new_password=body.new_password,
            now=utcnow(),
        )
    except WrongPassword:
        record(AuditEvent.PASSWORD_CHANGE_FAILED, user_id=user.id, reason="wrong_password")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Current password is wrong") from None
    await throttle.login_succeeded(account=user.email, address=address)
    mailer.wake()
    record(AuditEvent.PASSWORD_CHANGED, user_id=user.id)


@router.patch(
    "/users/me",
    response_model=UserOut,
    responses={**AUTHENTICATED, 404: {"model": ErrorOut, "description": "The account is gone"}},
    tags=["accounts"],
)
async def update_me(body: ProfileUpdate, user: CurrentUser, db: TransactionsDep) -> Account:
    """Change your name."""
    try:
        updated = await users.rename_user(db, user_id=user.id, name=body.name)
    except UserNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found") from None
    record(AuditEvent.NAME_CHANGED, user_id=user.id)
    return updated


@router.post(
    "/users/me/email",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedOut,
    responses={
        **AUTHENTICATED,
        400: {"model": ErrorOut, "description": "The current password is wrong"},
        409: {"model": ErrorOut, "description": "The new address is already registered"},
        **THROTTLED,
    },
    tags=["accounts"],
)
async def change_my_email(
    body: EmailChange,
    user: CurrentUser,
    db: TransactionsDep,
    passwords: PasswordsDep,
    throttle: ThrottleDep,
    address: ClientAddress,
    mailer: MailerDep,
) -> AcceptedOut:
    """Change your address: a confirmation link goes to the new one, and the address changes
    when it is used (the old address then gets a notice). Sessions go on."""
    if users.normalize_email(body.new_email) == users.normalize_email(user.email):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["body", "new_email"],
                    "msg": "must differ from the current address",
                    "type": "value_error",
                }
            ],
        )
    # The same counts as /token: a stolen access token must not buy extra password guesses.
    try:
        await throttle.start_login(account=user.email, address=address)
    except Throttled as exc:
        record(AuditEvent.THROTTLED, user_id=user.id, reason=exc.key)
        raise too_many_attempts(exc.retry_after) from None
    if not await passwords.verify(body.current_password, user.password_hash):
        record(AuditEvent.EMAIL_CHANGE_FAILED, user_id=user.id, reason="wrong_password")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Current password is wrong")
    await throttle.login_succeeded(account=user.email, address=address)
    quiet = await throttle.mail_cooling_down(
        purpose=str(MailKind.EMAIL_CHANGE), email=body.new_email
    )
    try:
        await recovery.request_email_change(
            db, user=user, new_email=body.new_email, now=utcnow(), quiet=quiet
        )
    except EmailTaken:
        record(AuditEvent.EMAIL_CHANGE_FAILED, user_id=user.id, reason="email_taken")
        raise HTTPException(status.HTTP_409_CONFLICT, "Email already registered") from None
    if not quiet:
        mailer.wake()
    record(AuditEvent.EMAIL_CHANGE_REQUESTED, user_id=user.id, reason="cooldown" if quiet else None)
    return AcceptedOut(detail="A confirmation link is on its way to the new address.")


@router.delete(
    "/users/me", status_code=status.HTTP_204_NO_CONTENT, responses=AUTHENTICATED, tags=["accounts"]
)
async def delete_me(user: CurrentUser, session: SessionDep) -> None:
    """Delete your account and every token issued to it."""
    await users.delete_user(session, user_id=user.id)
    record(AuditEvent.USER_DELETED, user_id=user.id, reason="self")


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
    admin: AdminUser, user: UserByPath, body: UserUpdate, db: TransactionsDep
) -> Account:
    """Rename, (de)activate or (un)make an admin. A deactivated user's tokens stop working at once."""
    was_active, was_admin = user.is_active, user.is_admin
    try:
        updated = await users.update_user(
            db, user_id=user.id, acting_admin=admin, **body.model_dump(), now=utcnow()
        )
    except SelfLockout:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "Admins cannot remove their own admin right or deactivate themselves",
        ) from None
    except UserNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found") from None
    if updated.is_active != was_active:
        event = AuditEvent.USER_REACTIVATED if updated.is_active else AuditEvent.USER_DEACTIVATED
        record(event, user_id=updated.id, actor_id=admin.id)
    if updated.is_admin != was_admin:
        event = AuditEvent.ADMIN_GRANTED if updated.is_admin else AuditEvent.ADMIN_REVOKED
        record(event, user_id=updated.id, actor_id=admin.id)
    return updated


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
    record(AuditEvent.USER_DELETED, user_id=user.id, reason="admin", actor_id=admin.id)
