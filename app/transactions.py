"""The hot paths' database access: each unit of work one trip to the database.

The bearer check, logins, signups and refresh rotations run on every request that matters, and
their cost in event-loop CPU caps the service. Through an AsyncSession on aiosqlite every
statement, flush and commit was a hop to the connection's thread and back, and the ORM's unit
of work cost about 6 ms of CPU per login (`make bench` W3, py-spy and per-thread CPU counts):
CPU that the password-hashing threads then lacked. So these paths use units of work instead:

- a unit is a plain function of `Statements`, which executes `Prepared` statements: SQLAlchemy
  Core statements, compiled once, written once for every database;
- on a SQLite file a unit runs whole on a thread that owns a plain `sqlite3` connection: one
  hop per unit, and the statements cost what SQLite costs. Parameters and rows go through the
  column types' own conversions, so what is stored is exactly what the ORM stores and reads;
- on PostgreSQL through asyncpg it runs on an asyncpg pool of its own, each statement a cached
  server-side prepared statement (app/postgres_units.py): one round trip per statement;
- elsewhere it runs on the engine's pool through `AsyncConnection.run_sync`, one round trip
  per statement, with the pool's pre-ping and the statement timeout.

Writes of one process queue in order on one SQLite connection instead of racing each other in
SQLite's busy handler, which sleeps between tries. Errors arrive as SQLAlchemy's exception
classes on every database, so IntegrityError and the 503 handling work the same everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import Connection, Executable, Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import Select

from app.db import SQLITE_BUSY_TIMEOUT_MS, PoolSettings, configure_sqlite_connection, sqlite_path
from app.writer_turns import WriterTurns

if TYPE_CHECKING:
    from app.postgres_units import PostgresUnits

T = TypeVar("T")
Processor = Callable[[Any], Any] | None


class Prepared:
    """A Core statement, compiled once per dialect together with its value conversions."""

    def __init__(
        self,
        statement: Executable,
        *,
        column_keys: Sequence[str] | None = None,
        row_type: type[tuple[Any, ...]] | None = None,
    ) -> None:
        """`row_type`: a NamedTuple class to read rows into (else one named after the columns)."""
        self.statement = statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._row_type = row_type
        self._compiled: dict[str, _Compiled] = {}

    @property
    def row_type(self) -> type[tuple[Any, ...]] | None:
        return self._row_type

    @classmethod
    def insert(cls, table: Table) -> Prepared:
        """INSERT of one row that gives every column of the table."""
        return cls(insert(table), column_keys=[column.key for column in table.columns])

    def compiled_for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = _Compiled.build(
                self.statement, dialect, self._column_keys, self._row_type
            )
        return compiled


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    param_names: tuple[str, ...]
    param_processors: tuple[Processor, ...]
    param_template: dict[str, Any]
    result_processors: tuple[Processor, ...]
    row_type: type[tuple[Any, ...]] | None

    @classmethod
    def build(
        cls,
        statement: Executable,
        dialect: Dialect,
        column_keys: list[str] | None,
        row_type: type[tuple[Any, ...]] | None,
    ) -> _Compiled:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        names = tuple(compiled.positiontup or ())
        columns = _returned_columns(statement)
        if row_type is not None and tuple(row_type._fields) != tuple(c.key for c in columns):  # type: ignore[attr-defined]
            raise ValueError(f"{row_type.__name__} does not match the statement's columns")
        return cls(
            sql=compiled.string,
            param_names=names,
            param_processors=tuple(
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in names
            ),
            # Values the statement carries itself; the caller's parameters go over them.
            param_template=compiled.construct_params(
                {name: None for name, bind in compiled.binds.items() if bind.required}
            ),
            result_processors=tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in columns
            ),
            row_type=(
                (row_type or namedtuple("Row", [column.key for column in columns], rename=True))
                if columns
                else None
            ),
        )

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        values = {**self.param_template, **params}
        return [
            values[name] if processor is None else processor(values[name])
            for name, processor in zip(self.param_names, self.param_processors, strict=True)
        ]

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        assert self.row_type is not None
        return self.row_type(
            *[
                value if processor is None else processor(value)
                for processor, value in zip(self.result_processors, raw, strict=True)
            ]
        )


def _returned_columns(statement: Executable) -> list[Any]:
    if isinstance(statement, Select):
        return list(statement.selected_columns)
    if isinstance(statement, UpdateBase):
        return list(statement.exported_columns)  # the RETURNING clause, if any
    return []


@dataclass(slots=True)
class Result:
    """What one statement gave: its rows (for SELECT and RETURNING) and the rows it changed."""

    rows: list[Any]
    rowcount: int

    def one_or_none(self) -> Any | None:
        if len(self.rows) > 1:
            raise ValueError("more than one row")
        return self.rows[0] if self.rows else None


class Statements(Protocol):
    """What a unit of work gets: a way to execute prepared statements, and nothing else."""

    def execute(self, prepared: Prepared, params: dict[str, Any] | None = None) -> Result: ...


Work = Callable[[Statements], T]
# What a unit's thread is handed: the caller's loop and future, and the work.
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Work[Any]]


class _SqliteStatements:
    def __init__(self, connection: sqlite3.Connection, dialect: Dialect) -> None:
        self._connection = connection
        self._dialect = dialect

    @property
    def connection(self) -> sqlite3.Connection:
        return self._connection

    def execute(self, prepared: Prepared, params: dict[str, Any] | None = None) -> Result:
        compiled = prepared.compiled_for(self._dialect)
        try:
            cursor = self._connection.execute(compiled.sql, compiled.arguments(params or {}))
            raw_rows = cursor.fetchall() if compiled.row_type is not None else []
        except sqlite3.Error as exc:
            raise _sqlalchemy_error(compiled.sql, exc) from exc
        return Result([compiled.row(raw) for raw in raw_rows], cursor.rowcount)


class _CoreStatements:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def execute(self, prepared: Prepared, params: dict[str, Any] | None = None) -> Result:
        result = self._connection.execute(prepared.statement, params or {})
        if not result.returns_rows:
            return Result([], result.rowcount)
        row_type = prepared.row_type
        rows = [row_type(*row) if row_type else row for row in result.all()]
        return Result(rows, result.rowcount)


def _sqlalchemy_error(sql: str, exc: sqlite3.Error) -> DBAPIError:
    # The same classes the engine raises (IntegrityError, OperationalError...), never with the
    # parameters in their text: those can be a password hash or a refresh token's hash.
    return DBAPIError.instance(sql, None, exc, sqlite3.Error, hide_parameters=True)


class _SqliteThread:
    """One plain sqlite3 connection and the one thread that uses it: the writer runs each unit
    in a transaction; the reader's connection is query-only and runs units without one.

    A hop here is a queue put and a wake-up of the event loop: cheaper than an executor's
    futures, and the thread drains whatever queued while it worked without sleeping.
    """

    def __init__(self, path: str, dialect: Dialect, *, name: str, writer: bool) -> None:
        self._path = path
        self._dialect = dialect
        self._writer = writer
        # The writer waits for its turn with the other processes' writers (app/writer_turns.py).
        self._turns = WriterTurns(path) if writer else None
        self._queue: SimpleQueue[_Job | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, work: Work[T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, work))
        return await future

    async def open_loop_connection(self) -> sqlite3.Connection:
        """Another query-only connection, opened on this thread, for the event loop to use."""

        def open_connection(_: Statements) -> sqlite3.Connection:
            connection = self._connect(check_same_thread=False)
            # Never wait in the busy handler: on the event loop that would be a sleep. A read
            # that SQLite cannot start at once goes to the reader thread instead (point_read).
            connection.execute("PRAGMA busy_timeout=0")
            return connection

        return await self.run(open_connection)

    def _connect(self, *, check_same_thread: bool = True) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; units say BEGIN and COMMIT themselves.
        connection = sqlite3.connect(
            self._path,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=check_same_thread,
        )
        # SQLite can answer "database is locked" to the connection's first statements without
        # waiting in its busy handler (while another connection opens or recovers the WAL), as
        # seen under a loaded test run. This is the connection's own thread, so waiting here
        # blocks nothing; the busy timeout bounds the wait as it bounds every other one.
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                configure_sqlite_connection(connection, None)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    connection.close()
                    raise
                time.sleep(0.01)
        if not self._writer:
            connection.execute("PRAGMA query_only=ON")  # this connection never writes
        return connection

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None
        statements: _SqliteStatements | None = None
        while (job := self._queue.get()) is not None:
            loop, future, work = job
            try:
                if connection is None:
                    connection = self._connect()
                    statements = _SqliteStatements(connection, self._dialect)
                assert statements is not None
                if self._turns is not None:
                    with self._turns.turn():
                        result = _write_transaction(connection, statements, work)
                else:
                    result = work(statements)  # each statement is its own read transaction
            except BaseException as exc:  # handed to the awaiting coroutine, whatever it is
                _deliver(loop, future, None, exc)
            else:
                _deliver(loop, future, result, None)
        if connection is not None:
            connection.close()
        if self._turns is not None:
            self._turns.close()

    async def close(self) -> None:
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exception: BaseException | None,
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, exception)
    except RuntimeError:  # the loop closed while the unit ran: nobody is waiting any more
        pass


def _settle(future: asyncio.Future[Any], result: Any, exception: BaseException | None) -> None:
    if future.cancelled():  # the request went away while its unit ran
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


# SQLITE_BUSY and SQLITE_LOCKED, whatever their extended code (SQLITE_BUSY_RECOVERY...).
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _is_busy(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _BUSY_CODES


def _write_transaction(connection: sqlite3.Connection, statements: Statements, work: Work[T]) -> T:
    # IMMEDIATE takes the write lock now (waiting in the busy handler if another process
    # holds it), so a unit that reads and then writes never fails to upgrade its lock.
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise _sqlalchemy_error("BEGIN IMMEDIATE", exc) from exc
    try:
        result = work(statements)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    try:
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise _sqlalchemy_error("COMMIT", exc) from exc
    return result


def _run_core(work: Work[T]) -> Callable[[Connection], T]:
    def run(connection: Connection) -> T:
        return work(_CoreStatements(connection))

    return run


class Transactions:
    """Runs units of work: `write` in one transaction, `read` without one."""

    def __init__(self, engine: AsyncEngine, pool: PoolSettings | None = None) -> None:
        """`pool`: the limits of a server database's connections (Settings' defaults if None)."""
        self._engine = engine
        # A read of one statement needs no transaction: on asyncpg that saves the BEGIN and
        # ROLLBACK round trips.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        path = sqlite_path(engine.url)
        self._writer: _SqliteThread | None = None
        self._reader: _SqliteThread | None = None
        self._dialect = engine.dialect
        # The event loop's own query-only connection (point_read), opened on first use.
        self._loop_statements: _SqliteStatements | None = None
        self._loop_opening: asyncio.Future[_SqliteStatements] | None = None
        if path is not None:
            dialect = engine.dialect
            self._writer = _SqliteThread(path, dialect, name="passgate-db-write", writer=True)
            self._reader = _SqliteThread(path, dialect, name="passgate-db-read", writer=False)
        self._postgres: PostgresUnits | None = None
        if engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg":
            # Imported here: app.postgres_units builds on this module's Prepared and Result.
            from app.postgres_units import PostgresUnits

            self._postgres = PostgresUnits(engine.url, engine.dialect, pool or PoolSettings())

    async def write(self, work: Work[T]) -> T:
        """Run `work` in one transaction: committed if it returns, rolled back if it raises."""
        if self._writer is not None:
            return await self._writer.run(work)
        if self._postgres is not None:
            return await self._postgres.write(work)
        async with self._engine.begin() as connection:
            return await connection.run_sync(_run_core(work))

    async def read(self, work: Work[T]) -> T:
        """Run `work`, which only reads."""
        if self._reader is not None:
            return await self._reader.run(work)
        if self._postgres is not None:
            return await self._postgres.read(work)
        async with self._autocommit.connect() as connection:
            return await connection.run_sync(_run_core(work))

    async def point_read(self, work: Work[T]) -> T:
        """Run `work`, which only reads a few rows by key, at once: the bearer check's lookup
        and the login's read of the account by email.

        On SQLite it runs on the event loop itself, on a query-only connection of its own. The
        hop to the reader thread (a queue put, a thread wake-up, a call_soon_threadsafe back,
        and the GIL handed back and forth around each) cost the server more than the query
        does: under `make bench`'s W1 load, 3.5 context switches and about 250 us of CPU per
        request, against some 15 us for the indexed two-row join itself. The query never
        waits: its connection has no busy timeout, and a read SQLite cannot start at once
        (another connection recovering the WAL, say) goes to the reader thread instead,
        which may wait. Elsewhere (PostgreSQL) this is `read`.
        """
        if self._reader is None:
            return await self.read(work)
        statements = self._loop_statements
        if statements is None:
            statements = await self._open_loop_statements()
        try:
            return work(statements)
        except DBAPIError as exc:
            if not _is_busy(exc):
                raise
        return await self._reader.run(work)  # a read only: running it again changes nothing

    async def point_read_row(self, prepared: Prepared, params: dict[str, Any]) -> Any | None:
        """`point_read` of one statement: the row it finds, or None (more than one is an error).

        On PostgreSQL it runs straight on asyncpg, without the greenlet a unit of work runs in
        (`PostgresUnits.fetch_row`).
        """
        if self._postgres is not None:
            return await self._postgres.fetch_row(prepared, params)
        return await self.point_read(
            lambda statements: statements.execute(prepared, params).one_or_none()
        )

    async def _open_loop_statements(self) -> _SqliteStatements:
        assert self._reader is not None
        opening = self._loop_opening
        if opening is None:
            opening = asyncio.ensure_future(self._open_loop_connection(self._reader))
            self._loop_opening = opening
        try:
            return await asyncio.shield(opening)  # one caller cancelled: the others still wait
        except BaseException:
            if opening.done() and self._loop_opening is opening:
                self._loop_opening = None  # a failed opening is tried again by the next read
            raise

    async def _open_loop_connection(self, reader: _SqliteThread) -> _SqliteStatements:
        connection = await reader.open_loop_connection()
        self._loop_statements = _SqliteStatements(connection, self._dialect)
        return self._loop_statements

    async def close(self) -> None:
        if self._loop_opening is not None:
            with contextlib.suppress(Exception):  # its failure was its readers' to report
                await self._loop_opening
        if self._loop_statements is not None and self._reader is not None:
            connection = self._loop_statements.connection
            self._loop_statements = None
            # Closed on the reader's thread: the last connection to close checkpoints the WAL.
            await self._reader.run(lambda _: connection.close())
        for thread in (self._writer, self._reader):
            if thread is not None:
                await thread.close()
        if self._postgres is not None:
            await self._postgres.close()
