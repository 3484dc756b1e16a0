"""Password hashes made by other systems: which are accepted, their cost bounds, and Werkzeug's.

Imported accounts keep the hash their old system made until their first successful login,
which replaces it with our own Argon2id. Until then every login verifies the old format, so
each format is checked twice against the bounds below: when it is imported, and again before
each verification (a row written some other way, or bounds tightened since, cannot slip
through). A hash outside the bounds costs a login what an unknown email costs, and fails.

Accepted (API.md, "Importing users"), with the bounds that keep one login from exhausting the
server's memory or CPU (figures: one verification on this project's 2-core CI machine):

| format | example | refused below | refused above |
|---|---|---|---|
| Argon2 (PHC string; id, i, d) | `$argon2id$v=19$m=65536,t=3,p=4$...` | | m 128 MiB, t 10, p 16, m*t 512 MiB (64 MiB, t=3: 0.25 s) |
| bcrypt | `$2b$12$...` (`$2a$`, `$2y$` too) | | cost 14 (cost 12: 0.33 s) |
| passlib pbkdf2 | `$pbkdf2-sha256$N$...`, `$pbkdf2-sha512$N$...` | 100,000 iterations | 2,000,000 |
| Django | `pbkdf2_sha256$N$salt$base64` | 100,000 iterations | 2,000,000 |
| Django | `argon2$argon2id$...`, `bcrypt_sha256$$2b$...`, `bcrypt$$2b$...` | | as Argon2, bcrypt |
| Werkzeug pbkdf2 | `pbkdf2:sha256:N$salt$hex` (`sha512` too) | 100,000 iterations | 2,000,000 (1,000,000: 0.38 s) |
| Werkzeug scrypt | `scrypt:n:r:p$salt$hex` | | 128*n*r 64 MiB, p 16, n*r*p 2**20 (2**15:8:1: 0.13 s) |

Werkzeug's formats, from its `werkzeug/security.py` (`_hash_internal`, `check_password_hash`):
`<method>$<salt>$<hex digest>`, where the salt is used as its UTF-8 bytes (never decoded) and
so is the password. `pbkdf2:<hash>:<iterations>` is `hashlib.pbkdf2_hmac(hash, password, salt,
iterations)` with the hash's own digest length; `scrypt:<n>:<r>:<p>` is `hashlib.scrypt(password,
salt=salt, n=n, r=r, p=p)` with its default 64-byte key. `generate_password_hash`'s defaults:

| Werkzeug | default method | salt | here |
|---|---|---|---|
| before 0.9 | `sha1` (one salted HMAC-SHA1) | 8 | refused: SHA-1, one round |
| 0.9 to 0.11 | `pbkdf2:sha1:1000` | 8 | refused: SHA-1, 1,000 iterations |
| 0.12 to 0.14 | `pbkdf2:sha256:50000` | 8 | refused: fewer than 100,000 iterations |
| 0.15 to 1.0 | `pbkdf2:sha256:150000` | 8 | accepted |
| 2.0 to 2.2 | `pbkdf2:sha256:260000` | 16 | accepted |
| 2.3 to 3.0 | `scrypt:32768:8:1` (pbkdf2: 600,000) | 16 | accepted |
| 3.1 | `scrypt:32768:8:1` (pbkdf2: 1,000,000) | 16 | accepted |

`method="sha256"` (the Flask JWT tutorial's own choice, before Werkzeug 3.0 removed it) is one
salted HMAC-SHA256, `sha256$salt$hex`: refused like every other single-round hash, as are
`plain`, `md5` and any method without explicit parameters (`pbkdf2$...`, `scrypt$...`), whose
cost depends on the Werkzeug version that checks it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

MIN_PBKDF2_ITERATIONS = 100_000
MAX_PBKDF2_ITERATIONS = 2_000_000
MAX_BCRYPT_COST = 14
MAX_ARGON2_MEMORY_KIB = 128 * 1024
MAX_ARGON2_TIME_COST = 10
MAX_ARGON2_PARALLELISM = 16
MAX_ARGON2_WORK_KIB = 512 * 1024  # memory times passes: what one verification costs in CPU
MAX_SCRYPT_MEMORY_BYTES = 64 * 1024 * 1024  # scrypt needs 128 * n * r bytes
MAX_SCRYPT_PARALLELISM = 16
MAX_SCRYPT_WORK = 2**20  # n * r * p: eight times Werkzeug's default

# bcrypt hashes at most 72 bytes and cannot take a NUL; longer passwords were silently cut by
# older libraries, and are refused by bcrypt 5. API.md: such a password is an invalid_grant.
BCRYPT_MAX_PASSWORD_BYTES = 72

# Our column's width; a longer string is not a hash we could store.
MAX_HASH_LENGTH = 255


class UnacceptableHash(ValueError):
    """A hash we will not store or verify; the message says why, and never repeats the hash."""


@dataclass(frozen=True, slots=True)
class HashFormat:
    """What a stored hash is: its scheme, and for Werkzeug's the parsed parameters."""

    # argon2, bcrypt, pbkdf2_sha256, pbkdf2_sha512, werkzeug, and django_ + pbkdf2_sha256,
    # argon2, bcrypt_sha256 or bcrypt: libpass's names for them
    scheme: str
    werkzeug: WerkzeugHash | None = None

    @property
    def max_password_bytes(self) -> int | None:
        # Django's bcrypt_sha256 hashes a 64-character hex digest: any password fits.
        plain_bcrypt = self.scheme in ("bcrypt", "django_bcrypt")
        return BCRYPT_MAX_PASSWORD_BYTES if plain_bcrypt else None


@dataclass(frozen=True, slots=True)
class WerkzeugHash:
    method: str  # pbkdf2 or scrypt
    hash_name: str  # for pbkdf2
    iterations: int
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


ARGON2 = re.compile(
    r"\$argon2(?:id|i|d)\$(?:v=(?:16|19)\$)?m=(\d{1,10}),t=(\d{1,10}),p=(\d{1,3})"
    r"\$[A-Za-z0-9+/]{8,}\$[A-Za-z0-9+/]{16,}"
)
BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
PASSLIB_PBKDF2 = re.compile(r"\$pbkdf2-(sha256|sha512)\$(\d{1,10})\$[./A-Za-z0-9]*\$[./A-Za-z0-9]+")
DJANGO_PBKDF2 = re.compile(r"pbkdf2_sha256\$(\d{1,10})\$[^$]+\$[A-Za-z0-9+/]+={0,2}")
WERKZEUG = re.compile(
    r"(pbkdf2|scrypt)((?::[A-Za-z0-9]{1,16})*)\$([\x21-\x23\x25-\x7e]{1,128})\$([0-9a-f]+)"
)
# Django's prefix before the library's own string, and how such a hash starts.
DJANGO_PREFIXED = (
    ("argon2", "argon2$argon2"),  # Argon2PasswordHasher: "argon2" + "$argon2id$v=19$..."
    ("bcrypt_sha256$", "bcrypt_sha256$$2"),  # BCryptSHA256PasswordHasher
    ("bcrypt$", "bcrypt$$2"),  # BCryptPasswordHasher
)
WERKZEUG_DIGESTS = {"sha256": 32, "sha512": 64}
SCRYPT_KEY_BYTES = 64

# Recognised only to say why they are refused; anything else is an unsupported format.
WEAK_FORMATS = (
    (re.compile(r"plain\$"), "a password in plain text"),
    (re.compile(r"md5\$|\$1\$|\{S?MD5\}|unsalted_md5\$|[0-9a-fA-F]{32}\Z"), "MD5"),
    (
        re.compile(r"sha1\$|pbkdf2_sha1\$|\$pbkdf2\$|\{S?SHA\}|unsalted_sha1\$|[0-9a-fA-F]{40}\Z"),
        "SHA-1",
    ),
    (re.compile(r"sha(?:224|256|384|512)\$"), "a single salted SHA-2 round"),
)


def _pbkdf2_iterations(iterations: int) -> None:
    if iterations < MIN_PBKDF2_ITERATIONS:
        raise UnacceptableHash(
            f"weak hash: PBKDF2 with {iterations} iterations (at least {MIN_PBKDF2_ITERATIONS:,})"
        )
    if iterations > MAX_PBKDF2_ITERATIONS:
        raise UnacceptableHash(
            f"hash too costly: PBKDF2 with {iterations} iterations (at most {MAX_PBKDF2_ITERATIONS:,})"
        )


def _check_argon2(match: re.Match[str], *, max_memory_kib: int, max_time_cost: int) -> None:
    memory, time_cost, parallelism = (int(group) for group in match.groups())
    if memory > max_memory_kib or time_cost > max_time_cost or parallelism > MAX_ARGON2_PARALLELISM:
        raise UnacceptableHash(
            f"hash too costly: Argon2 m={memory},t={time_cost},p={parallelism} (at most "
            f"m={max_memory_kib},t={max_time_cost},p={MAX_ARGON2_PARALLELISM})"
        )
    if memory * time_cost > max(MAX_ARGON2_WORK_KIB, max_memory_kib * max_time_cost):
        raise UnacceptableHash(
            f"hash too costly: Argon2 m={memory},t={time_cost} (m*t at most {MAX_ARGON2_WORK_KIB})"
        )
    if time_cost < 1 or parallelism < 1 or memory < 8 * parallelism:
        raise UnacceptableHash("malformed Argon2 hash")


def _werkzeug(match: re.Match[str]) -> HashFormat:
    method, raw_args, salt, hex_digest = match.groups()
    args = raw_args.split(":")[1:]
    if method == "pbkdf2":
        if args[:1] == ["sha1"]:
            raise UnacceptableHash("weak hash: PBKDF2 with SHA-1")
        if len(args) != 2 or not args[1].isdigit():
            raise UnacceptableHash(
                "unsupported hash: Werkzeug pbkdf2 without an explicit hash and iteration count"
            )
        hash_name, iterations = args[0], int(args[1])
        if hash_name not in WERKZEUG_DIGESTS:
            raise UnacceptableHash(f"unsupported hash: Werkzeug pbkdf2 with {hash_name[:16]}")
        _pbkdf2_iterations(iterations)
        digest_bytes = WERKZEUG_DIGESTS[hash_name]
        n = r = p = 0
    else:
        if len(args) != 3 or not all(arg.isdigit() for arg in args):
            raise UnacceptableHash("unsupported hash: Werkzeug scrypt without explicit n, r and p")
        n, r, p = (int(arg) for arg in args)
        if n < 2 or n & (n - 1) or r < 1 or p < 1:
            raise UnacceptableHash("malformed Werkzeug scrypt hash")
        if (
            128 * n * r > MAX_SCRYPT_MEMORY_BYTES
            or p > MAX_SCRYPT_PARALLELISM
            or n * r * p > MAX_SCRYPT_WORK
        ):
            raise UnacceptableHash(
                f"hash too costly: scrypt n={n},r={r},p={p} (128*n*r at most "
                f"{MAX_SCRYPT_MEMORY_BYTES // 2**20} MiB, p at most {MAX_SCRYPT_PARALLELISM}, "
                f"n*r*p at most {MAX_SCRYPT_WORK})"
            )
        hash_name, iterations, digest_bytes = "", 0, SCRYPT_KEY_BYTES
    if len(hex_digest) != 2 * digest_bytes:
        raise UnacceptableHash("malformed Werkzeug hash: wrong digest length")
    return HashFormat(
        "werkzeug",
        WerkzeugHash(
            method=method,
            hash_name=hash_name,
            iterations=iterations,
            n=n,
            r=r,
            p=p,
            salt=salt.encode(),
            digest=bytes.fromhex(hex_digest),
        ),
    )


def _check_library_hash(
    password_hash: str, max_argon2_memory_kib: int, max_argon2_time_cost: int
) -> str | None:
    """argon2 or bcrypt for such a hash within its bounds; None for any other format."""
    if match := ARGON2.fullmatch(password_hash):
        _check_argon2(
            match,
            max_memory_kib=max(max_argon2_memory_kib, MAX_ARGON2_MEMORY_KIB),
            max_time_cost=max(max_argon2_time_cost, MAX_ARGON2_TIME_COST),
        )
        return "argon2"
    if match := BCRYPT.fullmatch(password_hash):
        cost = int(match.group(1))
        if cost < 4 or cost > 31:
            raise UnacceptableHash("malformed bcrypt hash")
        if cost > MAX_BCRYPT_COST:
            raise UnacceptableHash(
                f"hash too costly: bcrypt cost {cost} (at most {MAX_BCRYPT_COST})"
            )
        return "bcrypt"
    return None


def identify(
    password_hash: object,
    *,
    max_argon2_memory_kib: int = MAX_ARGON2_MEMORY_KIB,
    max_argon2_time_cost: int = MAX_ARGON2_TIME_COST,
) -> HashFormat:
    """The format of an accepted hash within its bounds; UnacceptableHash says why not.

    The Argon2 bounds can be raised to the service's own parameters, so that hashes it made
    itself always verify, whatever its configuration.
    """
    if not isinstance(password_hash, str) or not password_hash:
        raise UnacceptableHash("no password hash")
    if len(password_hash) > MAX_HASH_LENGTH:
        raise UnacceptableHash(f"unsupported hash: longer than {MAX_HASH_LENGTH} characters")
    if not password_hash.isascii() or not password_hash.isprintable():
        raise UnacceptableHash("unsupported hash: characters no hash format uses")
    # Django's Argon2PasswordHasher, BCryptSHA256PasswordHasher and BCryptPasswordHasher put
    # their name before the library's own string: "argon2$argon2id$...", "bcrypt_sha256$$2b$...".
    for django, library_start in DJANGO_PREFIXED:
        if password_hash.startswith(library_start):
            inner = password_hash[len(django) :]
            if _check_library_hash(inner, max_argon2_memory_kib, max_argon2_time_cost) is None:
                raise UnacceptableHash(f"malformed Django {django.strip('$')} hash")
            return HashFormat(f"django_{django.strip('$')}")
    scheme = _check_library_hash(password_hash, max_argon2_memory_kib, max_argon2_time_cost)
    if scheme is not None:
        return HashFormat(scheme)
    if match := PASSLIB_PBKDF2.fullmatch(password_hash):
        _pbkdf2_iterations(int(match.group(2)))
        return HashFormat(f"pbkdf2_{match.group(1)}")
    if match := DJANGO_PBKDF2.fullmatch(password_hash):
        _pbkdf2_iterations(int(match.group(1)))
        return HashFormat("django_pbkdf2_sha256")
    if match := WERKZEUG.fullmatch(password_hash):
        return _werkzeug(match)
    for pattern, what in WEAK_FORMATS:
        if pattern.match(password_hash):
            raise UnacceptableHash(f"weak hash: {what}")
    raise UnacceptableHash("unsupported hash format")


def verify_werkzeug(password: str, parsed: WerkzeugHash) -> bool:
    """Werkzeug's check_password_hash on hashlib, for a hash that `identify` accepted."""
    secret = password.encode()
    if parsed.method == "pbkdf2":
        computed = hashlib.pbkdf2_hmac(parsed.hash_name, secret, parsed.salt, parsed.iterations)
    else:
        # hashlib's default limit (32 MiB) is below what the bounds allow; OpenSSL needs a
        # little more than the 128 * n * r bytes the algorithm itself uses.
        computed = hashlib.scrypt(
            secret,
            salt=parsed.salt,
            n=parsed.n,
            r=parsed.r,
            p=parsed.p,
            maxmem=132 * parsed.n * parsed.r * parsed.p + 2**20,
            dklen=SCRYPT_KEY_BYTES,
        )
    return hmac.compare_digest(computed, parsed.digest)
