"""The blocking half of password hashing: Argon2id and imported formats, one call at a time.

Everything here runs where blocking is allowed: in a hashing process (app/hash_process.py),
on a hashing thread, or on the command line. It knows nothing of the event loop, metrics or
the database, so a hashing process imports passlib and this module, not the web stack. Async
callers go through app.security.Passwords.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from passlib.context import CryptContext

from app.hash_formats import UnacceptableHash, identify, verify_werkzeug

# Schemes of imported hashes that libpass verifies; Werkzeug's are verified by
# app/hash_formats.py. Argon2 hashes, ours or imported, go through the native context.
IMPORTED_SCHEMES = (
    "bcrypt",
    "pbkdf2_sha256",
    "pbkdf2_sha512",
    "django_pbkdf2_sha256",
    "django_argon2",
    "django_bcrypt_sha256",
    "django_bcrypt",
)


class Verdict(NamedTuple):
    """What one verification found.

    `new_hash` is the hash to store instead, or None; `imported_seconds` how long verifying an
    imported hash took (None when no imported hash was verified), which the login padding
    (app/login_padding.py) keeps.
    """

    matches: bool
    new_hash: str | None
    imported_seconds: float | None


class PasswordHasher:
    """Argon2id at the configured cost, and imported formats within today's bounds."""

    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._context = CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__memory_cost=memory_kib,
            argon2__rounds=time_cost,
            argon2__parallelism=parallelism,
        )
        self._imported = CryptContext(schemes=list(IMPORTED_SCHEMES))
        self._memory_kib = memory_kib
        self._time_cost = time_cost

    def hash(self, normalized: str) -> str:
        return self._context.hash(normalized)

    def dummy_verify(self) -> None:
        """What a verification costs, for an account with no hash: unknown emails answer alike."""
        self._context.dummy_verify()

    def verify(self, password: str, normalized: str, password_hash: str, upgrade: bool) -> Verdict:
        """Check the hash's format and bounds, then verify the form it is most likely of: ours
        are of the normalised password, an imported one is of the text as typed."""
        found = self._identify(password_hash)
        if found is None:
            # Written some other way, or outside today's bounds: never verified, and it costs
            # what an unknown email costs.
            self._context.dummy_verify()
            return Verdict(False, None, None)
        if found.scheme == "argon2":
            if upgrade:
                matches, new_hash = self._context.verify_and_update(normalized, password_hash)
                return Verdict(matches, new_hash, None)
            return Verdict(self._context.verify(normalized, password_hash), None, None)
        started = time.perf_counter()
        matches = self._verify_imported(password, password_hash, found)
        seconds = time.perf_counter() - started
        return Verdict(
            matches, self._context.hash(normalized) if matches and upgrade else None, seconds
        )

    def verify_other_form(
        self, password: str, normalized: str, password_hash: str | None, upgrade: bool
    ) -> Verdict:
        """The form `verify` did not try, rehashed on success: ours stored before passwords
        were normalised are of the text as typed, an imported one may be of what another
        system saw."""
        found = self._identify(password_hash) if password_hash is not None else None
        if found is None or password_hash is None:
            self._context.dummy_verify()
            return Verdict(False, None, None)
        seconds = None
        if found.scheme == "argon2":
            matches = self._context.verify(password, password_hash)
        else:
            started = time.perf_counter()
            matches = self._verify_imported(normalized, password_hash, found)
            seconds = time.perf_counter() - started
        if not matches:
            return Verdict(False, None, seconds)
        return Verdict(True, self._context.hash(normalized) if upgrade else None, seconds)

    def _identify(self, password_hash: str) -> Any | None:
        """The hash's format when it is one we verify within today's bounds, else None."""
        try:
            return identify(
                password_hash,
                max_argon2_memory_kib=self._memory_kib,
                max_argon2_time_cost=self._time_cost,
            )
        except UnacceptableHash:
            return None

    def _verify_imported(self, password: str, password_hash: str, found: Any) -> bool:
        # The old system hashed the password exactly as the user typed it, in UTF-8, so that
        # is what is verified here: no normalisation the old system did not do.
        try:
            secret = password.encode()
        except UnicodeEncodeError:  # a lone surrogate: no old system could have hashed it
            self._context.dummy_verify()
            return False
        limit = found.max_password_bytes
        if limit is not None and (len(secret) > limit or b"\0" in secret):
            # bcrypt cannot take it: an ordinary failure (API.md), at the usual cost.
            self._context.dummy_verify()
            return False
        if found.werkzeug is not None:
            return verify_werkzeug(password, found.werkzeug)
        return bool(self._imported.verify(password, password_hash))


# The operations a pool runs, by the name that crosses to a hashing process.
OPERATIONS = ("hash", "dummy_verify", "verify", "verify_other_form")
