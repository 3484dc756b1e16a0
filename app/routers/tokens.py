"""OAuth 2.0 endpoints: /token (password and refresh_token grants), /revoke, /logout, JWKS."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from app.audit import AuditEvent, record
from app.db import SessionDep, utcnow
from app.deps import AccessTokensDep, CurrentUser
from app.errors import (
    EmailNotVerified,
    InvalidCredentials,
    InvalidRefreshToken,
    OAuthError,
    oauth_too_many_attempts,
)
from app.forms import form_request_body, read_form
from app.login_padding import is_imported
from app.metrics import count_login, count_mfa_verification, count_refresh
from app.ratelimit import Throttle, Throttled, client_address
from app.schemas import (
    GRANT_TYPES,
    MFA_OTP_GRANT,
    MFA_RECOVERY_CODE_GRANT,
    ErrorOut,
    JwkSetOut,
    MfaRequiredOut,
    OAuthErrorOut,
    RevokeRequest,
    TokenRequest,
    TokenResponse,
    reject_unstorable,
)
from app.security import AccessTokens, InvalidToken, Passwords
from app.services import mfa, tokens, users
from app.services.tokens import PASSWORD_ONLY, IssuedTokens, LoginContext, NewLogin
from app.transactions import Transactions

router = APIRouter(tags=["tokens"])

# Longest password we will spend a hash on at login; the policy allows 128 characters.
MAX_LOGIN_PASSWORD_LENGTH = 1024
MAX_FIELD_LENGTH = 4096

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": OAuthErrorOut,
        "description": "RFC 6749 §5.2 error: invalid_request, invalid_grant or unsupported_grant_type",
    },
    403: {
        "model": MfaRequiredOut,
        "description": "`mfa_required`: the password was right and the account has a second "
        "factor. No tokens: post the `mfa_token` back with a code (one of the MFA grants) "
        "within 5 minutes",
        "headers": {"Cache-Control": {"description": "`no-store`", "schema": {"type": "string"}}},
    },
    429: {
        "model": OAuthErrorOut,
        "description": "Too many failed logins for this account or from this address; "
        "`Retry-After` gives the seconds to wait",
    },
}


def refresh_ttl(request: Request) -> dt.timedelta:
    return dt.timedelta(seconds=request.app.state.settings.refresh_token_ttl_seconds)


def login_context(
    request: Request, address: str, amr: tuple[str, ...] = PASSWORD_ONLY
) -> LoginContext:
    """What the session of a login opened by this request records: address, client, method."""
    user_agent = request.headers.get("user-agent")
    if user_agent is not None:
        # Header values arrive as Latin-1 text; control characters have no business in a
        # session list (and PostgreSQL cannot store NUL).
        user_agent = "".join(char for char in user_agent[:512] if char.isprintable()) or None
    return LoginContext(ip=address, user_agent=user_agent, amr=amr)


def required_field(form: dict[str, str], name: str) -> str:
    """A present, sane form field, or RFC 6749's invalid_request."""
    value = form.get(name)
    if value is None:
        raise OAuthError("invalid_request", f"The {name} parameter is required")
    if len(value) > MAX_FIELD_LENGTH:
        raise OAuthError("invalid_request", f"The {name} parameter is too long")
    try:
        reject_unstorable(value)
    except ValueError:
        raise OAuthError(
            "invalid_request", f"The {name} parameter has invalid characters"
        ) from None
    return value


@router.post(
    "/token",
    response_model=TokenResponse,
    responses=TOKEN_ERRORS,
    openapi_extra={"security": [], "requestBody": form_request_body(TokenRequest)},
)
async def issue_token(request: Request, response: Response) -> TokenResponse | JSONResponse:
    """Log in with email and password, or renew tokens with a refresh token (RFC 6749).

    If the account has a second factor, the password grant answers 403 `mfa_required` with an
    `mfa_token` instead of tokens: post it back with `grant_type=urn:passgate:params:oauth:grant-type:mfa-otp`
    and `otp=<code>` (or `...:mfa-recovery-code` and `recovery_code=<code>`) to get them.
    """
    # The services from app.state rather than as dependencies: each dependency costs FastAPI's
    # solver tens of microseconds, and every login's CPU is CPU its hash does not get (W3).
    state = request.app.state
    db: Transactions = state.transactions
    passwords: Passwords = state.passwords
    access_tokens: AccessTokens = state.access_tokens
    throttle: Throttle = state.throttle
    address = client_address(request)
    now: dt.datetime = state.clock()
    response.headers.update(NO_STORE)
    form = await read_form(request, TokenRequest.model_fields)
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "The grant_type parameter is required")
    if grant_type == "password":
        outcome = await _password_grant(
            request, form, db, passwords, access_tokens, throttle, address, now
        )
        if isinstance(outcome, JSONResponse):
            return outcome
        issued = outcome
    elif grant_type == "refresh_token":
        presented = required_field(form, "refresh_token")
        try:
            issued = await tokens.rotate_refresh_token(
                db,
                presented=presented,
                access_tokens=access_tokens,
                refresh_ttl=refresh_ttl(request),
                now=now,
            )
        except InvalidRefreshToken as exc:
            if exc.reused_by is not None:
                record(AuditEvent.REFRESH_REUSE_DETECTED, user_id=exc.reused_by)
            count_refresh("reuse_detected" if exc.reused_by is not None else "invalid")
            raise OAuthError("invalid_grant", exc.description) from None
        record(AuditEvent.TOKEN_REFRESHED, user_id=issued.user_id)
        count_refresh("success")
    elif grant_type in (MFA_OTP_GRANT, MFA_RECOVERY_CODE_GRANT):
        method: mfa.Method = "totp" if grant_type == MFA_OTP_GRANT else "recovery_code"
        issued = await _mfa_grant(request, form, db, access_tokens, throttle, address, method, now)
    else:
        raise OAuthError(
            "unsupported_grant_type", f"Supported grant types: {', '.join(GRANT_TYPES)}"
        )
    return TokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
    )


async def _password_grant(
    request: Request,
    form: dict[str, str],
    db: Transactions,
    passwords: Passwords,
    access_tokens: AccessTokens,
    throttle: Throttle,
    address: str,
    now: dt.datetime,
) -> IssuedTokens | JSONResponse:
    email = required_field(form, "username")
    secret = required_field(form, "password")
    # Counted before any hash is computed: a throttled guess costs a counter update.
    try:
        await throttle.start_login(account=email, address=address)
    except Throttled as exc:
        record(AuditEvent.THROTTLED, reason=exc.key)
        count_login("throttled")
        raise oauth_too_many_attempts(exc.retry_after) from None
    if len(secret) > MAX_LOGIN_PASSWORD_LENGTH:
        record(AuditEvent.LOGIN_FAILED, reason="password_too_long")
        count_login("invalid_credentials")
        raise OAuthError("invalid_grant", "Invalid email or password")
    try:
        verified = await users.authenticate(
            db,
            passwords=passwords,
            email=email,
            password=secret,
            require_verified=request.app.state.settings.require_email_verification,
        )
        user_id = verified.account.id
        version = verified.account.credentials_version
        if verified.second_factor:
            # The session the second step opens is conditional on this same verified state.
            mfa_token = await mfa.issue_mfa_token(
                db, user_id=user_id, verified_version=version, rehash=verified.rehash, now=now
            )
        else:
            issued = await tokens.start_login(
                db,
                user_id=user_id,
                verified_version=version,
                access_tokens=access_tokens,
                refresh_ttl=refresh_ttl(request),
                context=login_context(request, address),
                now=now,
                rehash=verified.rehash,
            )
            if verified.rehash is not None and is_imported(verified.account.password_hash):
                # One imported hash fewer: once none remain, failed logins stop waiting.
                passwords.padding.rehashed_imported()
    except InvalidCredentials as exc:
        record(AuditEvent.LOGIN_FAILED, user_id=exc.user_id, reason=exc.reason)
        count_login("invalid_credentials")
        raise OAuthError("invalid_grant", "Invalid email or password") from None
    except EmailNotVerified as exc:
        record(AuditEvent.LOGIN_FAILED, user_id=exc.user_id, reason="unverified")
        count_login("unverified")
        raise OAuthError("invalid_grant", "email address not verified") from None
    except IntegrityError:
        # The account was deleted while its password was being checked.
        record(AuditEvent.LOGIN_FAILED, reason="unknown_email")
        count_login("invalid_credentials")
        raise OAuthError("invalid_grant", "Invalid email or password") from None
    if verified.second_factor:
        # Not a failure, not yet a success: the wrong codes that may follow must add up.
        await throttle.password_step_passed(account=email, address=address)
        record(AuditEvent.MFA_REQUIRED, user_id=user_id)
        count_login("mfa_required")
        return JSONResponse(
            MfaRequiredOut(
                error="mfa_required",
                error_description="A second factor is required: post the mfa_token with a code",
                mfa_token=mfa_token,
                mfa_methods=["totp", "recovery_code"],
            ).model_dump(),
            status_code=status.HTTP_403_FORBIDDEN,
            headers=NO_STORE,
        )
    await throttle.login_succeeded(account=email, address=address)
    record(AuditEvent.LOGIN_SUCCEEDED, user_id=issued.user_id)
    count_login("success")
    return issued


async def _mfa_grant(
    request: Request,
    form: dict[str, str],
    db: Transactions,
    access_tokens: AccessTokens,
    throttle: Throttle,
    address: str,
    method: mfa.Method,
    now: dt.datetime,
) -> IssuedTokens:
    """The second step: an mfa_token and a TOTP or recovery code for the usual token pair."""
    presented = required_field(form, "mfa_token")
    code = required_field(form, "otp" if method == "totp" else "recovery_code")
    dead = "The mfa_token is invalid, expired, spent or out of tries: log in again"
    try:
        challenge = await mfa.take_attempt(db, presented=presented, now=now)
    except mfa.InvalidMfaToken:
        record(AuditEvent.MFA_FAILED, reason="invalid_mfa_token")
        count_mfa_verification(method, "invalid")
        raise OAuthError("invalid_grant", dead) from None
    # The same per-account and per-address counts as passwords: a code is a guess too.
    try:
        await throttle.start_login(account=challenge.email, address=address)
    except Throttled as exc:
        record(AuditEvent.THROTTLED, user_id=challenge.user_id, reason=exc.key)
        count_mfa_verification(method, "throttled")
        raise oauth_too_many_attempts(exc.retry_after) from None
    login = NewLogin.make(
        user_id=challenge.user_id,
        context=login_context(request, address, mfa.amr_of(method)),
        refresh_ttl=refresh_ttl(request),
        now=now,
    )
    try:
        await mfa.complete_login(
            db,
            box=request.app.state.totp_box,
            challenge=challenge,
            method=method,
            code=code,
            login=login,
        )
    except mfa.WrongCode:
        record(AuditEvent.MFA_FAILED, user_id=challenge.user_id, reason=f"wrong_{method}")
        count_mfa_verification(method, "invalid")
        raise OAuthError("invalid_grant", "The code is wrong, expired or already used") from None
    except mfa.InvalidMfaToken:
        record(AuditEvent.MFA_FAILED, user_id=challenge.user_id, reason="invalid_mfa_token")
        count_mfa_verification(method, "invalid")
        raise OAuthError("invalid_grant", dead) from None
    await throttle.login_succeeded(account=challenge.email, address=address)
    record(AuditEvent.LOGIN_SUCCEEDED, user_id=challenge.user_id, reason=method)
    count_mfa_verification(method, "success")
    return login.issue(access_tokens)


@router.post(
    "/revoke",
    status_code=status.HTTP_200_OK,
    responses={400: TOKEN_ERRORS[400]},  # not throttled: no 429
    response_class=Response,
    openapi_extra={"requestBody": form_request_body(RevokeRequest)},
)
async def revoke_token(
    request: Request, session: SessionDep, access_tokens: AccessTokensDep
) -> Response:
    """End the login a token belongs to (RFC 7009). Answers 200 whether or not the token was valid."""
    presented = required_field(await read_form(request, RevokeRequest.model_fields), "token")
    now = utcnow()
    try:
        claims = access_tokens.decode(presented, now=now)
    except InvalidToken:
        user_id = await tokens.revoke_refresh_token(session, presented=presented, now=now)
    else:
        await tokens.revoke_family(session, family_id=claims.family_id, now=now)
        await session.commit()
        user_id = claims.user_id
    record(AuditEvent.TOKEN_REVOKED, user_id=user_id)
    return Response(status_code=status.HTTP_200_OK, headers=NO_STORE)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={401: {"model": ErrorOut, "description": "Missing or invalid access token"}},
)
async def logout(user: CurrentUser, session: SessionDep) -> None:
    """End every session of your account: all refresh tokens and all access tokens issued so far."""
    await tokens.end_all_logins(session, user_id=user.id, now=utcnow())
    record(AuditEvent.LOGOUT, user_id=user.id)


@router.get("/.well-known/jwks.json", response_model=JwkSetOut, openapi_extra={"security": []})
async def jwks(request: Request) -> JSONResponse:
    """The public keys that verify access tokens (RFC 7517), for services that check tokens
    themselves: pick the key whose `kid` is in the token's header. Never holds a secret."""
    max_age = request.app.state.settings.jwks_max_age_seconds
    return JSONResponse(
        request.app.state.token_keys.jwks,
        headers={"Cache-Control": f"public, max-age={max_age}"},
    )
