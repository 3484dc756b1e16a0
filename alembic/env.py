"""Alembic environment: async, URL from the service's settings, one migrator at a time."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from pathlib import Path

from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from app.config import Settings
from app.db import sqlite_path
from app.files import prepare_sqlite_database
from app.migrate import POSTGRES_MIGRATION_LOCK_KEY, sqlite_migration_lock
from app.models import Base

config = context.config
if config.config_file_name is not None:  # the alembic command line, not the service
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    return config.attributes.get("database_url") or Settings().database_url


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


async def run_async_migrations(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
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
    url = database_url()
    database = sqlite_path(url)
    if database is not None:
        # Before the migration's engine creates the database with SQLite's default mode, 0644.
        prepare_sqlite_database(Path(database))
    with sqlite_migration_lock(url):
        asyncio.run(run_async_migrations(url))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
