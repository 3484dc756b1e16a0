"""The hot paths' asyncpg pool on PostgreSQL (app/postgres_units.py): what the engine's pool
with its pre-ping guaranteed, without the pre-ping. Needs TEST_DATABASE_URL.

The server ending the pool's connections (pg_terminate_backend, as a restart or failover does)
stands in for a restart here; tests/test_database_restart.py and `make faults` stop the server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import bindparam, make_url, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import make_engine
from app.models import User
from app.postgres_units import PostgresUnits
from app.transactions import Prepared, Statements, Transactions
from tests.test_transactions import INSERT_USER, USER_BY_ID, user_row


@pytest.fixture
async def db(database_url: str, pg_only: None) -> AsyncIterator[Transactions]:
    engine = make_engine(database_url)
    transactions = Transactions(engine)
    yield transactions
    await transactions.close()
    await engine.dispose()


async def end_the_services_connections(database_url: str) -> int:
    """What a server restart does to the pool: every connection of ours ended by the server."""
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            ended = await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                    "WHERE datname = :name AND application_name = 'passgate' "
                    "AND pid <> pg_backend_pid()"
                ),
                {"name": make_url(database_url).database},
            )
            return len(ended.all())
    finally:
        await admin.dispose()


async def test_the_hot_paths_run_on_the_asyncpg_pool(db: Transactions) -> None:
    assert isinstance(db._postgres, PostgresUnits)


async def test_reads_and_writes_work_again_at_once_after_the_server_ends_the_connections(
    db: Transactions, database_url: str
) -> None:
    first, second = user_row("a@example.com"), user_row("b@example.com")
    await db.write(lambda statements: statements.execute(INSERT_USER, first))
    assert await end_the_services_connections(database_url) >= 1

    # Neither the read nor the write may fail: the first meets the dead connection, if any.
    found = await db.read(
        lambda statements: statements.execute(USER_BY_ID, {"user_id": first["id"]}).one_or_none()
    )
    assert await end_the_services_connections(database_url) >= 1
    await db.write(lambda statements: statements.execute(INSERT_USER, second))

    assert found is not None and found.email == "a@example.com"
    stored = await db.read(
        lambda statements: statements.execute(USER_BY_ID, {"user_id": second["id"]}).one_or_none()
    )
    assert stored is not None


async def test_a_unique_violation_is_sqlalchemys_integrity_error_and_rolls_back(
    db: Transactions,
) -> None:
    row, other = user_row("a@example.com"), user_row("c@example.com")
    await db.write(lambda statements: statements.execute(INSERT_USER, row))

    def insert_other_then_the_same_again(statements: Statements) -> None:
        statements.execute(INSERT_USER, other)
        statements.execute(INSERT_USER, row)

    with pytest.raises(IntegrityError) as raised:
        await db.write(insert_other_then_the_same_again)

    assert row["password_hash"] not in str(raised.value)
    left = await db.read(
        lambda statements: statements.execute(USER_BY_ID, {"user_id": other["id"]}).one_or_none()
    )
    assert left is None


async def test_a_changed_row_count_comes_from_the_command_tag(db: Transactions) -> None:
    deactivate = Prepared(
        update(User).where(User.email == bindparam("email")).values(is_active=False)
    )
    await db.write(lambda statements: statements.execute(INSERT_USER, user_row("a@example.com")))

    changed = await db.write(
        lambda statements: statements.execute(deactivate, {"email": "a@example.com"}).rowcount
    )
    unchanged = await db.write(
        lambda statements: statements.execute(deactivate, {"email": "nobody@example.com"}).rowcount
    )

    assert (changed, unchanged) == (1, 0)


def end_the_services_connections_unseen(database_url: str) -> int:
    """`end_the_services_connections` while this event loop does not run, so that asyncpg has
    not yet seen the sockets close: the next statement meets a connection that died under it."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ended = pool.submit(asyncio.run, end_the_services_connections(database_url)).result()
    time.sleep(0.2)  # holding the loop is the point: meanwhile the server closes them
    return ended


async def test_a_point_read_meeting_a_dead_connection_tries_once_more_on_a_new_one(
    db: Transactions, database_url: str
) -> None:
    # point_read_row runs straight on asyncpg (no unit, no greenlet): it must retry a
    # connection lost under it once, as `read` does; every bearer check after a restart does.
    row = user_row("a@example.com")
    await db.write(lambda statements: statements.execute(INSERT_USER, row))
    assert await db.point_read_row(USER_BY_ID, {"user_id": row["id"]}) is not None
    assert end_the_services_connections_unseen(database_url) >= 1

    found = await db.point_read_row(USER_BY_ID, {"user_id": row["id"]})

    assert found is not None and found.email == "a@example.com"
    assert await db.point_read_row(USER_BY_ID, {"user_id": uuid.uuid4()}) is None
