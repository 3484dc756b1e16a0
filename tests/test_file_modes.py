"""Files only the service may read: the data folder 0700, the database and its companions and
the generated secret 0600, whatever the umask; a warning when an existing database is exposed."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from app.config import load_or_create_secret_key
from app.files import create_private_file, make_private_dir
from app.main import create_app
from app.migrate import upgrade_to_head
from tests.conftest import signup, test_settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


# 000 grants everything mkdir and open ask for; 022 is the usual default (files 0644); 277
# would leave the service files it cannot write.
UMASKS = [0o000, 0o022, 0o277]


@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask {m:03o}")
async def test_the_data_folder_database_and_secret_are_private(tmp_path, mask):
    data = tmp_path / "var" / "data"
    database = data / "app.db"
    settings = test_settings(
        database_url=f"sqlite+aiosqlite:///{database}", migrate_on_start=True, secret_key=None
    )
    with umask(mask):
        app = create_app(settings)
        async with LifespanManager(app):
            async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
                assert (await signup(http)).status_code == 201
            # While the service runs: SQLite's write-ahead log and shared-memory index exist,
            # and the lock file on which writers take turns (app/writer_turns.py).
            companions = [Path(f"{database}{suffix}") for suffix in ("-wal", "-shm", "-writers")]
            assert all(path.exists() for path in companions)
            modes = {path.name: mode(path) for path in [database, *companions]}
        modes["secret_key"] = mode(data / "secret_key")

    assert mode(data) == 0o700
    assert mode(tmp_path / "var") == 0o700  # a parent the service made for it, too
    assert modes == dict.fromkeys(modes, 0o600)
    assert not list(data.glob("*.migrate-lock"))


def test_the_generated_secret_is_private_whatever_the_umask(tmp_path):
    settings = test_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'd' / 'app.db'}")
    settings = settings.model_copy(update={"secret_key": None})
    with umask(0o000):
        assert load_or_create_secret_key(settings)
    assert mode(tmp_path / "d") == 0o700
    assert mode(tmp_path / "d" / "secret_key") == 0o600


@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask {m:03o}")
def test_private_files_are_0600_and_folders_0700(tmp_path, mask):
    with umask(mask):
        folder = make_private_dir(tmp_path / "a" / "b")
        fd = create_private_file(folder / "file")
        assert fd is not None
        os.write(fd, b"written")  # writable, whatever the umask
        os.close(fd)
        assert create_private_file(folder / "file") is None  # made once, never reopened
    assert (mode(tmp_path / "a"), mode(folder), mode(folder / "file")) == (0o700, 0o700, 0o600)


def test_an_existing_folder_keeps_its_mode(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o750)  # noqa: S103  # a group-readable folder an operator chose
    make_private_dir(folder)
    assert mode(folder) == 0o750


async def _upgrade_with_umask(database: Path, mask: int) -> None:
    with umask(mask):
        await upgrade_to_head(f"sqlite+aiosqlite:///{database}")


async def _start(database: Path, caplog) -> list[logging.LogRecord]:
    app = create_app(test_settings(database_url=f"sqlite+aiosqlite:///{database}"))
    with caplog.at_level(logging.WARNING, logger="passgate"):
        async with LifespanManager(app):
            pass
    return [r for r in caplog.records if r.name == "passgate" and r.levelno == logging.WARNING]


async def test_a_database_readable_by_others_is_warned_about_at_start(tmp_path, caplog):
    database = tmp_path / "app.db"
    await _upgrade_with_umask(database, 0o022)
    os.chmod(database, 0o644)  # as SQLite itself created databases before

    warnings = await _start(database, caplog)

    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(database) in message and "chmod 600" in message


async def test_a_private_database_starts_without_a_warning(tmp_path, caplog):
    database = tmp_path / "app.db"
    await _upgrade_with_umask(database, 0o022)
    assert mode(database) == 0o600

    assert await _start(database, caplog) == []
