"""SQLite writers of several processes take turns on one lock file (app/writer_turns.py).

A turn held by another open file stands for another worker in the middle of its write: the
service's writes wait for it, in the writer's thread, while the event loop goes on answering
reads, and run the moment it ends. The kernel shows the waiting writer in /proc/locks, so the
tests know it waits instead of guessing from a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from app.main import create_app
from app.writer_turns import WriterTurns
from tests.conftest import bearer, login, signup, test_settings


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "data" / "passgate.db"


@pytest.fixture
async def sqlite_app(database: Path) -> AsyncIterator[FastAPI]:
    # SQLite whatever TEST_DATABASE_URL says: the turns are SQLite's alone.
    settings = test_settings(database_url=f"sqlite+aiosqlite:///{database}", migrate_on_start=True)
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def http(sqlite_app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=sqlite_app), base_url="http://t") as client:
        yield client


@contextlib.contextmanager
def another_writers_turn(lock_file: Path) -> Iterator[None]:
    """Hold a turn as another worker would: flock() on an open file of our own."""
    fd = os.open(lock_file, os.O_RDONLY | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # gives the turn back


def flock_waiters(lock_file: Path) -> int:
    """Processes or threads blocked in flock() on the file, as /proc/locks lists them ("->")."""
    inode = lock_file.stat().st_ino
    waiting = 0
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields:
            device_and_inode = fields[fields.index("->") + 5]
            if int(device_and_inode.rsplit(":", 1)[1]) == inode:
                waiting += 1
    return waiting


async def until_a_writer_waits(lock_file: Path) -> None:
    async with asyncio.timeout(30):  # raises TimeoutError if no writer ever comes to wait
        while flock_waiters(lock_file) == 0:  # noqa: ASYNC110 - polls the kernel's lock table
            await asyncio.sleep(0.01)


async def test_a_write_waits_for_the_turn_another_writer_holds(http, database):
    first = await signup(http)
    assert first.status_code == 201
    token = (await login(http, first.json()["email"])).json()["access_token"]
    lock_file = Path(f"{database}-writers")
    assert flock_waiters(lock_file) == 0  # the service's writer made it with its first write

    with another_writers_turn(lock_file):
        second = asyncio.create_task(signup(http))
        await until_a_writer_waits(lock_file)
        assert not second.done()
        # Waiting is the writer thread's: the event loop still answers the bearer check.
        me = await http.get("/users/me", headers=bearer(token))
        assert me.status_code == 200
        assert not second.done()

    response = await second
    assert response.status_code == 201
    assert (await login(http, response.json()["email"])).status_code == 200
    assert flock_waiters(lock_file) == 0


async def test_writes_work_where_the_lock_file_cannot_be_made(database, caplog):
    database.parent.mkdir(parents=True)
    (database.parent / "passgate.db-writers").mkdir()  # a folder where the file would go
    settings = test_settings(database_url=f"sqlite+aiosqlite:///{database}", migrate_on_start=True)
    application = create_app(settings)
    with caplog.at_level(logging.WARNING, logger="passgate.db"):
        async with LifespanManager(application):
            transport = ASGITransport(app=application)
            async with AsyncClient(transport=transport, base_url="http://t") as client:
                response = await signup(client)
                assert response.status_code == 201
                assert (await login(client, response.json()["email"])).status_code == 200
    assert any("no writer turns" in record.getMessage() for record in caplog.records)


def test_a_file_system_without_flock_leaves_sqlite_s_lock_alone_to_decide(
    tmp_path, monkeypatch, caplog
):
    # No file system here refuses flock(); NFS mounted without locking does (ENOLCK).
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    turns = WriterTurns(str(tmp_path / "passgate.db"))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    entered = []
    with caplog.at_level(logging.WARNING, logger="passgate.db"):
        with turns.turn():
            entered.append(1)
        with turns.turn():  # given up once: no second warning, no second try
            entered.append(2)
    assert entered == [1, 2]
    assert [record.getMessage() for record in caplog.records] == [
        f"no writer turns for {tmp_path / 'passgate.db-writers'}: {os.strerror(errno.ENOLCK)}"
    ]
