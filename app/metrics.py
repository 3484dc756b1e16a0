"""Prometheus metrics: every series API.md lists, defined here once, counted across workers.

With several uvicorn workers, each is its own process with its own counters. The official
client's multiprocess mode keeps every process's values in memory-mapped files under
PROMETHEUS_MULTIPROC_DIR, and GET /metrics sums them, so whichever worker answers the scrape
reports the whole service. The directory must be set, and emptied, before the workers start:
`python -m app serve` (make run, the image) does both (prepare_multiprocess_dir), because
prometheus_client reads the variable when it is first imported, and files left by an earlier
start would count old requests again. Without it (tests, a single process), the values live
in this process alone.

Labels only ever hold values from the fixed sets below or a route template: never an email, a
user id, a token, a raw path or anything else a client chooses.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

LoginResult = Literal["success", "invalid_credentials", "throttled", "mfa_required", "unverified"]
RefreshResult = Literal["success", "invalid", "reuse_detected"]
MfaMethod = Literal["totp", "recovery_code"]
MfaResult = Literal["success", "invalid", "throttled"]
EmailResult = Literal["sent", "failed"]

LOGIN_RESULTS: tuple[LoginResult, ...] = (
    "success",
    "invalid_credentials",
    "throttled",
    "mfa_required",
    "unverified",
)
REFRESH_RESULTS: tuple[RefreshResult, ...] = ("success", "invalid", "reuse_detected")
MFA_METHODS: tuple[MfaMethod, ...] = ("totp", "recovery_code")
MFA_RESULTS: tuple[MfaResult, ...] = ("success", "invalid", "throttled")

LOGIN_ATTEMPTS = Counter(
    "passgate_login_attempts",
    "Password grants at POST /token, by outcome.",
    ["result"],
)
TOKEN_REFRESHES = Counter(
    "passgate_token_refresh",
    "Refresh grants at POST /token, by outcome; reuse_detected revoked a whole login.",
    ["result"],
)
MFA_VERIFICATIONS = Counter(
    "passgate_mfa_verifications",
    "Second-factor codes checked at POST /token, by method and outcome.",
    ["method", "result"],
)
SIGNUPS = Counter("passgate_signups", "Accounts created at POST /signup.")
PASSWORD_RESET_REQUESTS = Counter(
    "passgate_password_reset_requests",
    "Accepted POST /password-reset requests, whether or not the address is registered.",
)
EMAILS = Counter(
    "passgate_emails",
    "Mail delivery attempts from the outbox, by kind of mail and outcome.",
    ["kind", "result"],
)
# Every worker reads the same outbox table, so the freshest reading is the answer.
EMAIL_OUTBOX_PENDING = Gauge(
    "passgate_email_outbox_pending",
    "Mails stored in the outbox and not yet delivered.",
    multiprocess_mode="mostrecent",
)
# Argon2id at the configured cost takes tens of milliseconds; buckets around that.
PASSWORD_HASH_SECONDS = Histogram(
    "passgate_password_hash_seconds",
    "Time one password hash or verification takes in a hashing process or thread.",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
)
# livesum: a worker that died no longer has hashes waiting (see forget_dead_workers).
PASSWORD_HASH_QUEUE = Gauge(
    "passgate_password_hash_queue",
    "Password hashes waiting for a free hashing process or thread.",
    multiprocess_mode="livesum",
)
HTTP_REQUESTS = Counter(
    "passgate_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "passgate_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method, route template "
    "and status code.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)

# Every outcome is listed from the start at 0, so rate() and alerts work before the first one;
# the children are kept, so counting skips the label lookup (and its lock).
_LOGINS = {result: LOGIN_ATTEMPTS.labels(result=result) for result in LOGIN_RESULTS}
_REFRESHES = {result: TOKEN_REFRESHES.labels(result=result) for result in REFRESH_RESULTS}
_MFA = {
    (method, result): MFA_VERIFICATIONS.labels(method=method, result=result)
    for method in MFA_METHODS
    for result in MFA_RESULTS
}

# A client picks the method: anything outside these counts as "other", not as a new series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A request that no route matched (a 404 for an unknown path, say): one series for all of them.
UNMATCHED_ROUTE = "unmatched"


def count_login(result: LoginResult) -> None:
    _LOGINS[result].inc()


def count_refresh(result: RefreshResult) -> None:
    _REFRESHES[result].inc()


def count_mfa_verification(method: MfaMethod, result: MfaResult) -> None:
    _MFA[method, result].inc()


def count_email(kind: str, result: EmailResult) -> None:
    """`kind` is the mail's purpose (verification, password_reset, ...), never an address."""
    EMAILS.labels(kind=kind, result=result).inc()


def multiprocess_dir() -> Path | None:
    """The folder this process's values live in, or None when they live in its memory."""
    # What prometheus_client decided when it was imported, not what the environment says now.
    if values.ValueClass is values.MutexValue:
        return None
    value = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    return Path(value) if value else None


def prepare_multiprocess_dir(directory: Path) -> None:
    """Make the folder and empty it of an earlier start's files, before any worker starts.

    Only prometheus_client's own *.db files go, whatever folder an operator names, and never
    this process's own (open) ones.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        match = _PID_IN_FILE_NAME.search(path.name)
        if match is None or int(match.group(1)) != os.getpid():
            path.unlink(missing_ok=True)


_PID_IN_FILE_NAME = re.compile(r"_(\d+)\.db$")


def forget_dead_workers(directory: Path) -> None:
    """Drop the live gauges of worker processes that no longer exist.

    uvicorn restarts a worker that dies without telling anyone, so a killed worker's hash
    queue would otherwise count forever. Counters are kept: what a dead worker counted still
    happened, and a counter going backwards would read as a reset.
    """
    pids = {
        int(match.group(1))
        for path in directory.glob("*.db")
        if (match := _PID_IN_FILE_NAME.search(path.name))
    }
    for pid in pids - {os.getpid()}:
        if not _process_exists(pid):
            multiprocess.mark_process_dead(pid, str(directory))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds that pid now
        return True
    return True


def mark_this_process_dead() -> None:
    """At a worker's orderly shutdown: its live gauges stop counting."""
    directory = multiprocess_dir()
    if directory is not None:
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(os.getpid(), str(directory))


def render() -> tuple[bytes, str]:
    """The exposition text of every worker (or of this process alone), and its media type.

    Reads files: call it off the event loop.
    """
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    forget_dead_workers(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class HttpMetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status code.

    The route is the template the router matched (`/users/{user_id}`), read after the app
    ran: never the raw path, in which an id or anything a client likes would become a label.
    Label children are looked up once per combination and kept, so a request costs two
    increments and a clock read (measured in tests/bench/metrics_overhead.py).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], tuple[object, object]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before responding

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self._observe(scope, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"]
        if method not in KNOWN_METHODS:
            method = "other"
        route = scope.get("route")
        template = getattr(route, "path", None) if route is not None else None
        key = (method, template or UNMATCHED_ROUTE, status)
        children = self._children.get(key)
        if children is None:
            labels = {"method": key[0], "route": key[1], "status": str(status)}
            children = (HTTP_REQUESTS.labels(**labels), HTTP_REQUEST_SECONDS.labels(**labels))
            self._children[key] = children
        counter, histogram = children
        counter.inc()  # type: ignore[attr-defined]  # a Counter child
        histogram.observe(seconds)  # type: ignore[attr-defined]  # a Histogram child
