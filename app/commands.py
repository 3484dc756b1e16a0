"""The operator commands that read the settings and reach the database: create-admin,
import-users and serve. app/cli.py parses the command line and imports this module only for
them; they call services directly, no HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from pydantic import TypeAdapter, ValidationError

from app.audit import AuditEvent, configure_audit_log, record
from app.cli import CommandError
from app.config import Settings, describe_validation_error, usable_cores
from app.db import PoolSettings, make_engine
from app.keys import KeyConfigError, load_token_keys
from app.logs import configure_logging
from app.metrics import MULTIPROCESS_DIR_VARIABLE, prepare_multiprocess_dir
from app.schemas import Email, Name, NewPassword
from app.security import Passwords
from app.services import imports, users
from app.startup import StartupError, check_port_free, prepare_database
from app.transactions import Transactions

# The audit reason of changes made by an operator's command rather than through the API.
COMMAND_LINE = "command_line"


def _validated(adapter: TypeAdapter, value: str, what: str) -> str:  # type: ignore[type-arg]
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise CommandError(f"{what}: {message}") from None


def _password_source() -> str:
    """What to call the password in an error: the variable it came from, or the prompt's."""
    return "ADMIN_PASSWORD" if os.environ.get("ADMIN_PASSWORD") is not None else "password"


def _read_new_password() -> str:
    """ADMIN_PASSWORD when set, else asked twice at a prompt that does not echo."""
    password = os.environ.get("ADMIN_PASSWORD")
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise CommandError(
            "no password: set ADMIN_PASSWORD, or run in a terminal to be asked for one"
        )
    try:
        password = getpass.getpass("Password for the admin: ")
        if getpass.getpass("Repeat the password: ") != password:
            raise CommandError("the two passwords differ; nothing was changed")
    except EOFError:  # Ctrl+D at the prompt
        sys.stderr.write("\n")  # the cursor is still after the prompt
        raise CommandError("no password given (end of input); nothing was changed") from None
    return password


def _ask(question: str) -> bool:
    """A yes/no question at the terminal; without one, the answer must come from --yes."""
    if not sys.stdin.isatty():
        raise CommandError(f"{question} Pass --yes to confirm (no terminal to ask at)")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


async def create_admin(
    settings: Settings,
    *,
    email: str,
    name: str | None,
    read_password: Callable[[], str] = _read_new_password,
    confirm: Callable[[str], bool] = _ask,
) -> str:
    """Promote the user with this email, or create it as an admin with a password read now.

    Reactivating or renaming an existing user is confirmed first (`confirm`, a prompt unless
    --yes); every change is an audit event whose reason is `command_line`.
    """
    email = _validated(TypeAdapter(Email), email, "--email")
    if name is not None:
        name = _validated(TypeAdapter(Name), name, "--name")
    await prepare_database(settings)
    engine = make_engine(settings.database_url, PoolSettings.from_settings(settings))
    db = Transactions(engine)
    passwords = Passwords.from_settings(settings)
    await passwords.start()
    try:
        existing = await users.get_user_by_email(db, email)
        password = None
        if existing is None:
            password = _validated(TypeAdapter(NewPassword), read_password(), _password_source())
        else:
            changes = []
            if not existing.is_active:
                changes.append("reactivate it")
            if name is not None and name != existing.name:
                changes.append(f"rename it from {existing.name!r} to {name!r}")
            if existing.is_admin and not changes:
                return f"{existing.email} ({existing.id}) is already an admin; nothing changed"
            if changes:
                question = (
                    f"{existing.email} exists; {' and '.join(changes)}, and make it an admin?"
                )
                if not confirm(question):
                    raise CommandError(f"{existing.email} left as it was")
        user, created = await users.ensure_admin(
            db, passwords=passwords, email=email, name=name, password=password
        )
    finally:
        await passwords.close()
        await db.close()
        await engine.dispose()
    if created:
        record(AuditEvent.SIGNUP, user_id=user.id, reason=COMMAND_LINE)
    if existing is not None and not existing.is_active:
        record(AuditEvent.USER_REACTIVATED, user_id=user.id, reason=COMMAND_LINE)
    if created or (existing is not None and not existing.is_admin):
        record(AuditEvent.ADMIN_GRANTED, user_id=user.id, reason=COMMAND_LINE)
    verb = "created admin" if created else "made admin"
    return f"{verb} {user.email} ({user.id})"


async def import_users(
    settings: Settings,
    *,
    file: str | None,
    flask_tutorial: str | None,
    dry_run: bool,
    emit: Callable[[str], None] = print,
) -> imports.ImportReport:
    """Import accounts with their password hashes from a JSON-lines file or a tutorial database."""
    try:
        rows = (
            imports.read_flask_tutorial(Path(flask_tutorial))
            if flask_tutorial is not None
            else imports.read_json_lines(Path(file or ""))
        )
        await prepare_database(settings)
        engine = make_engine(settings.database_url, PoolSettings.from_settings(settings))
        db = Transactions(engine)
        try:
            return await imports.import_users(
                db,
                rows,
                dry_run=dry_run,
                max_argon2_memory_kib=settings.password_hash_memory_kib,
                max_argon2_time_cost=settings.password_hash_time_cost,
                emit=emit,
            )
        finally:
            await db.close()
            await engine.dispose()
    except imports.ImportSourceError as exc:
        raise CommandError(str(exc)) from None


def serve(
    settings: Settings, *, host: str, port: int, workers: int, forwarded_allow_ips: str
) -> None:
    """Check what can be checked, migrate once, then hand over to uvicorn.

    Every mistake found here is one line (app/startup.py) instead of a traceback from a worker
    that uvicorn would restart forever.
    """
    import uvicorn  # only this command needs the server

    configure_logging(settings.log_format, level=settings.log_level)
    if settings.jwt_algorithm != "HS256":
        try:
            load_token_keys(settings)
        except KeyConfigError as exc:
            raise CommandError(f"invalid configuration: {exc}") from None
    # Before migrating: a second `make run` must not touch the database the first one serves.
    check_port_free(host, port)
    asyncio.run(prepare_database(settings))
    if settings.migrate_on_start:
        # The schema is at head: the workers, which read the same environment, need not
        # each run Alembic again.
        os.environ["MIGRATE_ON_START"] = "false"
    if "public_url" not in settings.model_fields_set and settings.environment != "production":
        # The default names make run's usual address; say the one actually served.
        if host not in ("0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
            shown = f"[{host}]" if ":" in host else host
            os.environ["PUBLIC_URL"] = f"http://{shown}:{port}"
    if workers > 1 and "password_hash_threads" not in settings.model_fields_set:
        # Each worker hashes with its own processes: its share of the cores, not all of them
        # (more hashes at once than cores only queue in the kernel; docs/benchmarks.md).
        os.environ["PASSWORD_HASH_THREADS"] = str(max(1, usable_cores() // workers))
    if workers > 1 or os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        # Several processes: each counts in its own files, which /metrics sums (app.metrics).
        # A folder per port, emptied now, before uvicorn starts the first worker.
        directory = Path(
            os.environ.get(MULTIPROCESS_DIR_VARIABLE) or settings.data_dir / f"metrics-{port}"
        ).resolve()
        prepare_multiprocess_dir(directory)
        os.environ[MULTIPROCESS_DIR_VARIABLE] = str(directory)
    proxy = forwarded_allow_ips.strip()
    # uvicorn stops gracefully on SIGTERM (the lifespan hands over the mail in hand and closes
    # the database), restores the handler it found and raises the signal again: with the
    # default one, a single worker would end as killed by it (status 143) where several
    # workers' parent exits 0. A stop that was asked for and done is a success.
    signal.signal(signal.SIGTERM, _exit_when_stopped)
    try:
        uvicorn.run(
            "app.main:app",
            host=host,
            port=port,
            workers=workers,
            proxy_headers=bool(proxy),
            forwarded_allow_ips=proxy or None,
            # Ours (app/logs.py) replaces uvicorn's: one format, and no query strings.
            log_config=None,
            access_log=False,
        )
    finally:
        # Everything is stopped and closed; what is left is the interpreter freeing the heap,
        # and its finalization runs the cyclic collector over all of it, several times: about
        # 0.5 s for a worker's 160,000 objects (app/heap.py), which every `docker stop` and
        # restart waited for after "Finished server process". Frozen, they are skipped (what
        # only the collector would free goes back to the OS with the process); atexit
        # handlers, log flushing and thread joins run as before.
        gc.freeze()


def _exit_when_stopped(signum: int, frame: FrameType | None) -> None:
    """SIGTERM raised again by uvicorn once it has stopped (or received before it started)."""
    raise SystemExit(0)


def run(args: argparse.Namespace) -> int:
    """Run the parsed command (app/cli.py's parser); the exit status, or CommandError."""
    try:
        settings = Settings()
        if args.command == "serve":
            serve(
                settings,
                host=args.host,
                port=args.port,
                workers=args.workers,
                forwarded_allow_ips=args.forwarded_allow_ips,
            )
        elif args.command == "create-admin":
            configure_logging(settings.log_format, level=logging.WARNING)
            configure_audit_log(settings.audit_log, settings.log_format)
            confirm = (lambda _question: True) if args.yes else _ask
            print(
                asyncio.run(
                    create_admin(settings, email=args.email, name=args.name, confirm=confirm)
                )
            )
        elif args.command == "import-users":
            report = asyncio.run(
                import_users(
                    settings,
                    file=args.file,
                    flask_tutorial=args.flask_tutorial,
                    dry_run=args.dry_run,
                    emit=lambda line: print(line, flush=True),
                )
            )
            print(report.summary())
            return 1 if report.rejected else 0
    except ValidationError as exc:
        print(f"passgate: invalid configuration: {describe_validation_error(exc)}", file=sys.stderr)
        return 2
    except StartupError as exc:
        raise CommandError(str(exc)) from None
    return 0
