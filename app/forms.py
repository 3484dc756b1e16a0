"""The token endpoints' form bodies (RFC 6749 §3.2, RFC 7009 §2.1), read strictly and cheaply.

Declared as FastAPI `Form()` parameters, the five fields of `/token` cost the event loop about
0.3 ms per request (FastAPI's per-field form machinery and Starlette's multipart-capable
parser; measured in-process with cProfile): a third of everything a login does besides its
hash, and CPU the hashing threads then lack. A URL-encoded body of a few fields is one
`parse_qsl` call.

Reading the form here also lets the endpoints follow RFC 6749 §3.1 and §3.2 to the letter:
a parameter sent without a value counts as omitted, one sent twice is an `invalid_request`,
and unrecognised parameters are ignored. The OpenAPI document describes each form with a
model from app.schemas (see `form_request_body`), so /docs and clients see what they did before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from app.errors import OAuthError

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MULTIPART_MEDIA_TYPE = "multipart/form-data"

# More fields than any OAuth 2.0 client sends; a body of thousands of `a=&a=` is refused early.
MAX_FIELDS = 32


async def read_form(request: Request, fields: Iterable[str]) -> dict[str, str]:
    """The named fields of the request's form body that have a value; invalid_request otherwise."""
    wanted = frozenset(fields)
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type in (FORM_MEDIA_TYPE, ""):
        pairs = _parse_urlencoded(await request.body())
    elif media_type == MULTIPART_MEDIA_TYPE:
        # Not what RFC 6749 specifies, but some HTTP tools send it and it worked before:
        # Starlette's parser reads it, files refused.
        try:
            async with request.form(max_files=0, max_fields=MAX_FIELDS) as form:
                pairs = [
                    (name, value) for name, value in form.multi_items() if isinstance(value, str)
                ]
        except (HTTPException, MultiPartException):
            raise OAuthError("invalid_request", "The request body is not a valid form") from None
    else:
        raise OAuthError("invalid_request", f"The request body must be {FORM_MEDIA_TYPE}")

    values: dict[str, str] = {}
    for name, value in pairs:
        if name not in wanted or not value:
            continue
        if name in values:
            raise OAuthError("invalid_request", f"The {name} parameter must not be repeated")
        values[name] = value
    return values


def _parse_urlencoded(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):  # not UTF-8, or too many fields
        raise OAuthError("invalid_request", "The request body is not a valid form") from None


def form_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI requestBody of a form read by `read_form`, described by `model`.

    app.openapi adds the model's schema to the document's components.
    """
    return {
        "required": True,
        "content": {
            FORM_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }
