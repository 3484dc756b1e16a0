"""Every error shape in one place: domain exceptions, OAuth 2.0 errors, bearer challenges."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import HTTPException, status


class DomainError(Exception):
    """A rule of the service was broken; routers translate these into HTTP answers."""


class EmailTaken(DomainError):
    pass


class UserNotFound(DomainError):
    pass


class WrongPassword(DomainError):
    pass


# credentials_changed: verified, then overtaken by a password change or deactivation before
# the session could open (app/services/credentials.py).
LoginFailure = Literal["unknown_email", "wrong_password", "inactive", "credentials_changed"]


class InvalidCredentials(DomainError):
    """Unknown email, wrong password or inactive account: indistinguishable to the client.

    The reason and the user (when one matched) are for the audit log only.
    """

    def __init__(self, reason: LoginFailure, user_id: uuid.UUID | None = None) -> None:
        super().__init__(reason)
        self.reason: LoginFailure = reason
        self.user_id = user_id


class InvalidRefreshToken(DomainError):
    def __init__(self, description: str, *, reused_by: uuid.UUID | None = None) -> None:
        super().__init__(description)
        self.description = description
        # The user whose login was revoked because a spent token came back (for the audit log).
        self.reused_by = reused_by


class EmailNotVerified(DomainError):
    """The password was right, but REQUIRE_EMAIL_VERIFICATION holds the login back."""

    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__("email_not_verified")
        self.user_id = user_id


class InvalidOneTimeToken(DomainError):
    """A mailed token that is unknown, expired, spent, voided or for another purpose: one answer."""


class SelfLockout(DomainError):
    """An admin tried to demote, deactivate or delete itself through the admin routes."""


OAuthErrorCode = Literal[
    "invalid_request",
    "invalid_grant",
    "unsupported_grant_type",
    "invalid_client",
    "too_many_attempts",
]


class OAuthError(Exception):
    """RFC 6749 §5.2 error from a token endpoint; rendered as 400 with `Cache-Control: no-store`.

    Throttling is the one exception: 429 with `Retry-After`, in the same body shape.
    """

    def __init__(
        self,
        error: OAuthErrorCode,
        description: str,
        *,
        status_code: int = status.HTTP_400_BAD_REQUEST,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status_code = status_code
        self.headers = headers or {}


REVOKED_DESCRIPTION = "The access token was revoked"


def bearer_challenge(error: str | None = None, description: str | None = None) -> HTTPException:
    """A 401 carrying the RFC 6750 §3 challenge; pass "invalid_token" once a token was sent.

    The description goes both into the challenge's error_description and into `detail`, so a
    client reading either learns whether to log in again (expired, revoked) or fix its code
    (malformed). With no token at all, RFC 6750 §3.1 wants the bare challenge.
    """
    if error is None:
        challenge = "Bearer"
    elif description is None:
        challenge = f'Bearer error="{error}"'
    else:
        # RFC 6750 §3: the description may not hold a quote or a backslash; ours never do.
        challenge = f'Bearer error="{error}", error_description="{description}"'
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        description or "Not authenticated",
        headers={"WWW-Authenticate": challenge},
    )


def invalid_client() -> OAuthError:
    """RFC 6749 §5.2: client authentication failed; 401 with the Basic challenge (RFC 7617)."""
    return OAuthError(
        "invalid_client",
        "Client authentication failed",
        status_code=status.HTTP_401_UNAUTHORIZED,
        headers={"WWW-Authenticate": "Basic"},
    )


def too_many_attempts(retry_after: int) -> HTTPException:
    """A 429 for JSON endpoints; RFC 9110 §10.2.3's Retry-After says when to try again."""
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"Too many attempts; try again in {retry_after} seconds",
        headers={"Retry-After": str(retry_after)},
    )


def oauth_too_many_attempts(retry_after: int, *, what: str = "failed logins") -> OAuthError:
    """The token endpoint's 429, in RFC 6749 §5.2's body shape."""
    return OAuthError(
        "too_many_attempts",
        f"Too many {what}; try again in {retry_after} seconds",
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        headers={"Retry-After": str(retry_after)},
    )
