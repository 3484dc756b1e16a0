"""Units of work (app/transactions.py), on SQLite and, with TEST_DATABASE_URL, PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError, OperationalError

from app.db import make_engine, make_sessionmaker, sqlite_path
from app.models import USER_COLUMNS, User, uuid7
from app.transactions import Prepared, Statements, Transactions

INSERT_USER = Prepared.insert(User.__table__)
USER_BY_ID = Prepared(select(*USER_COLUMNS).where(User.id == bindparam("user_id")))


def user_row(email: str) -> dict[str, object]:
    return {
        "id": uuid7(),
        "name": "Ada",
        "email": email,
        "email_normalized": email.lower(),
        "password_hash": "$argon2id$not-a-real-hash",
        "is_active": True,
        "is_admin": False,
        "created_at": dt.datetime(2026, 11, 28, 13, 55, 23, 123456, tzinfo=dt.UTC),
        "credentials_version": 0,
        "email_verified": False,
    }


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[object]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def db(engine) -> AsyncIterator[Transactions]:
    transactions = Transactions(engine)
    yield transactions
    await transactions.close()


async def test_a_unit_that_raises_leaves_nothing_behind(db, engine):
    first, second = user_row("a@example.com"), user_row("b@example.com")

    def insert_two_then_fail(statements: Statements) -> None:
        statements.execute(INSERT_USER, first)
        statements.execute(INSERT_USER, second)
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await db.write(insert_two_then_fail)

    async with make_sessionmaker(engine)() as session:
        assert (await session.scalars(select(User.id))).all() == []


async def test_database_errors_arrive_as_sqlalchemy_errors_without_the_values(db):
    row = user_row("a@example.com")
    await db.write(lambda statements: statements.execute(INSERT_USER, row))
    again = {**row, "id": uuid7()}

    with pytest.raises(IntegrityError) as raised:
        await db.write(lambda statements: statements.execute(INSERT_USER, again))

    assert "not-a-real-hash" not in str(raised.value)


async def test_values_are_stored_and_read_exactly_as_the_orm_does(db, engine):
    written = user_row("a@example.com")
    await db.write(lambda statements: statements.execute(INSERT_USER, written))

    async with make_sessionmaker(engine)() as session:
        orm_user = await session.get(User, written["id"])
        by_orm = {column.key: getattr(orm_user, column.key) for column in USER_COLUMNS}
        orm_written = User(**user_row("b@example.com"))
        session.add(orm_written)
        await session.commit()

    assert by_orm == written
    read_back = await db.read(
        lambda statements: statements.execute(USER_BY_ID, {"user_id": orm_written.id})
    )
    row = read_back.one_or_none()
    assert row.id == orm_written.id
    assert row.created_at == orm_written.created_at
    assert row.created_at.tzinfo is not None
    assert row.is_active is True
    assert row.is_admin is False


async def test_reads_cannot_write(db, engine):
    if sqlite_path(engine.url) is None:
        pytest.skip("the read-only connection is SQLite's; PostgreSQL reads use the pool")
    row = user_row("a@example.com")

    with pytest.raises(OperationalError):
        await db.read(lambda statements: statements.execute(INSERT_USER, row))


async def test_a_cancelled_caller_does_not_stop_the_next_unit(db):
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(statements: Statements) -> int:
        loop.call_soon_threadsafe(started.set)
        statements.execute(USER_BY_ID, {"user_id": uuid.uuid4()})
        return 1

    task = asyncio.create_task(db.read(slow))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await db.read(slow) == 1


async def test_one_writer_per_process_serialises_concurrent_units(db, engine):
    rows = [user_row(f"user-{number}@example.com") for number in range(50)]

    await asyncio.gather(
        *(
            db.write(lambda statements, row=row: statements.execute(INSERT_USER, row))
            for row in rows
        )
    )

    async with make_sessionmaker(engine)() as session:
        stored = (await session.scalars(select(User.email))).all()
    assert sorted(stored) == sorted(row["email"] for row in rows)


async def test_statements_written_with_literal_values_keep_them(db):
    row = user_row("a@example.com")
    await db.write(lambda statements: statements.execute(INSERT_USER, row))
    # The email is a value inside the statement, not a parameter given at execution.
    by_email = Prepared(select(User.id).where(User.email_normalized == "a@example.com"))

    found = await db.read(lambda statements: statements.execute(by_email).one_or_none())

    assert found.id == row["id"]


async def test_point_reads_run_on_the_event_loop_and_see_every_commit(db, engine):
    if sqlite_path(engine.url) is None:
        pytest.skip("on PostgreSQL a point read is a read through the pool")
    row = user_row("a@example.com")
    threads: list[int] = []

    def find(statements: Statements) -> object:
        threads.append(threading.get_ident())
        return statements.execute(USER_BY_ID, {"user_id": row["id"]}).one_or_none()

    assert await db.point_read(find) is None
    await db.write(lambda statements: statements.execute(INSERT_USER, row))
    # The write committed on the writer's connection is seen by the very next point read.
    assert (await db.point_read(find)).email == "a@example.com"
    assert set(threads) == {threading.get_ident()}


async def test_point_reads_cannot_write(db, engine):
    if sqlite_path(engine.url) is None:
        pytest.skip("the read-only connection is SQLite's; PostgreSQL reads use the pool")
    row = user_row("a@example.com")

    with pytest.raises(OperationalError):
        await db.point_read(lambda statements: statements.execute(INSERT_USER, row))
    assert (
        await db.read(
            lambda statements: statements.execute(USER_BY_ID, {"user_id": row["id"]}).one_or_none()
        )
        is None
    )


async def test_a_point_read_sqlite_cannot_start_at_once_waits_on_the_reader_thread(db, engine):
    if sqlite_path(engine.url) is None:
        pytest.skip("only SQLite's point reads run on the event loop")
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def find(statements: Statements) -> object:
        threads.append(threading.get_ident())
        if threading.get_ident() == loop_thread:
            # What the loop's connection raises when SQLite answers SQLITE_BUSY at once (it
            # has no busy timeout): WAL recovery by another process is the real case, and no
            # test can hold SQLite's WAL locks from inside the process under test.
            busy = sqlite3.OperationalError("database is locked")
            busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
            raise OperationalError("SELECT", None, busy)
        return statements.execute(USER_BY_ID, {"user_id": uuid.uuid4()}).one_or_none()

    assert await db.point_read(find) is None
    assert threads[0] == loop_thread and threads[1] != loop_thread
