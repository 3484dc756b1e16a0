"""The lock that serialises migrations of one SQLite file across worker processes."""

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
