"""Alembic environment: async, URL from the service's settings, one migrator at a time."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from app.config import Settings, describe_validation_error
from app.db import enable_wal, sqlite_path
from app.files import prepare_sqlite_database
from app.logs import configure_logging
from app.migrate import POSTGRES_MIGRATION_LOCK_KEY, sqlite_migration_lock
from app.models import Base
from app.startup import explain_database_error

config = context.config
# The alembic command line, not the service (which passes its URL in config.attributes):
# the settings come from the environment, and every mistake is one line, as for the service.
COMMAND_LINE = config.attributes.get("database_url") is None

target_metadata = Base.metadata


def _command_line_settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        sys.exit(f"passgate: invalid configuration: {describe_validation_error(exc)}")
    configure_logging(settings.log_format, level=settings.log_level)
    return settings


def connection_settings() -> tuple[str, float]:
    """DATABASE_URL and DB_CONNECT_TIMEOUT_SECONDS: the service's, or the environment's."""
    url: str | None = config.attributes.get("database_url")
    if url is None:
        settings = _command_line_settings()
        return settings.database_url, settings.db_connect_timeout_seconds
    timeout: float | None = config.attributes.get("connect_timeout")
    if timeout is None:
        timeout = Settings.model_fields["db_connect_timeout_seconds"].default
    return url, timeout


def database_url() -> str:
    return connection_settings()[0]


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    # render_as_batch: SQLite can barely ALTER a table, so changes rebuild it instead.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations(url: str, connect_timeout: float) -> None:
    # asyncpg waits 60 s by default for a server that accepts and never answers (some other
    # service's port) or a host that drops packets; the service's deadline applies here too.
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    engine = create_async_engine(
        url,
        poolclass=pool.NullPool,
        connect_args={} if is_sqlite else {"timeout": connect_timeout},
    )
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together queue here; the first migrates, the rest find
                # nothing to do. The lock ends with the transaction.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_MIGRATION_LOCK_KEY}
                )
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    url, connect_timeout = connection_settings()
    try:
        database = sqlite_path(url)
        if database is not None:
            # Before the migration's engine creates the database with SQLite's default mode.
            prepare_sqlite_database(Path(database))
        with sqlite_migration_lock(url):
            if database is not None:
                # Once, under the lock, before the service opens its connections: they no
                # longer switch the file's mode themselves (app/db.py, enable_wal).
                enable_wal(database)
            asyncio.run(run_async_migrations(url, connect_timeout))
    except Exception as exc:
        message = explain_database_error(exc, url, connect_timeout) if COMMAND_LINE else None
        if message is None:
            raise
        sys.exit(f"passgate: {message}")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
