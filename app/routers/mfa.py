"""Second factor: enrol a TOTP authenticator, confirm it, remove it, renew recovery codes."""

from __future__ import annotations

import datetime as dt
import io
from enum import Enum
from typing import Any

import anyio
import segno
from fastapi import APIRouter, HTTPException, Request, status

from app.audit import AuditEvent, record
from app.deps import (
    AdminUser,
    CurrentSessionId,
    CurrentUser,
    PasswordsDep,
    TransactionsDep,
    UserByPath,
)
from app.errors import WrongPassword, too_many_attempts
from app.models import Account
from app.ratelimit import ClientAddress, Throttle, Throttled, ThrottleDep
from app.schemas import (
    ErrorOut,
    MfaStatusOut,
    RecoveryCodesOut,
    SecondFactorProof,
    TotpConfirmation,
    TotpEnrolmentCreate,
    TotpEnrolmentOut,
)
from app.security import SecondFactorUnavailable, TotpSecretBox, totp_secret_base32, totp_uri
from app.services import mfa

router = APIRouter()
TAGS: list[str | Enum] = ["second factor"]  # the admin route is under "admin"

AUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid, expired or revoked access token"},
}
THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorOut,
        "description": "Too many wrong passwords or codes; `Retry-After` gives the seconds to wait",
    },
}
UNAVAILABLE = "The second factor needs SECRET_KEY, which this deployment does not set"


def _box(request: Request) -> TotpSecretBox:
    box: TotpSecretBox = request.app.state.totp_box
    if not box.available:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, UNAVAILABLE)
    return box


def _now(request: Request) -> dt.datetime:
    now: dt.datetime = request.app.state.clock()
    return now


async def _count_guess(throttle: Throttle, user: Account, address: str) -> None:
    """Passwords and codes sent here are guesses like those at /token: the same counts."""
    try:
        await throttle.start_login(account=user.email, address=address)
    except Throttled as exc:
        record(AuditEvent.THROTTLED, user_id=user.id, reason=exc.key)
        raise too_many_attempts(exc.retry_after) from None


def _refused(user: Account, reason: str, detail: str, code: int = 400) -> HTTPException:
    record(AuditEvent.MFA_CHANGE_FAILED, user_id=user.id, reason=reason)
    return HTTPException(code, detail)


def _qr_svg(uri: str) -> str:
    buffer = io.BytesIO()
    # svgns: a standalone SVG document, so that it renders in <img src="data:image/svg+xml,...">.
    segno.make(uri, error="m").save(
        buffer, kind="svg", xmldecl=False, svgns=True, scale=4, nl=False
    )
    return buffer.getvalue().decode("ascii")


@router.get("/users/me/mfa", response_model=MfaStatusOut, responses=AUTHENTICATED, tags=TAGS)
async def read_my_mfa(user: CurrentUser, db: TransactionsDep) -> MfaStatusOut:
    """Whether your second factor is on, and how many unused recovery codes you have left."""
    status_ = await mfa.get_status(db, user_id=user.id)
    return MfaStatusOut(
        totp_enabled=status_.totp_enabled, recovery_codes_left=status_.recovery_codes_left
    )


@router.post(
    "/users/me/mfa/totp",
    status_code=status.HTTP_201_CREATED,
    response_model=TotpEnrolmentOut,
    responses={
        **AUTHENTICATED,
        400: {"model": ErrorOut, "description": "The current password is wrong"},
        409: {"model": ErrorOut, "description": "A second factor is already on"},
        **THROTTLED,
    },
    tags=TAGS,
)
async def enrol_totp(
    request: Request,
    body: TotpEnrolmentCreate,
    user: CurrentUser,
    db: TransactionsDep,
    passwords: PasswordsDep,
    throttle: ThrottleDep,
    address: ClientAddress,
) -> TotpEnrolmentOut:
    """Start adding an authenticator app: scan `qr_svg` (or type `secret`), then confirm with
    a code within 10 minutes. A new call replaces a pending enrolment."""
    box = _box(request)
    await _count_guess(throttle, user, address)
    try:
        secret = await mfa.begin_enrolment(
            db,
            passwords=passwords,
            box=box,
            user=user,
            current_password=body.current_password,
            now=_now(request),
        )
    except WrongPassword:
        raise _refused(user, "wrong_password", "Current password is wrong") from None
    except mfa.AlreadyEnabled:
        await throttle.login_succeeded(account=user.email, address=address)
        raise _refused(user, "already_enabled", "A second factor is already on", 409) from None
    await throttle.login_succeeded(account=user.email, address=address)
    record(AuditEvent.MFA_ENROLMENT_STARTED, user_id=user.id)
    uri = totp_uri(secret, account=user.email)
    return TotpEnrolmentOut(
        secret=totp_secret_base32(secret),
        otpauth_uri=uri,
        qr_svg=await anyio.to_thread.run_sync(_qr_svg, uri),  # pure Python: ~10 ms of CPU
    )


@router.post(
    "/users/me/mfa/totp/confirm",
    response_model=RecoveryCodesOut,
    responses={
        **AUTHENTICATED,
        400: {"model": ErrorOut, "description": "The code is wrong"},
        409: {"model": ErrorOut, "description": "No enrolment is pending (or it lapsed)"},
        **THROTTLED,
    },
    tags=TAGS,
)
async def confirm_totp(
    request: Request,
    body: TotpConfirmation,
    user: CurrentUser,
    current: CurrentSessionId,
    db: TransactionsDep,
    throttle: ThrottleDep,
    address: ClientAddress,
) -> RecoveryCodesOut:
    """Turn the second factor on with a first code from the app. Every other session of your
    account ends. The recovery codes in the answer are shown only this once."""
    box = _box(request)
    await _count_guess(throttle, user, address)
    try:
        codes = await mfa.confirm_enrolment(
            db,
            box=box,
            user_id=user.id,
            verified_version=user.credentials_version,
            code=body.code,
            current_session=current,
            now=_now(request),
        )
    except mfa.NothingPending:
        await throttle.login_succeeded(account=user.email, address=address)
        raise _refused(user, "nothing_pending", "No enrolment is pending", 409) from None
    except (mfa.WrongCode, SecondFactorUnavailable):
        raise _refused(user, "wrong_code", "The code is wrong") from None
    await throttle.login_succeeded(account=user.email, address=address)
    record(AuditEvent.MFA_ENABLED, user_id=user.id)
    return RecoveryCodesOut(recovery_codes=codes)


@router.delete(
    "/users/me/mfa/totp",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **AUTHENTICATED,
        400: {
            "model": ErrorOut,
            "description": "Wrong password or code, or no second factor to remove",
        },
        **THROTTLED,
    },
    tags=TAGS,
)
async def remove_totp(
    request: Request,
    body: SecondFactorProof,
    user: CurrentUser,
    db: TransactionsDep,
    passwords: PasswordsDep,
    throttle: ThrottleDep,
    address: ClientAddress,
) -> None:
    """Turn your second factor off, with your password and a code (from the app, or a
    recovery code). Your recovery codes stop working."""
    await _count_guess(throttle, user, address)
    try:
        await mfa.remove_totp(
            db,
            passwords=passwords,
            box=request.app.state.totp_box,
            user=user,
            current_password=body.current_password,
            code=body.code,
            now=_now(request),
        )
    except WrongPassword:
        raise _refused(user, "wrong_password", "Current password is wrong") from None
    except mfa.WrongCode:
        raise _refused(user, "wrong_code", "The code is wrong or was already used") from None
    except mfa.NoSecondFactor:
        raise _refused(user, "no_second_factor", "No second factor is on") from None
    await throttle.login_succeeded(account=user.email, address=address)
    record(AuditEvent.MFA_DISABLED, user_id=user.id, reason="self")


@router.post(
    "/users/me/mfa/recovery-codes",
    response_model=RecoveryCodesOut,
    responses={
        **AUTHENTICATED,
        400: {"model": ErrorOut, "description": "Wrong password or code"},
        409: {"model": ErrorOut, "description": "No second factor is on"},
        **THROTTLED,
    },
    tags=TAGS,
)
async def regenerate_recovery_codes(
    request: Request,
    body: SecondFactorProof,
    user: CurrentUser,
    db: TransactionsDep,
    passwords: PasswordsDep,
    throttle: ThrottleDep,
    address: ClientAddress,
) -> RecoveryCodesOut:
    """Ten new recovery codes, shown only now; the old ones stop working."""
    await _count_guess(throttle, user, address)
    try:
        codes = await mfa.regenerate_recovery_codes(
            db,
            passwords=passwords,
            box=request.app.state.totp_box,
            user=user,
            current_password=body.current_password,
            code=body.code,
            now=_now(request),
        )
    except WrongPassword:
        raise _refused(user, "wrong_password", "Current password is wrong") from None
    except mfa.WrongCode:
        raise _refused(user, "wrong_code", "The code is wrong or was already used") from None
    except mfa.NoSecondFactor:
        await throttle.login_succeeded(account=user.email, address=address)
        raise _refused(user, "no_second_factor", "No second factor is on", 409) from None
    await throttle.login_succeeded(account=user.email, address=address)
    record(AuditEvent.RECOVERY_CODES_REGENERATED, user_id=user.id)
    return RecoveryCodesOut(recovery_codes=codes)


@router.delete(
    "/users/{user_id}/mfa",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **AUTHENTICATED,
        403: {"model": ErrorOut, "description": "The caller is not an administrator"},
        404: {"model": ErrorOut, "description": "No user has this id"},
    },
    tags=["admin"],
)
async def remove_user_mfa(
    request: Request, admin: AdminUser, user: UserByPath, db: TransactionsDep
) -> None:
    """Remove a user's second factor (a lost device): its recovery codes go, and every
    session of the user ends. The user logs in with the password alone, and may enrol again."""
    user_id = user.id
    await mfa.remove_by_admin(db, user_id=user_id, now=_now(request))
    record(AuditEvent.MFA_DISABLED, user_id=user_id, reason="admin", actor_id=admin.id)
