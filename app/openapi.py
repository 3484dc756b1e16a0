"""The OpenAPI document: FastAPI's, completed with the answers that come from shared code.

Routes declare their own outcomes (404, 409, an RFC 6749 400). Some answers come from code that
every route shares instead, and FastAPI cannot see them: the bearer dependency's 401, the body
size limit's 413, the rate limiter's 429, the 503 while the database is away, and our 422
handler, whose body differs from FastAPI's default. They are added here, in one place, so client generators and fuzzers can trust the
document: tests/test_openapi.py checks it and the schemathesis CI leg checks it against the
running service.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.schemas import (
    ErrorOut,
    IntrospectionRequest,
    OAuthErrorOut,
    RevokeRequest,
    TokenRequest,
    ValidationErrorOut,
)

Document = dict[str, Any]
Operation = dict[str, Any]

SCHEMA_REF = "#/components/schemas/{model}"

TAGS: list[dict[str, str]] = [
    {"name": "accounts", "description": "Sign up, and manage your own account."},
    {"name": "tokens", "description": "OAuth 2.0: log in, refresh, revoke, log out."},
    {
        "name": "second factor",
        "description": "TOTP authenticator apps and recovery codes; the second step of a "
        "login is a grant at /token.",
    },
    {"name": "sessions", "description": "See where you are logged in; end one login or all."},
    {"name": "users", "description": "Look up other users."},
    {
        "name": "recovery",
        "description": "Links by mail: reset a forgotten password, verify an address.",
    },
    {"name": "admin", "description": "Administrators only: change or remove any user."},
    {"name": "health", "description": "Liveness and readiness probes."},
]

# The token endpoints answer every error in RFC 6749 §5.2's shape; everything else in FastAPI's.
OAUTH_ENDPOINTS = frozenset({("post", "/token"), ("post", "/revoke"), ("post", "/introspect")})

# Where the attempt limiters stand (see API.md: LOGIN_RATE_LIMIT and SIGNUP_RATE_LIMIT).
# RECOVERY_RATE_LIMIT for the mail requests; the login throttle for /users/me/email's password.
RATE_LIMITED = frozenset(
    {
        ("post", "/token"),
        ("post", "/signup"),
        ("post", "/users/me/password"),
        ("post", "/introspect"),
        ("post", "/users/me/email"),
        ("post", "/password-reset"),
        ("post", "/email-verification"),
        ("post", "/users/me/mfa/totp"),
        ("post", "/users/me/mfa/totp/confirm"),
        ("delete", "/users/me/mfa/totp"),
        ("post", "/users/me/mfa/recovery-codes"),
    }
)

# Every other operation reads the database, and answers 503 with Retry-After while it is away
# (app.main's handler for a restart or failover); /health/ready declares its own 503 body.
NO_DATABASE = frozenset(
    {
        ("get", "/health"),
        ("get", "/.well-known/jwks.json"),
        ("get", "/.well-known/oauth-authorization-server"),
    }
)

# These take every form field as optional and answer a missing or malformed one with RFC 6749's
# invalid_request (a 400), so FastAPI's automatic 422 never happens there. The document still
# marks the fields a client must always send as required.
NO_VALIDATION_ERROR = OAUTH_ENDPOINTS
REQUIRED_FORM_FIELDS = {
    ("post", "/token"): ["grant_type"],
    ("post", "/revoke"): ["token"],
    ("post", "/introspect"): ["token"],
}

RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}
WWW_AUTHENTICATE = {
    "description": "RFC 6750 §3 challenge: `Bearer` without a token, else "
    '`Bearer error="invalid_token", error_description="..."` saying whether the token is '
    "malformed, expired, revoked or otherwise invalid (also the body's `detail`).",
    "required": True,
    "schema": {"type": "string"},
}


# Swagger UI's Authorize dialog speaks the password grant, which cannot do the second step of
# an account with a second factor. This second scheme, offered beside it, takes an access
# token obtained otherwise (docs/mfa.md: two "Try it out"s on POST /token), pasted in.
ACCESS_TOKEN_SCHEME = "AccessToken"  # noqa: S105 - the scheme's name, not a secret
ACCESS_TOKEN = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "An access token from POST /token, pasted in: for accounts with a second "
    "factor, which the password form above cannot complete.",
}


def operation_id(route: APIRoute) -> str:
    """Operation ids named after the route function (`issue_token`), for generated clients."""
    return route.name


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json; it is built once, on first request."""
    generate: Callable[[], Document] = app.openapi
    app.openapi_tags = TAGS
    completed: Document | None = None

    def openapi() -> Document:
        nonlocal completed
        if completed is None:
            completed = complete_document(copy.deepcopy(generate()))
        return completed

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def complete_document(document: Document) -> Document:
    """Add the responses shared code produces, with the bodies it really sends."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    # The token endpoints' forms are read by app.forms, not FastAPI: their models come from here.
    for model in (
        ErrorOut,
        OAuthErrorOut,
        ValidationErrorOut,
        TokenRequest,
        RevokeRequest,
        IntrospectionRequest,
    ):
        _add_schema(schemas, model)
    for method, path, operation in _operations(document):
        responses: dict[str, Any] = operation["responses"]
        _document_validation_errors((method, path), responses)
        if operation.get("security"):
            _document_bearer_challenge(responses)
            operation["security"].append({ACCESS_TOKEN_SCHEME: []})
        if "requestBody" in operation:
            _document_body((method, path), operation["requestBody"], responses, schemas)
        if (method, path) not in NO_DATABASE and "503" not in responses:
            responses["503"] = _response(ErrorOut, "The database is unavailable: try again shortly")
            responses["503"]["headers"] = {"Retry-After": RETRY_AFTER}
        if (method, path) in RATE_LIMITED:
            error_model = OAuthErrorOut if (method, path) in OAUTH_ENDPOINTS else ErrorOut
            responses["429"] = _response(error_model, "Too many attempts: wait and try again")
            responses["429"]["headers"] = {"Retry-After": RETRY_AFTER}
        operation["responses"] = dict(sorted(responses.items()))
    document["components"].setdefault("securitySchemes", {})[ACCESS_TOKEN_SCHEME] = ACCESS_TOKEN
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def _document_validation_errors(key: tuple[str, str], responses: dict[str, Any]) -> None:
    """FastAPI lists its own 422 body, which echoes input; ours (app.main) never does."""
    if "422" not in responses:
        return
    if key in NO_VALIDATION_ERROR:
        del responses["422"]
        return
    responses["422"] = _response(
        ValidationErrorOut,
        "A field is missing or invalid: `detail` says which and why. "
        "Submitted values are never echoed back.",
    )


def _document_bearer_challenge(responses: dict[str, Any]) -> None:
    """The bearer dependency's 401 (app.deps), with RFC 6750's WWW-Authenticate header."""
    responses.setdefault(
        "401", _response(ErrorOut, "Missing, invalid, expired or revoked access token")
    )
    responses["401"].setdefault("headers", {})["WWW-Authenticate"] = WWW_AUTHENTICATE


def _document_body(
    key: tuple[str, str], body: dict[str, Any], responses: dict[str, Any], schemas: dict[str, Any]
) -> None:
    """What any request body can meet, and examples to start from."""
    if "application/json" in body.get("content", {}):
        # FastAPI answers a body it cannot decode as text (not UTF-8) with a plain 400.
        unreadable = "The request body could not be read"
        if "400" in responses:
            responses["400"]["description"] += f"; or: {unreadable.lower()}"
        else:
            responses["400"] = _response(ErrorOut, unreadable)
    # Refused by middleware before any route runs, so in FastAPI's shape everywhere.
    responses["413"] = _response(ErrorOut, "The request body is too large")
    _lift_examples(body, schemas)
    form = _body_schema(body, "application/x-www-form-urlencoded", schemas)
    if form is not None:
        _drop_null_from_form_fields(form)
        form["required"] = REQUIRED_FORM_FIELDS.get(key, [])


def _operations(document: Document) -> Iterator[tuple[str, str, Operation]]:
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}:
                yield method, path, operation


def _add_schema(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template=SCHEMA_REF)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema


def _response(model: type[BaseModel], description: str) -> dict[str, Any]:
    ref = SCHEMA_REF.format(model=model.__name__)
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _body_schema(
    body: dict[str, Any], media_type: str, schemas: dict[str, Any]
) -> dict[str, Any] | None:
    media = body.get("content", {}).get(media_type)
    if media is None:
        return None
    ref: str = media["schema"]["$ref"]
    return schemas[ref.rsplit("/", 1)[-1]]


def _drop_null_from_form_fields(form: dict[str, Any]) -> None:
    """A form field is a string or absent: `null` has no form encoding, so it is not offered."""
    for field in form.get("properties", {}).values():
        choices = field.get("anyOf", [])
        if {"type": "null"} in choices and len(choices) == 2:
            field.pop("anyOf")
            [other] = [choice for choice in choices if choice != {"type": "null"}]
            field.update(other)


def _lift_examples(body: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Offer a body's examples as named request examples, which Swagger UI lists in a menu.

    They come from the body model's own examples or, for a form, from its fields' examples.
    """
    for media in body.get("content", {}).values():
        if "examples" in media or "example" in media:
            continue
        ref: str = media.get("schema", {}).get("$ref", "")
        schema = schemas.get(ref.rsplit("/", 1)[-1], {})
        examples = schema.get("examples") or _example_from_fields(schema)
        if examples:
            media["examples"] = {
                f"example-{number}": {"value": value}
                for number, value in enumerate(examples, start=1)
            }


def _example_from_fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    fields = {
        name: field["examples"][0]
        for name, field in schema.get("properties", {}).items()
        if field.get("examples")
    }
    return [fields] if fields else []
