"""The lock that serialises migrations of one SQLite file across worker processes."""

import threading
import time
from pathlib import Path

import pytest

from app.migrate import sqlite_migration_lock


def test_a_sqlite_database_is_locked_through_a_file_beside_it(tmp_path: Path) -> None:
    with sqlite_migration_lock(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"):
        assert (tmp_path / "app.db.migrate-lock").is_file()


def test_a_postgresql_database_leaves_no_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A replica's working folder may be read-only; its advisory lock lives in PostgreSQL.
    monkeypatch.chdir(tmp_path)
    with sqlite_migration_lock("postgresql+asyncpg://passgate@db:5432/passgate"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_no_lock_file_outlives_the_migration(tmp_path: Path) -> None:
    # A failed start used to leave app.db.migrate-lock behind, beside the database.
    with sqlite_migration_lock(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_processes_waiting_on_a_removed_lock_file_still_take_turns(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    inside = 0
    most_inside = 0
    guard = threading.Lock()

    def migrate() -> None:
        nonlocal inside, most_inside
        for _ in range(20):
            with sqlite_migration_lock(url):
                with guard:
                    inside += 1
                    most_inside = max(most_inside, inside)
                time.sleep(0.001)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most_inside == 1
    assert list(tmp_path.iterdir()) == []
