"""The database: declarative base, engine factory, per-request sessions, UTC timestamps."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from app.config import Settings
from app.files import prepare_sqlite_database

# Seconds the client waits beyond the server's statement timeout before abandoning a query.
COMMAND_TIMEOUT_MARGIN_SECONDS = 5.0

# Statement parameters never appear in exception messages or logs: they hold password hashes,
# refresh-token hashes and emails, and a database error's text can end up in a log line.
HIDE_PARAMETERS = True

# Seconds a SQLite writer waits for the lock before giving up with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000

# Named constraints, so that migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every database.

    SQLite hands back naive datetimes; this re-attaches UTC so comparisons never mix naive and
    aware values, and refuses naive input so local times can't sneak in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# Every connection's own settings, none of which touches the file (so none can meet a lock):
# the busy timeout first, which makes a second writer wait for the lock instead of failing;
# foreign keys are off by default in SQLite and ON DELETE CASCADE needs them; NORMAL is durable
# across application crashes (kill -9) in WAL mode, though not across a power loss of the
# machine. WAL itself is a property of the file, set once by enable_wal.
SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)

# SQLite lets one connection write at a time; the others wait in its busy handler, which
# sleeps up to 100 ms between tries, so the more connections write at once, the longer the
# unlucky ones wait: with 16 pooled connections `make bench` saw refresh rotations (W6) at a
# p99 of 3 s with a p50 of 16 ms, and 2 s for logins; with 2, about 130 ms for both, at the
# same or better throughput (reads included: one event loop gains nothing from more). Waiting
# requests queue for a connection in arrival order instead. Two rather than one, so that a
# write waiting for another process's lock does not hold up every read of this one. The hot
# paths (bearer check, login, signup, refresh) have their own reader and writer connections
# (app/transactions.py), so they never queue here.
SQLITE_POOL_SIZE = 2
SQLITE_MAX_OVERFLOW = 0


def configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def enable_wal(database: str | Path) -> str:
    """Put a SQLite file in WAL mode (readers work while one writer writes); the mode it is in.

    Once per file, not per connection: the mode is stored in the file, and switching to it
    takes an exclusive lock. Connections that each asked for it as they opened a fresh database
    together made SQLite answer one of them "database is locked" at once, busy timeout or not
    (it does not wait where waiting could deadlock). The migration asks under its lock, before
    any other connection exists (alembic/env.py). Blocking: call it outside the event loop.
    """
    prepare_sqlite_database(Path(database))  # private before SQLite may create it
    connection = sqlite3.connect(
        database, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
    )
    try:
        return str(connection.execute("PRAGMA journal_mode=WAL").fetchone()[0])
    finally:
        connection.close()


def sqlite_path(url: str | URL) -> str | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


def _default(setting: str) -> Any:
    return Settings.model_fields[setting].default


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How a server database's connections are pooled and bounded; see Settings.db_*.

    The defaults are Settings' own, so an engine made without settings (the CLI, tests) is
    pooled exactly as the service's is by default.
    """

    size: int = _default("db_pool_size")
    max_overflow: int = _default("db_max_overflow")
    timeout_seconds: float = _default("db_pool_timeout_seconds")
    recycle_seconds: int = _default("db_pool_recycle_seconds")
    statement_timeout_ms: int = _default("db_statement_timeout_ms")
    connect_timeout_seconds: float = _default("db_connect_timeout_seconds")

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolSettings:
        return cls(
            size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            timeout_seconds=settings.db_pool_timeout_seconds,
            recycle_seconds=settings.db_pool_recycle_seconds,
            statement_timeout_ms=settings.db_statement_timeout_ms,
            connect_timeout_seconds=settings.db_connect_timeout_seconds,
        )


def postgres_connect_args(pool: PoolSettings) -> dict[str, Any]:
    """asyncpg options that keep one stuck query or unreachable server from holding a worker."""
    args: dict[str, Any] = {
        "timeout": pool.connect_timeout_seconds,
        "server_settings": {"application_name": "passgate"},
    }
    if pool.statement_timeout_ms:
        # The server cancels the statement; the client gives up a little later in case the
        # server itself is stuck (a cancel that never arrives, a network that went silent).
        args["server_settings"]["statement_timeout"] = str(pool.statement_timeout_ms)
        args["command_timeout"] = pool.statement_timeout_ms / 1000 + COMMAND_TIMEOUT_MARGIN_SECONDS
    return args


def make_engine(database_url: str, pool: PoolSettings | None = None) -> AsyncEngine:
    """An engine for the URL; on SQLite, with the pragmas concurrent use needs."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            prepare_sqlite_database(Path(url.database))
        engine = create_async_engine(
            url,
            hide_parameters=HIDE_PARAMETERS,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_MAX_OVERFLOW,
        )
        event.listen(engine.sync_engine, "connect", configure_sqlite_connection)
        return engine
    pool = pool or PoolSettings()
    return create_async_engine(
        url,
        hide_parameters=HIDE_PARAMETERS,
        # A connection checked out after the server restarted is tested and replaced, so the
        # first requests after a database restart succeed instead of failing on a dead socket.
        pool_pre_ping=True,
        pool_size=pool.size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.timeout_seconds,
        pool_recycle=pool.recycle_seconds,
        connect_args=(
            postgres_connect_args(pool) if url.get_backend_name() == "postgresql" else {}
        ),
    )


# SQLSTATE classes and codes that mean "the database is away or busy", not "the query is wrong":
# 08 connection exception, 53 insufficient resources (too many connections), 57014 statement
# timeout, 57P01-57P03 server shutting down or starting up.
UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57014", "57P0")


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether an exception means the database can't serve us right now (so: 503, try later)."""
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        return (
            exc.connection_invalidated
            or isinstance(exc, OperationalError)
            or sqlstate.startswith(UNAVAILABLE_SQLSTATE_PREFIXES)
        )
    # A full pool, a server that refuses or drops connections (asyncpg raises these raw), and
    # asyncpg's command timeout.
    return isinstance(exc, (PoolTimeoutError, OSError, TimeoutError))


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; services commit their own unit of work."""
    async with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
