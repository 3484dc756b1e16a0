"""Password reset and address verification: the mailed links and their confirmations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status

from app.audit import AuditEvent, record
from app.db import utcnow
from app.deps import MailerDep, PasswordsDep, TransactionsDep
from app.errors import EmailTaken, InvalidOneTimeToken, too_many_attempts
from app.metrics import PASSWORD_RESET_REQUESTS
from app.models import Account
from app.ratelimit import ClientAddress, Throttled, ThrottleDep
from app.schemas import (
    AcceptedOut,
    EmailVerificationConfirm,
    EmailVerificationRequest,
    ErrorOut,
    PasswordResetConfirm,
    PasswordResetRequest,
    UserOut,
)
from app.services import recovery
from app.services.mail import MailKind

router = APIRouter(tags=["recovery"])

RESET_ACCEPTED = "If the address belongs to an active account, a reset link is on its way."
VERIFICATION_ACCEPTED = (
    "If the address belongs to an active account not yet verified, a link is on its way."
)
INVALID_TOKEN = "The link is invalid or has expired; ask for a new one"  # noqa: S105 - a message

INVALID_TOKEN_RESPONSE: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorOut,
        "description": "The token is invalid, expired, spent or for another purpose",
    },
}


async def _request_link(
    *,
    kind: MailKind,
    email: str,
    db: TransactionsDep,
    mailer: MailerDep,
    throttle: ThrottleDep,
    address: ClientAddress,
    event: AuditEvent,
) -> None:
    try:
        await throttle.start_recovery(address=address)
    except Throttled as exc:
        record(AuditEvent.THROTTLED, reason=exc.key)
        raise too_many_attempts(exc.retry_after) from None
    # Counted for every address alike, registered or not (see Throttle.mail_cooling_down).
    if await throttle.mail_cooling_down(purpose=str(kind), email=email):
        record(event, reason="cooldown")
        return
    outcome = await recovery.request_link(db, kind=kind, email=email, now=utcnow())
    if outcome.user_id is not None:
        # Not at once: the sender's work would then follow the answers for registered
        # addresses only, and slow the client's next request measurably.
        mailer.wake_soon()
    record(event, user_id=outcome.user_id, reason=outcome.reason)


@router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedOut,
)
async def request_password_reset(
    body: PasswordResetRequest,
    db: TransactionsDep,
    mailer: MailerDep,
    throttle: ThrottleDep,
    address: ClientAddress,
) -> AcceptedOut:
    """Mail a password-reset link to this address, if it belongs to an active account.

    The answer is the same whether or not it does, so it tells nobody which addresses are
    registered.
    """
    await _request_link(
        kind=MailKind.PASSWORD_RESET,
        email=body.email,
        db=db,
        mailer=mailer,
        throttle=throttle,
        address=address,
        event=AuditEvent.PASSWORD_RESET_REQUESTED,
    )
    PASSWORD_RESET_REQUESTS.inc()
    return AcceptedOut(detail=RESET_ACCEPTED)


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=INVALID_TOKEN_RESPONSE,
)
async def confirm_password_reset(
    body: PasswordResetConfirm, db: TransactionsDep, passwords: PasswordsDep, mailer: MailerDep
) -> None:
    """Set a new password with the token from a reset link. Every session of the account ends;
    log in with the new password."""
    try:
        user_id = await recovery.reset_password(
            db, passwords=passwords, token=body.token, new_password=body.new_password, now=utcnow()
        )
    except InvalidOneTimeToken:
        record(AuditEvent.PASSWORD_RESET_FAILED, reason="invalid_token")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, INVALID_TOKEN) from None
    mailer.wake()
    record(AuditEvent.PASSWORD_RESET_COMPLETED, user_id=user_id)


@router.post(
    "/email-verification",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedOut,
)
async def request_email_verification(
    body: EmailVerificationRequest,
    db: TransactionsDep,
    mailer: MailerDep,
    throttle: ThrottleDep,
    address: ClientAddress,
) -> AcceptedOut:
    """Mail a fresh verification link to this address, if it belongs to an active account that
    has not verified it yet. The answer is the same in every case."""
    await _request_link(
        kind=MailKind.EMAIL_VERIFICATION,
        email=body.email,
        db=db,
        mailer=mailer,
        throttle=throttle,
        address=address,
        event=AuditEvent.EMAIL_VERIFICATION_REQUESTED,
    )
    return AcceptedOut(detail=VERIFICATION_ACCEPTED)


@router.post(
    "/email-verification/confirm",
    response_model=UserOut,
    responses={
        **INVALID_TOKEN_RESPONSE,
        409: {"model": ErrorOut, "description": "The new address was registered meanwhile"},
    },
)
async def confirm_email_verification(
    body: EmailVerificationConfirm, db: TransactionsDep, mailer: MailerDep
) -> Account:
    """Confirm an address with the token from a verification or address-change link."""
    try:
        user, old_email = await recovery.confirm_address(db, token=body.token, now=utcnow())
    except InvalidOneTimeToken:
        record(AuditEvent.EMAIL_VERIFICATION_FAILED, reason="invalid_token")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, INVALID_TOKEN) from None
    except EmailTaken:
        record(AuditEvent.EMAIL_CHANGE_FAILED, reason="email_taken")
        raise HTTPException(status.HTTP_409_CONFLICT, "Email already registered") from None
    if old_email is not None:
        mailer.wake()
        record(AuditEvent.EMAIL_CHANGED, user_id=user.id)
    else:
        record(AuditEvent.EMAIL_VERIFIED, user_id=user.id)
    return user
