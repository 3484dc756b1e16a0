"""Every error shape in one place: domain exceptions, OAuth 2.0 errors, bearer challenges."""

from __future__ import annotations

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


class InvalidCredentials(DomainError):
    """Unknown email, wrong password or inactive account: deliberately indistinguishable."""


class InvalidRefreshToken(DomainError):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class SelfLockout(DomainError):
    """An admin tried to demote, deactivate or delete itself through the admin routes."""


OAuthErrorCode = Literal[
    "invalid_request", "invalid_grant", "unsupported_grant_type", "invalid_client"
]


class OAuthError(Exception):
    """RFC 6749 §5.2 error from a token endpoint; rendered as 400 with `Cache-Control: no-store`."""

    def __init__(self, error: OAuthErrorCode, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def bearer_challenge(error: str | None = None) -> HTTPException:
    """A 401 carrying the RFC 6750 §3 challenge; pass "invalid_token" once a token was sent."""
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, "Not authenticated", headers={"WWW-Authenticate": challenge}
    )
