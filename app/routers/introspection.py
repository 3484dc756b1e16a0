"""RFC 7662 token introspection, for resource servers that must see a revocation at once."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.db import utcnow
from app.deps import AccessTokensDep, TransactionsDep
from app.errors import invalid_client, oauth_too_many_attempts
from app.forms import form_request_body, read_form
from app.ratelimit import ClientAddress, Throttled, ThrottleDep
from app.routers.tokens import NO_STORE, TOKEN_ERRORS, required_field
from app.schemas import IntrospectionOut, IntrospectionRequest, OAuthErrorOut
from app.security import IntrospectionClients
from app.services import tokens

router = APIRouter(tags=["tokens"])

# RFC 7662 §2.2: whatever does not stand gets this, and nothing more.
INACTIVE = {"active": False}

INTROSPECTION_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuthErrorOut, "description": "RFC 6749 §5.2 invalid_request: no token"},
    401: {
        "model": OAuthErrorOut,
        "description": "invalid_client: missing or wrong HTTP Basic credentials "
        "(one of INTROSPECTION_CLIENTS)",
        "headers": {
            "WWW-Authenticate": {
                "description": "`Basic` (RFC 7617)",
                "required": True,
                "schema": {"type": "string"},
            }
        },
    },
    429: TOKEN_ERRORS[429],
}


@router.post(
    "/introspect",
    response_model=IntrospectionOut,
    responses=INTROSPECTION_ERRORS,
    openapi_extra={"security": [], "requestBody": form_request_body(IntrospectionRequest)},
)
async def introspect(
    request: Request,
    db: TransactionsDep,
    access_tokens: AccessTokensDep,
    throttle: ThrottleDep,
    address: ClientAddress,
) -> JSONResponse:
    """Is this token live right now? For resource servers, with HTTP Basic credentials from
    INTROSPECTION_CLIENTS. Sees a logout, password change or deactivation at once; anything
    that does not stand is `{"active": false}`."""
    # Counted before the credentials are checked, as a login is before its password.
    try:
        await throttle.start_client_authentication(address=address)
    except Throttled as exc:
        raise oauth_too_many_attempts(
            exc.retry_after, what="failed client authentications"
        ) from None
    clients: IntrospectionClients = request.app.state.introspection_clients
    if clients.authenticate(request.headers.get("authorization")) is None:
        raise invalid_client()
    await throttle.client_authenticated(address=address)
    form = await read_form(request, IntrospectionRequest.model_fields)
    presented = required_field(form, "token")
    answer = await tokens.introspect_token(
        db,
        presented=presented,
        access_tokens=access_tokens,
        lookup=request.app.state.token_user_lookup,
        now=utcnow(),
    )
    return JSONResponse(answer or INACTIVE, headers=NO_STORE)
