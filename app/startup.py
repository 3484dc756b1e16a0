"""What is checked before the service starts, and every start-up mistake said in one line.

`python -m app serve` (make run, the image), the other commands and `alembic` run these
checks and print `passgate: <what is wrong and how to fix it>` instead of a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sqlite3

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import Settings
from app.migrate import upgrade_to_head

# SQLSTATEs PostgreSQL answers a connection with (asyncpg carries them as `sqlstate`).
_MISSING_DATABASE = "3D000"
_UNKNOWN_ROLE = "28000"
_WRONG_PASSWORD = "28P01"  # noqa: S105 - an error code, not a password


class StartupError(Exception):
    """A mistake in how the service was started, to be printed as one line with exit status 1."""


def check_port_free(host: str, port: int) -> None:
    """Refuse early, before any migration, when the address cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise StartupError(f"HOST={host} is not an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: a port whose old connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {host} is already in use (another Passgate?); stop what "
                    f"listens there, or pick another port with PORT={port + 1 if port < 65535 else 8000}"
                ) from None
            if exc.errno == errno.EACCES:
                raise StartupError(
                    f"port {port} needs privileges this user lacks; pick one above 1023 with PORT=8000"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise StartupError(f"HOST={host} is not an address of this machine") from None
            raise


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what SQLAlchemy wrapped (`orig`) and what caused it, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
    return seen


def explain_database_error(
    exc: BaseException, database_url: str, connect_timeout: float | None = None
) -> str | None:
    """One line saying what is wrong with DATABASE_URL, or None when exc is something else.

    connect_timeout: the DB_CONNECT_TIMEOUT_SECONDS the connection was given, to name it.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        for error in _chain(exc):
            if isinstance(error, sqlite3.OperationalError):
                return (
                    f"DATABASE_URL: cannot open the SQLite database {url.database} ({error}); "
                    "check that its folder exists and this user may write there"
                )
            if isinstance(error, OSError) and error.filename is not None:
                # Making the folder or the migration lock file beside the database failed.
                return (
                    f"DATABASE_URL: cannot create {error.filename} for the SQLite database "
                    f"({error.strerror}); choose a folder this user may write to"
                )
        return None
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    for error in _chain(exc):
        state = getattr(error, "sqlstate", None)
        if state == _MISSING_DATABASE:
            return (
                f'DATABASE_URL: database "{url.database}" does not exist on {where}; '
                f"create it (createdb {url.database}) or fix the name after the last /"
            )
        if state == _UNKNOWN_ROLE:
            return (
                f"DATABASE_URL: PostgreSQL at {where} refused the user: {error}; "
                "fix the name before the @, or create the role"
            )
        if state == _WRONG_PASSWORD:
            return (
                f'DATABASE_URL: PostgreSQL at {where} refused the password of user "{url.username}"; '
                "fix the password in the URL (or PGPASSWORD)"
            )
        if isinstance(error, socket.gaierror):
            return f'DATABASE_URL: host "{url.host}" is not known (a typo in the host name?)'
        if isinstance(error, ConnectionRefusedError):
            return (
                f"DATABASE_URL: nothing accepts connections at {where}; "
                "is PostgreSQL running there, and is that its port?"
            )
        if isinstance(error, TimeoutError | asyncio.TimeoutError):
            waited = (
                f"{connect_timeout:g} s (DB_CONNECT_TIMEOUT_SECONDS)"
                if connect_timeout is not None
                else "DB_CONNECT_TIMEOUT_SECONDS"
            )
            return (
                f"DATABASE_URL: no answer as PostgreSQL from {where} within {waited}; "
                "are the host and port right, and does a firewall let the connection through?"
            )
        if isinstance(error, OSError | ConnectionError) or type(error).__module__.startswith(
            "asyncpg"
        ):
            return (
                f"DATABASE_URL: {where} does not answer as PostgreSQL does ({type(error).__name__}); "
                "is that PostgreSQL's port?"
            )
    return None


async def check_database(database_url: str, connect_timeout: float) -> None:
    """Connect once and run SELECT 1; a StartupError in one line when that fails."""
    engine = create_async_engine(
        database_url,
        connect_args={}
        if make_url(database_url).get_backend_name() == "sqlite"
        else {"timeout": connect_timeout},
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        message = explain_database_error(exc, database_url, connect_timeout)
        if message is None:
            raise
        raise StartupError(message) from None
    finally:
        await engine.dispose()


async def prepare_database(settings: Settings) -> None:
    """Reach the database and, with MIGRATE_ON_START, bring its schema to head; or one line.

    PostgreSQL is tried first within DB_CONNECT_TIMEOUT_SECONDS, so that a wrong host or port
    is one line before Alembic starts; Alembic's own connections have the same deadline.
    """
    timeout = settings.db_connect_timeout_seconds
    if not settings.is_sqlite:
        await check_database(settings.database_url, timeout)
    if settings.migrate_on_start:
        try:
            await upgrade_to_head(settings.database_url, connect_timeout=timeout)
        except Exception as exc:
            message = explain_database_error(exc, settings.database_url, timeout)
            if message is None:
                raise
            raise StartupError(message) from None
