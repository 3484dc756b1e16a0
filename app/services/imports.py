"""Accounts brought over from another system with their password hashes (API.md, "Importing
users"): `python -m app import-users`.

Every row is created, skipped (its address is registered already, compared as signup compares
it) or rejected with a reason, each in a transaction of its own, so an interrupted import can
simply be run again: rows that made it are skipped the second time. Nothing here ever prints
or logs a hash: reasons come from app/hash_formats.py, which never repeats one.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import IntegrityError

from app.db import utcnow
from app.email_addresses import email_key
from app.hash_formats import UnacceptableHash, identify
from app.models import Account, uuid7
from app.schemas import Email, Name
from app.services import users
from app.transactions import Statements, Transactions

FIELDS = {"email", "name", "password_hash", "email_verified", "is_admin", "created_at"}
REQUIRED = ("email", "name", "password_hash")

# One account is a few hundred bytes of JSON; a longer line is not one.
MAX_LINE_BYTES = 64 * 1024

# A created_at this far ahead of our clock is a mistake in the export, not clock skew.
MAX_FUTURE_SKEW = dt.timedelta(minutes=5)

EMAIL = TypeAdapter(Email)
NAME = TypeAdapter(Name)


class ImportSourceError(Exception):
    """The source as a whole cannot be read (a missing file, not a tutorial database)."""


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One row as read: where it came from, its fields, or why it could not be read at all."""

    label: str  # "line 3", "user id 7": how the operator finds the row
    data: dict[str, Any] | None
    unreadable: str | None = None


class RowRejected(Exception):
    """The row is not imported; the message says why and never repeats a hash or password."""

    def __init__(self, reason: str, *, email: str | None = None) -> None:
        super().__init__(reason)
        self.email = email  # the row's address, once it is known to be a valid one


@dataclass(frozen=True, slots=True)
class NewAccount:
    email: str
    email_normalized: str
    name: str
    password_hash: str
    email_verified: bool
    is_admin: bool
    created_at: dt.datetime | None


@dataclass(slots=True)
class ImportReport:
    created: int = 0
    skipped: int = 0
    rejected: int = 0
    dry_run: bool = False
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        created = "would be created" if self.dry_run else "created"
        text = f"{self.created} {created}, {self.skipped} skipped, {self.rejected} rejected"
        return f"dry run: {text}; nothing was written" if self.dry_run else text


def read_json_lines(path: Path) -> Iterator[SourceRow]:
    """Rows of a JSON-lines file, one object a line; blank lines are ignored.

    The file is opened now, so a missing one is reported before anything else happens.
    """
    try:
        source = path.open("rb")
    except OSError as exc:
        raise ImportSourceError(f"cannot read {path}: {exc.strerror}") from None
    return _json_rows(source)


def _json_rows(source: BinaryIO) -> Iterator[SourceRow]:
    with source:
        for number, raw in enumerate(source, start=1):
            label = f"line {number}"
            if len(raw) > MAX_LINE_BYTES:
                yield SourceRow(label, None, f"longer than {MAX_LINE_BYTES} bytes")
                continue
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                yield SourceRow(label, None, "not UTF-8")
                continue
            if not text.strip():
                continue
            try:
                data = json.loads(text, object_pairs_hook=_object_without_repeated_keys)
            except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
                yield SourceRow(label, None, "not valid JSON")
                continue
            if not isinstance(data, dict):
                yield SourceRow(label, None, "not a JSON object")
                continue
            yield SourceRow(label, data)


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ValueError("a key appears twice")  # which of the two was meant?
    return data


def read_flask_tutorial(path: Path) -> list[SourceRow]:
    """The `user` table of the Flask JWT tutorial's SQLite file, opened read-only, in id order."""
    if not path.is_file():
        raise ImportSourceError(f"cannot read {path}: no such file")
    # mode=ro: SQLite itself refuses to write, so the old application's data stays as it was.
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        # Text that is not UTF-8 fails its own row (as an invalid email, name or hash) instead
        # of the whole read.
        connection.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
        try:
            columns = {row[1] for row in connection.execute('PRAGMA table_info("user")')}
            missing = {"name", "email", "password"} - columns
            if missing:
                raise ImportSourceError(
                    f"{path} has no Flask tutorial user table "
                    f"(a table named user with name, email and password columns)"
                )
            # The tutorial's integer id is its signup order; rowid where a variant has none.
            order = "id" if "id" in columns else "rowid"
            rows = connection.execute(
                f'SELECT {order}, email, name, password FROM "user" ORDER BY {order}'  # noqa: S608  # fixed identifiers only
            ).fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        # Not a database, a damaged one, or locked by the old app for longer than SQLite waits.
        raise ImportSourceError(f"cannot read {path} as a SQLite database ({exc})") from None
    return [
        SourceRow(f"user id {key}", {"email": email, "name": name, "password_hash": password})
        for key, email, name, password in rows
    ]


def _validated(adapter: TypeAdapter, value: object, what: str) -> Any:  # type: ignore[type-arg]
    if not isinstance(value, str):
        raise RowRejected(f"invalid {what}: not a string")
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise RowRejected(f"invalid {what}: {message}") from None


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise RowRejected(f"invalid {name}: not true or false")
    return value


def _created_at(value: object, *, now: dt.datetime) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise RowRejected("invalid created_at: not an ISO 8601 date and time")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise RowRejected("invalid created_at: not an ISO 8601 date and time") from None
    # Exports without an offset are UTC, as SQLite's CURRENT_TIMESTAMP and most ORMs write.
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        parsed = parsed.astimezone(dt.UTC)
    except OverflowError:
        raise RowRejected("invalid created_at: out of range") from None
    if parsed.year < 1970:
        raise RowRejected("invalid created_at: before 1970")
    if parsed > now + MAX_FUTURE_SKEW:
        raise RowRejected("invalid created_at: in the future")
    return parsed


def parse_row(
    data: dict[str, Any], *, now: dt.datetime, check_hash: Callable[[object], object]
) -> NewAccount:
    """The account a row describes; RowRejected says what is wrong with it (and, where the
    row's address is a valid one, names it, so the operator can find the row)."""
    try:
        email: str | None = _validated(EMAIL, data.get("email"), "email")
    except RowRejected:
        email = None
    try:
        return _parse_row(data, now=now, check_hash=check_hash)
    except RowRejected as exc:
        exc.email = email
        raise


def _parse_row(
    data: dict[str, Any], *, now: dt.datetime, check_hash: Callable[[object], object]
) -> NewAccount:
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        # Quoted as JSON, so that no control character from the file reaches the terminal.
        names = ", ".join(json.dumps(name[:40]) for name in unknown[:3])
        raise RowRejected(f"unknown field {names}")
    for name in REQUIRED:
        if data.get(name) is None:
            raise RowRejected(f"missing {name}")
    email = _validated(EMAIL, data["email"], "email")
    name = _validated(NAME, data["name"], "name")
    try:
        check_hash(data["password_hash"])
    except UnacceptableHash as exc:
        raise RowRejected(str(exc)) from None
    return NewAccount(
        email=email,
        email_normalized=email_key(email),
        name=name,
        password_hash=data["password_hash"],
        email_verified=_flag(data, "email_verified"),
        is_admin=_flag(data, "is_admin"),
        created_at=_created_at(data.get("created_at"), now=now),
    )


async def import_users(
    db: Transactions,
    rows: Iterable[SourceRow],
    *,
    dry_run: bool,
    max_argon2_memory_kib: int,
    max_argon2_time_cost: int,
    emit: Callable[[str], None],
) -> ImportReport:
    """Create, skip or reject each row, one transaction each; `emit` gets one line per row
    skipped or rejected, as it happens."""
    report = ImportReport(dry_run=dry_run)
    now = utcnow()
    seen: dict[str, str] = {}  # normalised email -> label of the row that had it first

    def check_hash(value: object) -> object:
        return identify(
            value,
            max_argon2_memory_kib=max_argon2_memory_kib,
            max_argon2_time_cost=max_argon2_time_cost,
        )

    def note(label: str, email: str | None, status: str, reason: str) -> None:
        where = f"{label} ({email})" if email else label
        line = f"{where}: {status}: {reason}"
        report.lines.append(line)
        emit(line)

    for position, source in enumerate(rows):
        if source.data is None:
            report.rejected += 1
            note(source.label, None, "rejected", source.unreadable or "unreadable")
            continue
        try:
            account = parse_row(source.data, now=now, check_hash=check_hash)
        except RowRejected as exc:
            report.rejected += 1
            note(source.label, exc.email, "rejected", str(exc))
            continue
        first = seen.get(account.email_normalized)
        if first is not None:
            report.rejected += 1
            note(source.label, account.email, "rejected", f"duplicate of {first}")
            continue
        seen[account.email_normalized] = source.label
        if await users.get_user_by_email(db, account.email) is not None:
            report.skipped += 1
            note(source.label, account.email, "skipped", "already registered")
            continue
        if dry_run:
            report.created += 1
            continue
        created_at = account.created_at or now
        # Built as signup builds its row (users.create_user), so that every column is set.
        # Ids from the row's own creation time, and the file position after it: listing users
        # (ordered by id) shows imported accounts where they joined, in file order within a
        # millisecond.
        row = Account(
            id=uuid7(created_at, sequence=position),
            name=account.name,
            email=account.email,
            email_normalized=account.email_normalized,
            password_hash=account.password_hash,
            is_active=True,
            is_admin=account.is_admin,
            created_at=created_at,
            credentials_version=0,
            email_verified=account.email_verified,
        )._asdict()

        def insert_account(statements: Statements, row: dict[str, Any] = row) -> None:
            statements.execute(users.INSERT_USER, row)

        try:
            await db.write(insert_account)
        except IntegrityError:
            # Registered between our look-up and the insert (a signup meanwhile).
            report.skipped += 1
            note(source.label, account.email, "skipped", "already registered")
            continue
        report.created += 1
    return report
