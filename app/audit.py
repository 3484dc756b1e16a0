"""Audit events: one line per security-relevant event, on the `passgate.audit` logger.

Each line holds the event, the user's id, the client's address, the time (ISO 8601 UTC) and
the request id, plus a reason or the acting admin where they apply, in the format of every
other line (app/logs.py: text, or JSON with LOG_FORMAT=json), on the stream AUDIT_LOG names.
The fields are named parameters, never free-form, so a password, hash or token cannot end up
in the log.
"""

from __future__ import annotations

import logging
import uuid
from enum import StrEnum
from typing import Any

from app.logs import Destination, LogFormat, configure_stream_logger
from app.middleware import current_request

audit_logger = logging.getLogger("passgate.audit")


class AuditEvent(StrEnum):
    SIGNUP = "signup"
    # reason, after a second step: totp or recovery_code.
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
    # The password was right; a second factor is asked for.
    MFA_REQUIRED = "mfa_required"
    # reason: wrong_code (TOTP or recovery code, wrong or replayed) or invalid_mfa_token.
    MFA_FAILED = "mfa_failed"
    MFA_ENROLMENT_STARTED = "mfa_enrolment_started"
    MFA_ENABLED = "mfa_enabled"
    # reason: self or admin.
    MFA_DISABLED = "mfa_disabled"
    RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated"
    # reason: wrong_password, wrong_code, no_second_factor or nothing_pending.
    MFA_CHANGE_FAILED = "mfa_change_failed"
    # One session ended by its user (reason: self).
    SESSION_ENDED = "session_ended"
    # reason: self, self_except_current or admin.
    SESSIONS_ENDED = "sessions_ended"
    # Mail flows. A *_requested event without user_id is a request for an address that gets no
    # mail (reason: unknown_email, inactive, verified, cooldown); the answer is the same.
    PASSWORD_RESET_REQUESTED = "password_reset_requested"
    PASSWORD_RESET_COMPLETED = "password_reset_completed"
    PASSWORD_RESET_FAILED = "password_reset_failed"
    EMAIL_VERIFICATION_REQUESTED = "email_verification_requested"
    EMAIL_VERIFIED = "email_verified"
    EMAIL_VERIFICATION_FAILED = "email_verification_failed"
    EMAIL_CHANGE_REQUESTED = "email_change_requested"
    EMAIL_CHANGE_FAILED = "email_change_failed"
    EMAIL_CHANGED = "email_changed"
    NAME_CHANGED = "name_changed"


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
    }
    if reason is not None:
        fields["reason"] = reason
    if actor_id is not None:
        fields["actor_id"] = str(actor_id)
    audit_logger.info("%s", event, extra={"fields": fields, "in_message": ("event",)})


def configure_audit_log(destination: Destination, log_format: LogFormat = "text") -> None:
    """Send audit events to one standard stream, or nowhere; repeated calls replace the last."""
    configure_stream_logger(audit_logger.name, destination, log_format)
