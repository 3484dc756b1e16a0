"""Pure ASGI middleware: request ids and the access log, the body limit and security headers.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: it sees each body chunk as it arrives,
so an oversized body is refused before it is read whole, and it keeps contextvars visible to
the routes it wraps.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, status
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_logger = logging.getLogger("passgate.access")

REQUEST_ID_HEADER = "X-Request-ID"
# Ids a client may choose: short, and nothing that could forge a log line or a header.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

# JSON answers are never rendered by a browser, so they may forbid everything; HTML (the
# self-hosted /docs) keeps its scripts and only refuses to be framed (clickjacking).
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"
HTML_CSP = "frame-ancestors 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# The same, as the lower-case byte pairs ASGI carries: these run on every response, and
# `make bench` showed Starlette's MutableHeaders (a scan and an encode per header) costing
# the middleware stack about a sixth of a bearer request's CPU.
_RAW_SECURITY_HEADERS = [
    (name.lower().encode("latin-1"), value.encode("latin-1"))
    for name, value in SECURITY_HEADERS.items()
]
_CSP = b"content-security-policy"
_CACHE_CONTROL = b"cache-control"
_CONTENT_TYPE = b"content-type"
_REQUEST_ID = REQUEST_ID_HEADER.lower().encode("latin-1")


def _raw_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of a header in an ASGI header list (names are lower case)."""
    for key, value in headers:
        if key == name:
            return value
    return None


def _response_headers(message: Message) -> list[tuple[bytes, bytes]]:
    """The response's header list, made a list in place so that appends reach the server."""
    headers = message.get("headers")
    if not isinstance(headers, list):
        headers = list(headers or ())
        message["headers"] = headers
    return headers


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    client: str | None


_request_context: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "passgate_request_context", default=None
)


def current_request() -> RequestContext | None:
    """The id and peer address of the request being served, if any (None in the CLI)."""
    return _request_context.get()


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is sane, else a new one."""
    offered = _raw_header(headers, _REQUEST_ID)
    if offered is not None:
        text = offered.decode("latin-1")
        if SANE_REQUEST_ID.fullmatch(text):
            return text
    # The shape of uuid4().hex (32 lower-case hex digits), without building a UUID on the way.
    return secrets.token_hex(16)


class RequestContextMiddleware:
    """Gives every request an id, echoes it in X-Request-ID, exposes it to audit events and
    writes the access line.

    The access line holds the method, the path, the status, the duration, the client and (in
    every line's format, app/logs.py) the request id: never the query string, where clients
    put tokens and passwords (`/token?password=...`), nor a header or a body. It replaces
    uvicorn's access log, which prints the query string.
    """

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        raw_id = request_id.encode("latin-1")
        client = scope.get("client")
        context = RequestContext(request_id, client[0] if client else None)
        token = _request_context.set(context)
        status_code = 500  # what the client gets when the application raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                headers = _response_headers(message)
                headers[:] = [(key, value) for key, value in headers if key != _REQUEST_ID]
                headers.append((_REQUEST_ID, raw_id))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as exc:
            if self.access_log and not isinstance(exc, asyncio.CancelledError):
                # The traceback goes out here, with the request's id (uvicorn's own report
                # of it is dropped: app/logs.py).
                self._log(scope, status_code, started, context, error=exc)
            raise
        else:
            if self.access_log:
                self._log(scope, status_code, started, context)
        finally:
            _request_context.reset(token)

    @staticmethod
    def _log(
        scope: Scope,
        status_code: int,
        started: float,
        context: RequestContext,
        error: BaseException | None = None,
    ) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        access_logger.log(
            logging.ERROR if error is not None else logging.INFO,
            "%s %s %d %.1fms",
            method,
            path,
            status_code,
            duration_ms,
            exc_info=error,
            extra={
                "request_id": context.request_id,
                "fields": {
                    "method": method,
                    "path": path,
                    "status": status_code,
                    "duration_ms": duration_ms,
                    "client": context.client,
                },
                "in_message": ("method", "path", "status", "duration_ms"),
            },
        )


class BodyTooLarge(HTTPException):
    """Raised from receive(): FastAPI passes HTTPExceptions through its body parsing untouched."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE, f"Request body exceeds {max_bytes} bytes"
        )


class BodySizeLimitMiddleware:
    """413 for bodies over max_bytes: by Content-Length before reading, else while streaming."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _raw_header(scope["headers"], b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                # Chunked bodies declare no length, and a declared length is only a claim.
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Reached only when something read the body outside FastAPI's request parsing,
            # which turns the exception into the 413 itself.
            if response_started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"Request body exceeds {self.max_bytes} bytes"},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class SecurityHeadersMiddleware:
    """Headers every response carries; a route's own Cache-Control or CSP is left alone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = _response_headers(message)
                present = {key for key, _ in headers}
                headers.extend(pair for pair in _RAW_SECURITY_HEADERS if pair[0] not in present)
                if _CSP not in present:
                    content_type = _raw_header(headers, _CONTENT_TYPE) or b""
                    is_html = content_type.startswith(b"text/html")
                    headers.append((_CSP, (HTML_CSP if is_html else STRICT_CSP).encode()))
                # Answers carry tokens and user data: no browser or proxy may keep a copy.
                if _CACHE_CONTROL not in present:
                    headers.append((_CACHE_CONTROL, b"no-store"))
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeadAsGetMiddleware:
    """HEAD answers as GET would, headers and status alike, without the body (RFC 9110 §9.3.2).

    Load balancers and uptime monitors probe with HEAD. The routes see a GET, so every GET
    route answers HEAD without declaring it (and /openapi.json lists GET only); the headers,
    Content-Length included, are GET's, which RFC 9110 §8.6 allows. Installed innermost, so
    the access log still says HEAD.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)


def install_middleware(app: FastAPI, *, max_body_bytes: int, access_log: bool = True) -> None:
    """Add them, outermost last: every answer, even a 413, gets an id and the headers."""
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(RequestContextMiddleware, access_log=access_log)
    app.add_middleware(SecurityHeadersMiddleware)
