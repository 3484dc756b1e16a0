"""Connection pool and statement limits: a stuck query ends in a 503 instead of holding on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import bearer, new_user
from tests.conftest import test_settings as make_settings
from tests.keyfiles import serving


@pytest.fixture
async def impatient_client(database_url: str, pg_only: None) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url=database_url, db_statement_timeout_ms=300)
    async with serving(settings) as client:
        yield client


async def test_a_query_stuck_behind_a_lock_gives_503_and_the_service_recovers(
    impatient_client: httpx.AsyncClient, database_url: str
) -> None:
    user = await new_user(impatient_client)
    # A stuck query is a state the API can't produce: another client holds the users table.
    blocker = create_async_engine(database_url)
    try:
        async with blocker.connect() as connection:
            await connection.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
            stuck = await impatient_client.get("/users/me", headers=bearer(user["access_token"]))
            await connection.rollback()
    finally:
        await blocker.dispose()

    after = await impatient_client.get("/users/me", headers=bearer(user["access_token"]))

    assert stuck.status_code == 503
    assert stuck.json() == {"detail": "Service temporarily unavailable"}
    assert "retry-after" in stuck.headers
    assert after.status_code == 200


@pytest.mark.parametrize(
    "values",
    [
        {"db_pool_size": 0},
        {"db_max_overflow": -1},
        {"db_pool_timeout_seconds": 0},
        {"db_statement_timeout_ms": 5},
        {"db_connect_timeout_seconds": -1},
    ],
)
def test_settings_refuse_pool_limits_that_cannot_work(values: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        make_settings(**values)


def test_a_statement_timeout_of_zero_means_no_limit() -> None:
    assert make_settings(db_statement_timeout_ms=0).db_statement_timeout_ms == 0
