"""Operator commands, run as `python -m app <command>`; they call services directly, no HTTP."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from app.audit import AuditEvent, configure_audit_log, record
from app.config import Settings, describe_validation_error, generate_secret
from app.db import PoolSettings, make_engine
from app.keys import (
    DEFAULT_RSA_BITS,
    MIN_RSA_BITS,
    KeyConfigError,
    generate_private_key_pem,
    load_token_keys,
)
from app.logs import configure_logging
from app.metrics import MULTIPROCESS_DIR_VARIABLE, prepare_multiprocess_dir
from app.schemas import Email, Name, NewPassword
from app.security import Passwords
from app.services import imports, users
from app.startup import StartupError, check_port_free, prepare_database
from app.transactions import Transactions

# The audit reason of changes made by an operator's command rather than through the API.
COMMAND_LINE = "command_line"


class CommandError(Exception):
    """A problem to report in one line, with a non-zero exit status."""


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
        passwords.close()
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


def _add_import_users_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "import-users",
        help="import accounts with their existing password hashes",
        description="Create an account for each row of FILE (JSON lines: email, name, "
        "password_hash, and optionally email_verified, is_admin, created_at), or of the Flask "
        "JWT tutorial's SQLite database. Rows whose address is registered are skipped; rows "
        "with a weak, unknown or too costly hash are rejected. Prints a line per skipped or "
        "rejected row and a summary; exits 1 when a row was rejected. Safe to run again.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", metavar="FILE", help="a JSON-lines file")
    source.add_argument(
        "--from-flask-tutorial",
        metavar="DB",
        dest="flask_tutorial",
        help="the tutorial app's SQLite file (opened read-only)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check every row and report, but write nothing"
    )


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
    if workers > 1 or os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        # Several processes: each counts in its own files, which /metrics sums (app.metrics).
        # A folder per port, emptied now, before uvicorn starts the first worker.
        directory = Path(
            os.environ.get(MULTIPROCESS_DIR_VARIABLE) or settings.data_dir / f"metrics-{port}"
        ).resolve()
        prepare_multiprocess_dir(directory)
        os.environ[MULTIPROCESS_DIR_VARIABLE] = str(directory)
    proxy = forwarded_allow_ips.strip()
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


def generate_key(*, algorithm: str, rsa_bits: int) -> str:
    """A new unencrypted PKCS#8 PEM private key for JWT_PRIVATE_KEY_FILE."""
    try:
        return generate_private_key_pem(algorithm, rsa_bits=rsa_bits).decode()
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _add_generate_key_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "generate-key",
        help="print a new private signing key (PEM) for JWT_PRIVATE_KEY_FILE",
        description="Print a new unencrypted PKCS#8 PEM private key on standard output, e.g. "
        "`python -m app generate-key --alg ES256 > key.pem`. Keep the file readable by the "
        "service only.",
    )
    parser.add_argument("--alg", choices=["ES256", "RS256"], default="ES256")
    parser.add_argument(
        "--bits",
        type=int,
        default=DEFAULT_RSA_BITS,
        help=f"RSA key size for RS256 (default {DEFAULT_RSA_BITS}, at least {MIN_RSA_BITS})",
    )


def _add_serve_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "serve",
        help="check the configuration, migrate, and serve (what make run and the image run)",
        description="Serve app.main:app with uvicorn after checking the configuration, the "
        "port and the database, each mistake reported in one line.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--forwarded-allow-ips",
        default="",
        help="proxies whose X-Forwarded-For/-Proto are trusted (empty: none are)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="Passgate operator commands")
    commands = parser.add_subparsers(dest="command", required=True)
    admin = commands.add_parser(
        "create-admin",
        help="make the user with this email an admin, creating it if needed",
        description="The password comes from ADMIN_PASSWORD, else from a prompt (asked twice). "
        "An existing user keeps its password; reactivating or renaming one is confirmed at a "
        "prompt, or by --yes.",
    )
    admin.add_argument("--email", required=True)
    admin.add_argument("--name")
    admin.add_argument(
        "--yes", action="store_true", help="reactivate or rename an existing user without asking"
    )
    _add_generate_key_parser(commands)
    commands.add_parser(
        "generate-secret",
        help="print a new random SECRET_KEY",
        description="Print 64 URL-safe characters (384 bits) from the OS's random source, "
        "e.g. `SECRET_KEY=$(python -m app generate-secret)`. Production refuses placeholder, "
        "short or guessable secrets.",
    )
    _add_import_users_parser(commands)
    _add_serve_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate-key":  # needs no settings, so works before any exist
            sys.stdout.write(generate_key(algorithm=args.alg, rsa_bits=args.bits))
            return 0
        if args.command == "generate-secret":
            print(generate_secret())
            return 0
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
    except (CommandError, StartupError) as exc:
        print(f"passgate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
