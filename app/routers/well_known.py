"""RFC 8414 authorization server metadata: where other services find every endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.config import Settings
from app.schemas import AuthorizationServerMetadataOut
from app.security import issuer_of

router = APIRouter(tags=["tokens"])

# How long clients may keep the document: it changes only with the configuration.
METADATA_MAX_AGE_SECONDS = 300

# The MFA grants of API.md ("Second factor"): the second step of a password login.
MFA_OTP_GRANT = "urn:passgate:params:oauth:grant-type:mfa-otp"
MFA_RECOVERY_CODE_GRANT = "urn:passgate:params:oauth:grant-type:mfa-recovery-code"


def authorization_server_metadata(settings: Settings) -> dict[str, object]:
    """The metadata document; every URL is built from PUBLIC_URL, never from the request."""
    base = settings.public_url
    document: dict[str, object] = {
        "issuer": issuer_of(settings),
        "token_endpoint": f"{base}/token",
        "revocation_endpoint": f"{base}/revoke",
        "introspection_endpoint": f"{base}/introspect",
    }
    # Under HS256 nobody else can verify a signature: there is no key to publish.
    if settings.jwt_algorithm != "HS256":
        document["jwks_uri"] = f"{base}/.well-known/jwks.json"
    document.update(
        {
            "grant_types_supported": [
                "password",
                "refresh_token",
                MFA_OTP_GRANT,
                MFA_RECOVERY_CODE_GRANT,
            ],
            # No authorization endpoint, so no response type (API.md: an empty list).
            "response_types_supported": [],
            # Public clients: the password and refresh grants take no client credentials.
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
            "service_documentation": f"{base}/docs",
        }
    )
    return document


@router.get(
    "/.well-known/oauth-authorization-server",
    response_model=AuthorizationServerMetadataOut,
    response_model_exclude_none=True,
    openapi_extra={"security": []},
)
async def oauth_authorization_server(request: Request) -> JSONResponse:
    """RFC 8414 metadata: the issuer, the endpoints' URLs and what they support, for clients
    and resource servers that configure themselves from it."""
    return JSONResponse(
        authorization_server_metadata(request.app.state.settings),
        headers={"Cache-Control": f"public, max-age={METADATA_MAX_AGE_SECONDS}"},
    )
