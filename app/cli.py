"""The command line, run as `python -m app <command>`: operator tasks that need no HTTP."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.keys import DEFAULT_RSA_BITS, MIN_RSA_BITS, generate_private_key_pem


def _add_generate_key(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "generate-key",
        help="print a new private signing key (PEM) for JWT_PRIVATE_KEY_FILE",
        description="Print a new unencrypted PKCS#8 PEM private key on standard output, e.g. "
        "`python -m app generate-key --alg ES256 > key.pem`. Keep the file readable by "
        "the service only.",
    )
    parser.add_argument("--alg", choices=["ES256", "RS256"], default="ES256")
    parser.add_argument(
        "--bits",
        type=int,
        default=DEFAULT_RSA_BITS,
        help=f"RSA key size for RS256 (default {DEFAULT_RSA_BITS}, at least {MIN_RSA_BITS})",
    )
    parser.set_defaults(run=_generate_key)


def _generate_key(args: argparse.Namespace) -> int:
    try:
        pem = generate_private_key_pem(args.alg, rsa_bits=args.bits)
    except ValueError as exc:
        print(f"passgate: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(pem.decode())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Passgate administration.")
    commands = parser.add_subparsers(required=True, metavar="command")
    _add_generate_key(commands)
    args = parser.parse_args(argv)
    return args.run(args)
