"""Operator commands, run as `python -m app <command>`: the command line and its dispatch.

This module imports the standard library and app/keygen.py only, so `--help`, generate-secret
and generate-key start in a few tens of milliseconds. The commands that need the settings, the
database and the service's code (about a second of imports) live in app/commands.py, imported
when one of them runs.
"""

from __future__ import annotations

import argparse
import sys

from app.keygen import (
    DEFAULT_RSA_BITS,
    MIN_RSA_BITS,
    generate_private_key_pem,
    generate_secret,
)


class CommandError(Exception):
    """A problem to report in one line, with a non-zero exit status."""


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
        from app import commands  # the rest need the settings and the database: see above

        return commands.run(args)
    except CommandError as exc:
        print(f"passgate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
