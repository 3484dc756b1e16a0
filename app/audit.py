"""Audit events: one JSON line per security-relevant event, on the `passgate.audit` logger.

Each line holds the event, the user's id, the client's address, the time (ISO 8601 UTC) and
the request id, plus a reason or the acting admin where they apply. The fields are named
parameters, never free-form, so a password, hash or token cannot end up in the log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import uuid
from enum import StrEnum
from typing import Any, Literal, TextIO

from app.middleware import current_request

audit_logger = logging.getLogger("passgate.audit")


class AuditEvent(StrEnum):
    SIGNUP = "signup"
    LOGIN_SUCCEEDED = "login_succeeded"
    # reason: unknown_email, wrong_password or inactive. The HTTP answer is the same for all
    # three; only this log tells them apart.
    LOGIN_FAILED = "login_failed"
    # reason: which limit (login_account, login_address, signup_address).
    THROTTLED = "throttled"
    TOKEN_REFRESHED = "token_refreshed"
    REFRESH_REUSE_DETECTED = "refresh_reuse_detected"
    TOKEN_REVOKED = "token_revoked"
    LOGOUT = "logout"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_CHANGE_FAILED = "password_change_failed"
    USER_DEACTIVATED = "user_deactivated"
    USER_REACTIVATED = "user_reactivated"
    ADMIN_GRANTED = "admin_granted"
    ADMIN_REVOKED = "admin_revoked"
    # reason: self or admin.
    USER_DELETED = "user_deleted"
    # One session ended by its user (reason: self).
    SESSION_ENDED = "session_ended"
    # reason: self, self_except_current or admin.
    SESSIONS_ENDED = "sessions_ended"


def record(
    event: AuditEvent,
    *,
    user_id: uuid.UUID | None = None,
    reason: str | None = None,
    actor_id: uuid.UUID | None = None,
) -> None:
    """Log one audit event, with the current request's id and client address."""
    request = current_request()
    fields: dict[str, Any] = {
        "event": str(event),
        "user_id": str(user_id) if user_id else None,
        "client": request.client if request else None,
        "request_id": request.request_id if request else None,
    }
    if reason is not None:
        fields["reason"] = reason
    if actor_id is not None:
        fields["actor_id"] = str(actor_id)
    audit_logger.info("%s", event, extra={"audit": fields})


class JsonLineFormatter(logging.Formatter):
    """The record's audit fields as one JSON object, with the time first."""

    def format(self, record: logging.LogRecord) -> str:
        time = dt.datetime.fromtimestamp(record.created, dt.UTC)
        fields = {"time": time.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        fields.update(getattr(record, "audit", {"event": record.getMessage()}))
        return json.dumps(fields, ensure_ascii=False)


class _StandardStreamHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stdout or sys.stderr is at the time of each event.

    Like logging's own last-resort handler: a stream captured at start-up may have been
    replaced since (by a test runner, or a process manager reopening it).
    """

    def __init__(self, name: Literal["stdout", "stderr"]) -> None:
        super().__init__()
        self._name = name

    @property  # type: ignore[override]  # StreamHandler declares `stream` as an attribute
    def stream(self) -> TextIO:
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_audit_log(destination: Literal["stdout", "stderr", "off"]) -> None:
    """Send audit events to one standard stream, or nowhere; repeated calls replace the last."""
    for handler in list(audit_logger.handlers):
        if isinstance(handler, _StandardStreamHandler):
            audit_logger.removeHandler(handler)
    audit_logger.setLevel(logging.INFO)
    # A stream of its own: events are not repeated through the root logger in another format.
    audit_logger.propagate = False
    if destination != "off":
        handler = _StandardStreamHandler(destination)
        handler.setFormatter(JsonLineFormatter())
        audit_logger.addHandler(handler)
