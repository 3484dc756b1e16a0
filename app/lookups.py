"""The bearer check's query in one round trip: the code every authenticated request runs.

Revocation is checked in the database on every request (a logout, password change or
deactivation is seen by the very next request, in any process), so this query's cost is the
floor of every protected endpoint. Through an AsyncSession on aiosqlite it costs five hops to
the connection's thread and about a millisecond of CPU (measured with `make bench` and
py-spy); here it is one hop on a dedicated connection, or one pooled Core query elsewhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy import Select, bindparam, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import make_transient_to_detached

from app.db import SQLITE_PRAGMAS, sqlite_path
from app.models import TokenFamily, User

Processor = Callable[[Any], Any] | None

USER_COLUMNS = tuple(User.__table__.columns)


def token_user_query() -> Select[Any]:
    """The active user behind a user id and login (family) id, if that login was not ended."""
    return (
        select(*USER_COLUMNS)
        .join(TokenFamily, TokenFamily.user_id == User.id)
        .where(
            User.id == bindparam("user_id"),
            User.is_active.is_(True),
            TokenFamily.id == bindparam("family_id"),
            TokenFamily.revoked_at.is_(None),
        )
    )


def _detached_user(values: Sequence[Any]) -> User:
    user = User(**{column.key: value for column, value in zip(USER_COLUMNS, values, strict=True)})
    # Detached rather than new: a session it is later added to updates this row, never
    # inserts a second one.
    make_transient_to_detached(user)
    return user


class TokenUserLookup:
    """Finds the active user behind a verified access token whose login still stands."""

    def __init__(self, engine: AsyncEngine, sqlite: aiosqlite.Connection | None) -> None:
        # One statement needs no transaction: without one, asyncpg answers in one round trip
        # instead of three (BEGIN, the query, ROLLBACK). Same pool, same pre-ping.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sqlite = sqlite
        self._query = token_user_query()
        if sqlite is not None:
            self._prepare_raw(engine.dialect)

    @classmethod
    async def open(cls, engine: AsyncEngine) -> TokenUserLookup:
        path = sqlite_path(engine.url)
        if path is None:
            return cls(engine, None)
        connection = await aiosqlite.connect(path)
        for pragma in SQLITE_PRAGMAS:
            await connection.execute(pragma)
        # This connection only ever reads; SQLite enforces it.
        await connection.execute("PRAGMA query_only=ON")
        return cls(engine, connection)

    def _prepare_raw(self, dialect: Dialect) -> None:
        # Compiled once by SQLAlchemy, with the column types' own conversions (UUIDs, UTC
        # datetimes, booleans), so the raw path reads rows exactly as the ORM would.
        compiled = self._query.compile(dialect=dialect)
        self._sql = compiled.string
        self._param_names = tuple(compiled.positiontup or ())
        self._bind_processors: dict[str, Processor] = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in compiled.binds.items()
        }
        self._params_template = compiled.construct_params({"user_id": None, "family_id": None})
        self._result_processors: list[Processor] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in USER_COLUMNS
        ]

    async def find(self, *, user_id: uuid.UUID, family_id: uuid.UUID) -> User | None:
        if self._sqlite is None:
            async with self._engine.connect() as connection:
                result = await connection.execute(
                    self._query, {"user_id": user_id, "family_id": family_id}
                )
                row = result.one_or_none()
            return None if row is None else _detached_user(row)

        values = {**self._params_template, "user_id": user_id, "family_id": family_id}
        params = []
        for name in self._param_names:
            processor = self._bind_processors.get(name)
            params.append(values[name] if processor is None else processor(values[name]))
        # execute_fetchall runs the query and reads its rows in one call on aiosqlite's thread.
        rows = list(await self._sqlite.execute_fetchall(self._sql, params))
        if not rows:
            return None
        return _detached_user(
            [
                value if processor is None else processor(value)
                for processor, value in zip(self._result_processors, rows[0], strict=True)
            ]
        )

    async def close(self) -> None:
        if self._sqlite is not None:
            await self._sqlite.close()
