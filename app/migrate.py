"""Bringing the schema up to date with the Alembic migrations, from code or the command line."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
from alembic.config import Config
from sqlalchemy.engine import make_url

from alembic import command
from app.files import PRIVATE_FILE_MODE, make_private_dir

# Any constant works, as long as every replica uses the same one.
POSTGRES_MIGRATION_LOCK_KEY = 0x50617373676174  # "Passgat"


def script_location() -> Path:
    """Where the migration scripts are: inside the installed package, or the checkout's alembic/."""
    packaged = Path(__file__).with_name("migrations")  # the wheel copies alembic/ here
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "alembic"


def alembic_config(database_url: str, connect_timeout: float | None = None) -> Config:
    """Alembic's configuration for the service's URL; env.py reads both attributes.

    connect_timeout: seconds to open a PostgreSQL connection (DB_CONNECT_TIMEOUT_SECONDS);
    None for that setting's default.
    """
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["database_url"] = database_url
    config.attributes["connect_timeout"] = connect_timeout
    return config


def upgrade_blocking(
    database_url: str, revision: str = "head", *, connect_timeout: float | None = None
) -> None:
    command.upgrade(alembic_config(database_url, connect_timeout), revision)


def downgrade_blocking(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


async def upgrade_to_head(database_url: str, *, connect_timeout: float | None = None) -> None:
    """Apply pending migrations; safe when several processes start at the same moment.

    Alembic's async env.py runs its own event loop, so it runs in a worker thread.
    """
    await anyio.to_thread.run_sync(
        functools.partial(upgrade_blocking, database_url, connect_timeout=connect_timeout)
    )


@contextlib.contextmanager
def sqlite_migration_lock(database_url: str) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes (PostgreSQL uses an advisory lock)."""
    url = make_url(database_url)
    database = url.database
    # Only a SQLite database is a file; any other URL's database is a name, not a path.
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate-lock")
    make_private_dir(lock_path.parent)
    while True:
        # Read-only is enough for flock, so the file opens whatever the umask left of 0600.
        with os.fdopen(
            os.open(lock_path, os.O_RDONLY | os.O_CREAT, PRIVATE_FILE_MODE)
        ) as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            # The holder before us removes the file as it lets go (below), so that no lock
            # file outlives a migration; if it did, this lock is on a file nobody else will
            # open again: take the one now at the path instead.
            try:
                current = os.stat(lock_path)
            except FileNotFoundError:
                continue
            if not os.path.samestat(current, os.fstat(lock_file.fileno())):
                continue
            try:
                yield
            finally:
                lock_path.unlink(missing_ok=True)
                fcntl.flock(lock_file, fcntl.LOCK_UN)
            return
