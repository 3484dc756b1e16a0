"""Alembic: the migrations build what the models describe, and go down and up again."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.migrate import downgrade_blocking, upgrade_blocking
from app.models import Base


async def _schema_differences(url: str) -> list:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    await engine.dispose()
    return diff


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await engine.dispose()
    return names


async def test_upgrade_builds_what_the_models_describe(empty_database_url):
    await asyncio.to_thread(upgrade_blocking, empty_database_url)

    assert await _schema_differences(empty_database_url) == []


async def test_downgrade_to_base_and_upgrade_again(empty_database_url):
    await asyncio.to_thread(upgrade_blocking, empty_database_url)
    await asyncio.to_thread(downgrade_blocking, empty_database_url, "base")

    assert await _tables(empty_database_url) <= {"alembic_version"}

    await asyncio.to_thread(upgrade_blocking, empty_database_url)
    assert {"users", "token_families", "refresh_tokens", "outbox", "one_time_tokens"} <= (
        await _tables(empty_database_url)
    )
    assert await _schema_differences(empty_database_url) == []


async def test_each_revision_downgrades_one_step_and_upgrades_again(empty_database_url):
    from alembic.script import ScriptDirectory

    from app.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config(empty_database_url))
    revisions = [revision.revision for revision in script.walk_revisions()]  # head first
    await asyncio.to_thread(upgrade_blocking, empty_database_url)

    for below in [*revisions[1:], "base"]:
        await asyncio.to_thread(downgrade_blocking, empty_database_url, "-1")
        await asyncio.to_thread(upgrade_blocking, empty_database_url, "+1")
        await asyncio.to_thread(downgrade_blocking, empty_database_url, "-1")
        assert await _current_revision(empty_database_url) == (None if below == "base" else below)

    assert await _tables(empty_database_url) <= {"alembic_version"}


async def _current_revision(url: str) -> str | None:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        revision = await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    await engine.dispose()
    return revision


async def test_the_service_migrates_an_empty_database_on_start(empty_database_url):
    import httpx
    from asgi_lifespan import LifespanManager

    from app.main import create_app
    from tests.conftest import signup, test_settings

    app = create_app(test_settings(database_url=empty_database_url, migrate_on_start=True))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await signup(client)).status_code == 201
