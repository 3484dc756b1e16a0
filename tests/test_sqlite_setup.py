"""SQLite connections opening together on a freshly migrated database all open.

Each connection used to switch the file to WAL as it opened. Switching takes an exclusive lock,
and SQLite answers a connection whose wait could deadlock with "database is locked" at once,
whatever the busy timeout: seen as a flaky failure when the service's pool and its
unit-of-work threads opened their first connections together. The migration now sets WAL once,
under its lock, and a connection's own setup touches nothing in the file.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

from app.db import SQLITE_BUSY_TIMEOUT_MS, configure_sqlite_connection
from app.migrate import upgrade_blocking

# Connections opening at once, and how many fresh copies of the database they open: enough
# that the old setup failed in most runs of this test.
OPENING_TOGETHER = 8
ROUNDS = 100


def migrated(folder: Path) -> Path:
    database = folder / "migrated.db"
    upgrade_blocking(f"sqlite+aiosqlite:///{database}")
    return database


def test_the_migration_leaves_the_database_in_wal_mode(tmp_path: Path) -> None:
    database = migrated(tmp_path)

    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def open_as_the_service_does(database: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(
        database, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
    )
    configure_sqlite_connection(connection, None)
    return connection


def test_a_connection_opens_and_reads_while_another_holds_the_write_lock(tmp_path: Path) -> None:
    # Switching the journal mode at open needed the exclusive lock: under a writer, the opening
    # connection waited out the busy timeout and failed. Now it neither waits nor fails.
    database = migrated(tmp_path)
    writer = sqlite3.connect(database, isolation_level=None)  # any writer: another process's
    writer.execute("BEGIN IMMEDIATE")
    try:
        reader = open_as_the_service_does(database)
        try:
            assert reader.execute("SELECT count(*) FROM users").fetchone() == (0,)
        finally:
            reader.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def open_together(database: Path) -> list[str]:
    """Open connections as the service does, all at the same moment; the errors they met."""
    barrier = threading.Barrier(OPENING_TOGETHER)
    errors: list[str] = []

    def open_and_read() -> None:
        connection = sqlite3.connect(
            database, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
        )
        try:
            barrier.wait()
            configure_sqlite_connection(connection, None)
            connection.execute("SELECT count(*) FROM users").fetchone()
        except sqlite3.OperationalError as exc:
            errors.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=open_and_read) for _ in range(OPENING_TOGETHER)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_connections_opening_together_on_a_fresh_database_all_open(tmp_path: Path) -> None:
    template = migrated(tmp_path)
    errors: list[str] = []
    for round_number in range(ROUNDS):
        # A copy of the file as the migration left it, opened for the first time.
        database = tmp_path / f"copy-{round_number}.db"
        shutil.copyfile(template, database)
        errors += open_together(database)
    assert errors == []
