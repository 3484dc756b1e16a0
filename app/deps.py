"""Who is calling, and for what: the one place that turns a bearer token into a user."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import OAuth2PasswordBearer

from app.db import SessionDep, utcnow
from app.errors import REVOKED_DESCRIPTION, bearer_challenge
from app.lookups import TokenUserLookup
from app.models import Account, User
from app.security import AccessTokens, InvalidToken, Passwords
from app.services import users
from app.services.mail import Mailer
from app.transactions import Transactions

# auto_error=False: we answer a missing token ourselves with RFC 6750's challenge. The scheme
# also tells /docs to offer the password flow against /token in its Authorize dialog.
bearer_scheme = OAuth2PasswordBearer(
    tokenUrl="token",
    auto_error=False,
    description="Log in with your email as the username; the access token is sent as a bearer token.",
)


async def get_passwords(request: Request) -> Passwords:
    return request.app.state.passwords


async def get_access_tokens(request: Request) -> AccessTokens:
    return request.app.state.access_tokens


async def get_transactions(request: Request) -> Transactions:
    return request.app.state.transactions


async def get_mailer(request: Request) -> Mailer:
    return request.app.state.mailer


PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
MailerDep = Annotated[Mailer, Depends(get_mailer)]
AccessTokensDep = Annotated[AccessTokens, Depends(get_access_tokens)]
TransactionsDep = Annotated[Transactions, Depends(get_transactions)]


async def get_current_user(
    request: Request, token: Annotated[str | None, Depends(bearer_scheme)]
) -> Account:
    """The active user named by a valid, unrevoked access token; 401 otherwise."""
    if not token:
        raise bearer_challenge()
    # From app.state rather than AccessTokensDep: every protected request runs this, and each
    # dependency costs FastAPI's solver about 15 us (W1 in `make bench`).
    access_tokens: AccessTokens = request.app.state.access_tokens
    try:
        claims = access_tokens.decode(token, now=utcnow())
    except InvalidToken as exc:
        raise bearer_challenge("invalid_token", exc.description) from None
    # No session here: the lookup has its own one-round-trip path (app/lookups.py), and
    # routes that only need the caller then never open a session at all.
    lookup: TokenUserLookup = request.app.state.token_user_lookup
    user = await lookup.find(user_id=claims.user_id, family_id=claims.family_id)
    if user is None:
        # Logged out, password changed, session ended, account deactivated or deleted: to
        # the token's holder, all the same thing.
        raise bearer_challenge("invalid_token", REVOKED_DESCRIPTION)
    # The login this token belongs to, for routes that must tell "this session" from others.
    request.state.session_id = claims.family_id
    return user


CurrentUser = Annotated[Account, Depends(get_current_user)]


async def get_current_session_id(request: Request, _: CurrentUser) -> uuid.UUID:
    """The id of the session (login) the caller's access token belongs to."""
    session_id: uuid.UUID = request.state.session_id
    return session_id


CurrentSessionId = Annotated[uuid.UUID, Depends(get_current_session_id)]


async def get_admin_user(user: CurrentUser) -> Account:
    """The current user if it is an admin; 403 otherwise."""
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Administrator rights required")
    return user


AdminUser = Annotated[Account, Depends(get_admin_user)]


async def get_user_by_path(
    session: SessionDep, user_id: Annotated[uuid.UUID, Path(description="The user's id.")]
) -> User:
    """The user named in the path; 404 when there is none."""
    user = await users.get_user(session, user_id)
    await session.commit()
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")
    return user


UserByPath = Annotated[User, Depends(get_user_by_path)]


async def get_metrics_scraper(request: Request) -> None:
    """Lets a scraper through with the METRICS_TOKEN bearer; 404 while METRICS_TOKEN is unset."""
    expected = request.app.state.metrics_token_digest
    if expected is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise bearer_challenge()
    # Digests of equal length, compared in constant time: nothing leaks the token's length.
    presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
    if not hmac.compare_digest(presented, expected):
        raise bearer_challenge("invalid_token")


MetricsScraper = Depends(get_metrics_scraper)
