"""The hot paths' units of work on PostgreSQL: asyncpg connections of their own, no engine.

Through the engine's pool every unit cost about 0.9 ms of event-loop CPU, measured in-process
per bearer check: the checkout, its pre-ping round trip, `AsyncConnection.run_sync`, Core's
execution and result machinery, and the pool's reset at check-in. With PostgreSQL on its own
core (`make bench`), that CPU is what capped W1 and what the hashing threads lacked in W3. Here
a unit runs on an asyncpg connection of its own (a few, kept open: `_Connections`), executing
each `Prepared` statement as asyncpg's cached server-side prepared statement.

What the engine's pool did for outages, and how it is done here:

- pre-ping: a server that stops or restarts ends its backends, and asyncpg sees the socket
  close and marks the connection closed; a closed connection is never handed out again, a new
  one is opened instead. A read that still meets a connection lost under it is tried once more on a
  fresh connection (it changes nothing, so the retry is safe), and so is a write whose
  connection was found dead at BEGIN; a write that lost its connection later is not (its
  COMMIT may have been applied): it answers 503 like any unavailable database.
- timeouts: the same connect timeout, server-side statement timeout and client command
  timeout (app.db.postgres_connect_args), and the pool's wait for a free connection.
- errors: asyncpg's exceptions become SQLAlchemy's classes (IntegrityError for a unique index,
  OperationalError for a connection lost or a server away), never with the parameters in their
  text, so callers and the 503 handler treat them as the engine's own.

The units stay plain functions (as on SQLite's thread): they run in a greenlet, as under
`run_sync`, and each statement awaits asyncpg from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import (
    DatabaseError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.util.concurrency import await_, greenlet_spawn

from app.db import UNAVAILABLE_SQLSTATE_PREFIXES, PoolSettings, postgres_connect_args
from app.transactions import Prepared, Result, _Compiled

T = TypeVar("T")
Work = Callable[[Any], T]

# SQLAlchemy's own URL options that asyncpg.connect does not take.
_SQLALCHEMY_ONLY_OPTIONS = ("prepared_statement_cache_size",)
_ASYNCPG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError)
_BEGIN = "BEGIN"


def database_error(sql: str, exc: Exception, connection_lost: bool) -> DBAPIError:
    """The SQLAlchemy exception the engine would have raised for asyncpg's `exc`."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    kind: type[DBAPIError]
    if connection_lost or sqlstate.startswith(UNAVAILABLE_SQLSTATE_PREFIXES):
        kind = OperationalError
    elif isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        kind = IntegrityError
    elif isinstance(exc, asyncpg.SyntaxOrAccessError):
        kind = ProgrammingError
    elif isinstance(exc, asyncpg.InterfaceError):
        kind = InterfaceError
    else:
        kind = DatabaseError
    return kind(sql, None, exc, hide_parameters=True, connection_invalidated=connection_lost)


def _changed_rows(status: str) -> int:
    """The row count of a command tag: 'UPDATE 3', 'DELETE 0', 'INSERT 0 1'."""
    count = status.rsplit(" ", 1)[-1]
    return int(count) if count.isdigit() else -1


class _AsyncpgStatements:
    """`Statements` on one asyncpg connection, called from the unit's greenlet."""

    def __init__(self, connection: asyncpg.Connection, dialect: Dialect) -> None:
        self._connection = connection
        self._dialect = dialect

    def execute(self, prepared: Prepared, params: dict[str, Any] | None = None) -> Result:
        compiled = prepared.compiled_for(self._dialect)
        arguments = compiled.arguments(params or {})
        if compiled.row_type is not None:
            return await_(_fetch(self._connection, compiled, arguments))
        try:
            status = await_(self._connection.execute(compiled.sql, *arguments))
        except _ASYNCPG_ERRORS as exc:
            raise database_error(compiled.sql, exc, self._connection.is_closed()) from exc
        return Result([], _changed_rows(status))


async def _fetch(
    connection: asyncpg.Connection, compiled: _Compiled, arguments: list[Any]
) -> Result:
    """The rows of one statement on `connection`, asyncpg's errors as SQLAlchemy's."""
    try:
        raw_rows = await connection.fetch(compiled.sql, *arguments)
    except _ASYNCPG_ERRORS as exc:
        raise database_error(compiled.sql, exc, connection.is_closed()) from exc
    return Result([compiled.row(raw) for raw in raw_rows], len(raw_rows))


class _Connections:
    """Up to `size` asyncpg connections, opened as needed, the most recently used reused first.

    Not asyncpg's Pool: per acquire and release it costs a proxy object, a task for
    `wait_for`, another for `shield`, timer callbacks and a reset query, together more CPU than
    the bearer check's query itself. Units leave no session state behind (no SET, LISTEN or
    advisory lock; each transaction ends in COMMIT or ROLLBACK), so a connection whose unit
    ended normally or with a server's error is handed on as it is; any other ending (cancelled,
    timed out, connection trouble) closes it.
    """

    def __init__(self, connect: Callable[[], Any], pool: PoolSettings) -> None:
        self._connect = connect
        self._wait_seconds = pool.timeout_seconds
        self._idle_seconds = pool.recycle_seconds
        self._slots = asyncio.Semaphore(pool.size)
        self._idle: list[tuple[asyncpg.Connection, float]] = []
        self._closed = False

    async def acquire(self) -> asyncpg.Connection:
        if self._slots.locked():  # all in use: wait, as long as the engine's pool would
            async with asyncio.timeout(self._wait_seconds):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        try:
            now = time.monotonic()
            while self._idle:
                connection, released_at = self._idle.pop()
                if connection.is_closed():
                    continue  # ended by the server (a restart): asyncpg saw the socket close
                if now - released_at > self._idle_seconds:
                    connection.terminate()  # a firewall may have dropped it silently
                    continue
                return connection
            connection = await self._connect()
            assert isinstance(connection, asyncpg.Connection)
            return connection
        except BaseException:
            self._slots.release()
            raise

    def release(self, connection: asyncpg.Connection, *, reusable: bool) -> None:
        if reusable and not self._closed and not connection.is_closed():
            if connection.is_in_transaction():  # never left so by a unit; no guessing
                connection.terminate()
            else:
                self._idle.append((connection, time.monotonic()))
        elif not connection.is_closed():
            connection.terminate()
        self._slots.release()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            with contextlib.suppress(*_ASYNCPG_ERRORS, OSError, TimeoutError):
                await connection.close(timeout=2)


def _reusable_after(exc: BaseException | None) -> bool:
    """Whether a connection may serve the next unit after its unit ended with `exc`."""
    if exc is None:
        return True
    if isinstance(exc, DBAPIError):  # the server answered with an error: the connection is fine
        return isinstance(exc.orig, asyncpg.PostgresError) and not exc.connection_invalidated
    # The unit's own exceptions; not a cancellation, a timeout or a socket error, which can
    # leave a query running on the connection.
    return isinstance(exc, Exception) and not isinstance(exc, (TimeoutError, OSError))


async def _in_transaction(
    connection: asyncpg.Connection, work: Work[T], statements: _AsyncpgStatements
) -> T:
    transaction = connection.transaction()
    try:
        await transaction.start()
    except _ASYNCPG_ERRORS as exc:
        raise database_error(_BEGIN, exc, connection.is_closed()) from exc
    try:
        result = await greenlet_spawn(work, statements)
    except Exception:
        # The unit's own error is the one to report; a connection that cannot even roll back
        # is closed at release. (A cancelled unit's connection is closed there, unrolled.)
        with contextlib.suppress(*_ASYNCPG_ERRORS, OSError, TimeoutError):
            if not connection.is_closed():
                await transaction.rollback()
        raise
    try:
        await transaction.commit()
    except _ASYNCPG_ERRORS as exc:
        raise database_error("COMMIT", exc, connection.is_closed()) from exc
    return result


async def _once_more_if_lost(read: Callable[[], Awaitable[T]]) -> T:
    """A read, run again on a new connection if its connection died under it (a restarted
    server): it changes nothing, so the second try is safe."""
    try:
        return await read()
    except OperationalError as exc:
        if not exc.connection_invalidated:
            raise
    return await read()


class PostgresUnits:
    """Runs units of work on asyncpg connections: `write` in a transaction, `read` without one."""

    def __init__(self, url: URL, dialect: Dialect, pool: PoolSettings) -> None:
        _, options = dialect.create_connect_args(url)
        for name in _SQLALCHEMY_ONLY_OPTIONS:
            options.pop(name, None)
        options.update(postgres_connect_args(pool))
        self._dialect = dialect
        # Nothing connects until a unit needs it, so a service that starts while the database
        # is away starts, and answers 503 until it is back.
        self._connections = _Connections(lambda: asyncpg.connect(**options), pool)

    async def _on_connection(self, use: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`use` a pooled connection, handed back afterwards as `_reusable_after` its ending."""
        try:
            connection = await self._connections.acquire()
        except _ASYNCPG_ERRORS as exc:
            # A server starting, stopping or full answers with its SQLSTATE: 503 by that.
            raise database_error("connect", exc, connection_lost=False) from exc
        failure: BaseException | None = None
        try:
            return await use(connection)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._connections.release(connection, reusable=_reusable_after(failure))

    async def _run(self, work: Work[T], *, transaction: bool) -> T:
        def unit(connection: asyncpg.Connection) -> Awaitable[T]:
            statements = _AsyncpgStatements(connection, self._dialect)
            if not transaction:
                return greenlet_spawn(work, statements)
            return _in_transaction(connection, work, statements)

        return await self._on_connection(unit)

    async def write(self, work: Work[T]) -> T:
        try:
            return await self._run(work, transaction=True)
        except OperationalError as exc:
            # Only a connection found dead at BEGIN is safe to try again: nothing was sent.
            if not (exc.connection_invalidated and exc.statement == _BEGIN):
                raise
        return await self._run(work, transaction=True)

    async def read(self, work: Work[T]) -> T:
        return await _once_more_if_lost(lambda: self._run(work, transaction=False))

    async def fetch_row(self, prepared: Prepared, params: dict[str, Any]) -> Any | None:
        """The one row (or None) a statement that only reads gives: `read` of a unit that
        runs one statement, straight on asyncpg. No unit, no greenlet: about 50 us less of the
        event loop's CPU per bearer check, on the service's one core (W1)."""
        compiled = prepared.compiled_for(self._dialect)
        arguments = compiled.arguments(params)
        found = await _once_more_if_lost(
            lambda: self._on_connection(lambda connection: _fetch(connection, compiled, arguments))
        )
        return found.one_or_none()

    async def close(self) -> None:
        await self._connections.close()
