"""One format for every line the service prints: access, audit, warnings, startup, uvicorn's own.

Each line carries the time (ISO 8601 UTC), the level, the logger's name, the request id when
it was written while serving a request, the message and the record's structured fields:
human-readable text by default, one JSON object per line with LOG_FORMAT=json.

Structured fields travel as `extra={"fields": {...}}` (and `"in_message": (names...)` for
those the message already shows, written once in text); callers put only named, non-secret
values there (an access line has the path but never the query string, see app/middleware.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, Literal, TextIO

from app.middleware import current_request

LogFormat = Literal["text", "json"]
Destination = Literal["stdout", "stderr", "off"]

# uvicorn's loggers: its own lines go through ours; its access log is replaced by ours, which
# leaves the query string out.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
UVICORN_ACCESS_LOGGER = "uvicorn.access"


def _utc_time(record: logging.LogRecord) -> str:
    time = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return time.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _request_id(record: logging.LogRecord) -> str | None:
    # Set by RequestContextFilter at the moment of the call; the context may be gone by the
    # time a handler formats the record.
    return getattr(record, "request_id", None)


def _printable(text: str) -> str:
    """The text with control characters escaped, so that no value can start a forged line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class RequestContextFilter(logging.Filter):
    """Stamps each record with the id of the request being served, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request = current_request()
            record.request_id = request.request_id if request else None
        return True


class DuplicateTracebackFilter(logging.Filter):
    """Drops uvicorn's own report of an exception in the application.

    The access log has already written it, with the request's id (app/middleware.py), so the
    traceback appears once.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "uvicorn.error"
            and isinstance(record.msg, str)
            and record.msg.startswith("Exception in ASGI application")
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": _request_id(record),
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id] message key=value ...`, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        parts = [
            _utc_time(record),
            f"{record.levelname:<7}",
            record.name,
            f"[{_request_id(record) or '-'}]",
            _printable(message),
        ]
        # Fields the message already shows (an access line's method, path and status) are
        # written once in text; JSON keeps them apart for machines.
        omitted = getattr(record, "in_message", ())
        for key, value in getattr(record, "fields", {}).items():
            if value is not None and key not in omitted:
                parts.append(f"{key}={_printable(str(value))}")
        line = " ".join(parts)
        if record.exc_info:
            # A traceback stays readable in text; JSON keeps it inside the one line.
            line += "\n" + self.formatException(record.exc_info)
        return line


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


class StandardStreamHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stdout or sys.stderr is at the time of each record.

    Like logging's own last-resort handler: a stream captured at start-up may have been
    replaced since (by a test runner, or a process manager reopening it).
    """

    def __init__(self, name: Literal["stdout", "stderr"], log_format: LogFormat) -> None:
        super().__init__()
        self._name = name
        self.setFormatter(make_formatter(log_format))
        self.addFilter(RequestContextFilter())

    @property  # type: ignore[override]  # StreamHandler declares `stream` as an attribute
    def stream(self) -> TextIO:
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def _replace_own_handlers(logger: logging.Logger, handler: logging.Handler | None) -> None:
    for existing in list(logger.handlers):
        if isinstance(existing, StandardStreamHandler):
            logger.removeHandler(existing)
    if handler is not None:
        logger.addHandler(handler)


def configure_stream_logger(
    name: str, destination: Destination, log_format: LogFormat
) -> logging.Logger:
    """A logger with a stream of its own (audit events): INFO and up, not repeated via root."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = None if destination == "off" else StandardStreamHandler(destination, log_format)
    _replace_own_handlers(logger, handler)
    return logger


def configure_logging(log_format: LogFormat, *, level: int | str = logging.INFO) -> None:
    """Every other line of the process to stderr in one format; repeated calls replace the last.

    Called by the process that serves (app.main, `python -m app serve`) and by the commands,
    never by create_app, so tests building apps keep their own logging.
    """
    root = logging.getLogger()
    root.setLevel(level.upper() if isinstance(level, str) else level)
    handler = StandardStreamHandler("stderr", log_format)
    handler.addFilter(DuplicateTracebackFilter())
    # Handlers of an earlier configuration (uvicorn's, logging.basicConfig's) would print the
    # same lines again in their own format.
    for existing in list(root.handlers):
        if isinstance(existing, StandardStreamHandler) or type(existing) is logging.StreamHandler:
            root.removeHandler(existing)
    root.addHandler(handler)
    for name in UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # uvicorn writes its access line only when this logger has a handler somewhere up its
    # chain: with none and no propagation, it does not even format one.
    access = logging.getLogger(UVICORN_ACCESS_LOGGER)
    access.handlers.clear()
    access.propagate = False
    # Python's warnings (DeprecationWarning and the like) become lines of the same format.
    logging.captureWarnings(True)
