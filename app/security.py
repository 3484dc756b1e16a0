"""Passwords (hashed off the event loop), access tokens (JWT) and refresh-token secrets.

Also the second factor's primitives: TOTP codes, the sealing of TOTP secrets, recovery codes.

With app/password_hasher.py (the blocking half of hashing), the only module that imports passlib
and python-jose: replacing either touches these two files alone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
import sys
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_plus

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jose import jwk, jwt
from jose.exceptions import ExpiredSignatureError, JWKError, JWTError
from passlib.exc import TokenError
from passlib.totp import TOTP

from app.config import Settings
from app.hash_pools import HashAccounting, ProcessHashPool, ThreadHashPool
from app.keys import SigningKey, TokenKeys, VerificationKey
from app.login_padding import ImportedHashPadding
from app.password_hasher import PasswordHasher, Verdict

# How far in the future an `iat` may lie before the token is refused: covers clock skew
# between replicas, not tokens minted for later.
CLOCK_SKEW_SECONDS = 30

REQUIRED_CLAIMS = ("sub", "sid", "exp", "iat", "jti", "amr", "auth_time")

# How many verified access tokens each process remembers, and how many bytes they may hold.
# Checking a JWT with python-jose costs more than the whole rest of a bearer request
# (`make bench`: hello vs hello_auth), and a token that verified once verifies again until it
# expires. Our tokens are 0.3-1 KB, so the byte bound is reached first only by larger ones:
# neither bound alone would hold memory down if tokens could be long (see MAX_TOKEN_LENGTH).
VERIFIED_TOKEN_CACHE_ENTRIES = 10_000
VERIFIED_TOKEN_CACHE_BYTES = 16 * 1024 * 1024

# The longest token text we accept. Ours stay under 2 KB: the header and claims take a few
# hundred characters (more with a long JWT_ISSUER), and the largest signature, RS256 with an
# 8192-bit key, 1366. Twice that leaves room for new claims while keeping what an attacker can
# make us parse, or hold in the cache, small.
MAX_TOKEN_LENGTH = 4096

# RFC 7515 §2 / RFC 4648 §5: base64url without padding.
_BASE64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_BASE64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")

# RFC 9068 §2.1: the media type of a JWT access token. Verification refuses any other `typ`
# (RFC 8725 §3.11), so no other JWT signed with the same key (an ID token, a mail link, a
# token of another service sharing the key) can pass as an access token.
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret

# JOSE headers that point at a key outside our configuration (RFC 7515 §4.1.2-4.1.6). We
# never fetch or trust them, and a token carrying one was not made by us.
FOREIGN_KEY_HEADERS = ("jku", "jwk", "x5u", "x5c")


def normalize_password(password: str) -> str:
    """The password as hashed and compared: Unicode NFKC (NIST SP 800-63B §5.1.1.2).

    One password, however a keyboard, an input method or an operating system composed it:
    `ö` typed as one code point (NFC, most systems) or as `o` + combining diaeresis (NFD, macOS
    file names and some keyboards), and full-width Latin letters from an East Asian input
    method, hash alike. NFKC rather than NFC because such compatibility characters are what
    people type without seeing the difference; the letters a person can tell apart stay
    distinct. Imported hashes were made by another system from the text as typed, so they are
    verified against that text first (see PasswordHasher.verify in app/password_hasher.py).
    """
    return unicodedata.normalize("NFKC", password)


class Passwords:
    """Argon2id hashing and verification, awaited: the work runs in a hashing pool
    (app/hash_pools.py), never on the event loop."""

    def __init__(
        self,
        *,
        memory_kib: int,
        time_cost: int,
        parallelism: int,
        threads: int,
        padding_ceiling_seconds: float = 1.0,
        pool: str = "processes",
    ) -> None:
        parameters = {"memory_kib": memory_kib, "time_cost": time_cost, "parallelism": parallelism}
        self._hasher = PasswordHasher(**parameters)
        self._accounting = HashAccounting()
        self._pool: ProcessHashPool | ThreadHashPool
        if pool == "processes":
            self._pool = ProcessHashPool(parameters, threads, self._accounting)
        elif pool == "threads":
            self._pool = ThreadHashPool(self._hasher, threads, self._accounting)
        else:
            raise ValueError(f"unknown hashing pool {pool!r}")
        # How long a failed login waits while imported hashes remain (app/login_padding.py).
        self.padding = ImportedHashPadding(padding_ceiling_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> Passwords:
        return cls(
            memory_kib=settings.password_hash_memory_kib,
            time_cost=settings.password_hash_time_cost,
            parallelism=settings.password_hash_parallelism,
            threads=settings.password_hash_threads,
            padding_ceiling_seconds=settings.imported_hash_padding_max_seconds,
            pool=settings.password_hash_pool,
        )

    async def start(self) -> None:
        """Start the hashing pool (its processes, ready to hash) before the first request."""
        await self._pool.start()

    async def close(self) -> None:
        await self._pool.close()

    @property
    def pool(self) -> ProcessHashPool | ThreadHashPool:
        return self._pool

    @property
    def in_progress(self) -> int:
        """Hashes running right now, for tests and diagnostics."""
        return self._accounting.in_progress

    @property
    def hashes_computed(self) -> int:
        """Hashes started so far: what login traffic has cost this process."""
        return self._accounting.hashes_computed

    async def hash(self, password: str) -> str:
        new_hash: str = await self._pool.run("hash", normalize_password(password))
        return new_hash

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Costs the same with or without a stored hash, so unknown emails don't answer faster."""
        matches, _ = await self._verify_padded(password, password_hash, upgrade=False)
        return matches

    async def verify_and_update(
        self, password: str, password_hash: str | None
    ) -> tuple[bool, str | None]:
        """(matches, new hash): a new Argon2id hash when the stored one is imported, older, or
        of the password as typed before passwords were normalised.

        While imported hashes remain, a failure lasts at least as long as the slowest recent
        verification of one (bounded: app/login_padding.py): without that, an unknown email
        (one Argon2id of ours) would answer faster than an imported account whose old format
        is slower, and tell the two apart.
        """
        return await self._verify_padded(password, password_hash, upgrade=True)

    async def _verify(self, operation: str, *arguments: Any) -> Verdict:
        verdict = Verdict(*await self._pool.run(operation, *arguments))
        if verdict.imported_seconds is not None:
            self.padding.verified_imported(verdict.imported_seconds)
        return verdict

    async def _verify_padded(
        self, password: str, password_hash: str | None, *, upgrade: bool
    ) -> tuple[bool, str | None]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        normalized = normalize_password(password)
        if password_hash is None:
            await self._pool.run("dummy_verify")
            matches, new_hash = False, None
        else:
            matches, new_hash, _ = await self._verify(
                "verify", password, normalized, password_hash, upgrade
            )
        if not matches and normalized != password:
            # The hash may be of the other form: ours stored before passwords were normalised
            # are of the text as typed, an imported one may be of what another system saw.
            # Every failure, an unknown email's too, pays for this second try.
            matches, new_hash, _ = await self._verify(
                "verify_other_form", password, normalized, password_hash, upgrade
            )
        if not matches and (wait := self.padding.seconds()) > 0:
            self.padding.padded_failures += 1
            # A sleep on the event loop: the padding costs no hashing thread and no CPU.
            remaining = wait - (loop.time() - started)
            if remaining > 0:
                await asyncio.sleep(remaining)
        return matches, new_hash

    def hash_blocking(self, password: str) -> str:
        """For the command line and measurements, where no event loop is running."""
        return self._hasher.hash(normalize_password(password))


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    family_id: uuid.UUID
    issued_at: int
    expires_at: int
    jti: str
    amr: tuple[str, ...]
    auth_time: int


class InvalidToken(Exception):
    """The presented access token is not one we issued and would still accept.

    `description` is what the client is told (RFC 6750 §3 error_description): whether the
    token is malformed, expired or otherwise invalid, and nothing of why a signature or a claim
    failed, which would help a forger more than a client.
    """

    description = "The access token is invalid"


class MalformedToken(InvalidToken):
    """Not the text of a JWT: not three canonical base64url segments, or too long."""

    description = "The access token is malformed"


class ExpiredToken(InvalidToken):
    """Signed by one of our keys and otherwise acceptable, but past its `exp`."""

    description = "The access token expired"


def check_token_text(token: str) -> None:
    """InvalidToken unless `token` is exactly three canonical base64url segments, not too long.

    Every path that verifies a JWT calls this before decoding anything. python-jose decodes
    base64 leniently (padding, `+` and `/`, characters outside the alphabet and set unused bits
    are all accepted), so without it one token would have many spellings that verify: each a
    different cache key, and, with junk appended, as large as the client likes.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        raise MalformedToken("token too long")
    segments = token.split(".")
    if len(segments) != 3 or not all(_is_canonical_base64url(segment) for segment in segments):
        raise MalformedToken("malformed token")


def _is_canonical_base64url(segment: str) -> bool:
    """RFC 4648 §3.5 and §5: only the alphabet, no padding, and the unused low bits zero."""
    if _BASE64URL_SEGMENT.fullmatch(segment) is None:
        return False
    # Each character carries 6 bits. A final group of 2 characters encodes one byte (4 bits
    # unused), of 3 characters two bytes (2 bits unused); 1 character encodes no whole byte.
    unused_bits = {0: 0, 2: 4, 3: 2}.get(len(segment) % 4)
    if unused_bits is None:
        return False
    last = _BASE64URL_ALPHABET.index(segment[-1])
    return last & ((1 << unused_bits) - 1) == 0


class VerifiedTokenCache:
    """Claims of access tokens that verified, by their exact (canonical) text, until they expire.

    Bounded in entries and in bytes: the oldest entries leave first (dicts keep insertion
    order, so expired tokens leave soonest). `bytes` is this cache's own estimate of the memory
    its entries hold: the token strings and the claims objects.
    """

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[str, tuple[AccessClaims, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, *, now: float) -> AccessClaims | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        claims, _ = entry
        if now >= claims.expires_at:
            self._remove(token)
            return None
        return claims

    def put(self, token: str, claims: AccessClaims) -> None:
        size = _entry_bytes(token, claims)
        if size > self.max_bytes:
            return
        if token in self._entries:
            self._remove(token)
        while self._entries and (
            len(self._entries) >= self.max_entries or self.bytes + size > self.max_bytes
        ):
            self._remove(next(iter(self._entries)))
        self._entries[token] = (claims, size)
        self.bytes += size

    def _remove(self, token: str) -> None:
        _, size = self._entries.pop(token)
        self.bytes -= size


# Per entry beyond the token and the claims: the dict slot and the (claims, size) tuple.
_ENTRY_OVERHEAD_BYTES = 128


def _entry_bytes(token: str, claims: AccessClaims) -> int:
    """The token string, the claims object and every value it holds (a tuple's items too)."""
    values = [getattr(claims, name) for name in claims.__slots__]
    values += [item for value in values if isinstance(value, tuple) for item in value]
    return (
        sys.getsizeof(token)
        + sys.getsizeof(claims)
        + sum(sys.getsizeof(value) for value in values)
        + _ENTRY_OVERHEAD_BYTES
    )


def issuer_of(settings: Settings) -> str:
    """The `iss` of every token and the metadata's `issuer`: JWT_ISSUER, else PUBLIC_URL."""
    return settings.jwt_issuer or settings.public_url


class AccessTokens:
    """Issues and checks access tokens: JWTs with a pinned algorithm, known keys, required claims.

    One key signs; every configured key verifies, chosen by the token's `kid` among those keys
    only. Nothing in a token's header can name a key from elsewhere or change the algorithm.
    """

    def __init__(
        self,
        *,
        signing_key: SigningKey,
        verification_keys: Sequence[VerificationKey],
        ttl_seconds: int,
        issuer: str,
        audience: str | None,
        cache_entries: int = VERIFIED_TOKEN_CACHE_ENTRIES,
        cache_bytes: int = VERIFIED_TOKEN_CACHE_BYTES,
    ) -> None:
        self._algorithm = signing_key.algorithm
        if any(key.algorithm != self._algorithm for key in verification_keys):
            raise ValueError("every verification key must use the signing key's algorithm")
        # Keys are prepared once: python-jose would otherwise parse a PEM at every call.
        self._signer = jwk.construct(signing_key.key, self._algorithm)
        self._signing_headers: dict[str, str] = {"typ": ACCESS_TOKEN_TYPE}
        if signing_key.kid is not None:
            self._signing_headers["kid"] = signing_key.kid
        self._verifiers = {
            key.kid: jwk.construct(key.key, self._algorithm) for key in verification_keys
        }
        self.ttl_seconds = ttl_seconds
        self.issuer = issuer
        self.audience = audience
        self._options = {
            **{f"require_{claim}": True for claim in ("exp", "iat", "sub", "jti", "iss")},
            "require_aud": audience is not None,
            "leeway": 0,
        }
        self.verified = VerifiedTokenCache(max_entries=cache_entries, max_bytes=cache_bytes)

    @classmethod
    def from_settings(cls, settings: Settings, keys: TokenKeys) -> AccessTokens:
        return cls(
            signing_key=keys.signing,
            verification_keys=keys.verifying,
            ttl_seconds=settings.access_token_ttl_seconds,
            issuer=issuer_of(settings),
            audience=settings.jwt_audience,
        )

    def issue(
        self,
        *,
        user_id: uuid.UUID,
        family_id: uuid.UUID,
        amr: Sequence[str],
        auth_time: dt.datetime,
        now: dt.datetime,
    ) -> str:
        """A token of the login `family_id`; `amr` and `auth_time` are the login's (RFC 8176)."""
        issued_at = int(now.timestamp())
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "sid": str(family_id),
            "iat": issued_at,
            "exp": issued_at + self.ttl_seconds,
            "jti": secrets.token_urlsafe(16),
            "amr": list(amr),
            "auth_time": int(auth_time.timestamp()),
            "iss": self.issuer,
        }
        if self.audience is not None:
            claims["aud"] = self.audience
        return jwt.encode(
            claims, self._signer, algorithm=self._algorithm, headers=self._signing_headers
        )

    def _verifier_for(self, header: dict[str, Any]) -> Any:
        """The configured key the header names; InvalidToken for anything else."""
        # RFC 7515 §4.1.11: a critical extension we don't implement must be refused.
        if "crit" in header:
            raise InvalidToken("unsupported critical header")
        # RFC 8725 §3.11 and RFC 9068 §4: only a token typed as an access token is one.
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidToken("not an access token")
        # RFC 8725 §3.1, §2.6: the algorithm is ours to choose, and keys come from our
        # configuration, never from a URL or a key embedded in the token.
        if header.get("alg") != self._algorithm:
            raise InvalidToken("unexpected algorithm")
        if any(name in header for name in FOREIGN_KEY_HEADERS):
            raise InvalidToken("token names a key from elsewhere")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("bad kid")
        verifier = self._verifiers.get(kid)
        if verifier is None:
            raise InvalidToken("unknown key")
        return verifier

    def decode(self, token: str, *, now: dt.datetime) -> AccessClaims:
        """The token's claims, or InvalidToken for anything we would not have issued.

        The text is checked before anything decodes or remembers it (one spelling per
        token), so only canonical tokens reach python-jose or the cache. Tokens that verified are remembered until they expire: only
        the signature and claim checks are skipped, never the revocation check, not done here.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise MalformedToken("token too long")
        # Only canonical text is ever put in the cache and a hit is an exact match, so a hit
        # needs no second look at the text: that saved about 3 us of every bearer request.
        claims = self.verified.get(token, now=now.timestamp())
        if claims is not None:
            return claims
        check_token_text(token)
        claims = self._verify(token, now=now)
        self.verified.put(token, claims)
        return claims

    def _verify(self, token: str, *, now: dt.datetime) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            verifier = self._verifier_for(header)
            claims = jwt.decode(
                token,
                verifier,
                algorithms=[self._algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options=self._options,
            )
            if any(claim not in claims for claim in REQUIRED_CLAIMS):
                raise InvalidToken("missing claim")
            issued_at = int(claims["iat"])
            expires_at = int(claims["exp"])
            if not isinstance(claims["jti"], str):
                raise InvalidToken("bad jti")
            amr = claims["amr"]
            if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
                raise InvalidToken("bad amr")
            auth_time = claims["auth_time"]
            if not isinstance(auth_time, int) or isinstance(auth_time, bool):
                raise InvalidToken("bad auth_time")
            user_id = uuid.UUID(claims["sub"])
            family_id = uuid.UUID(claims["sid"])
        # python-jose checks the signature before the claims, so only a token signed with one
        # of our keys can be reported as expired.
        except ExpiredSignatureError:
            raise ExpiredToken("expired") from None
        # python-jose raises TypeError/ValueError/OverflowError for some malformed claim
        # values (an `iat` of null, a list, or 1e400) instead of its own JWTError.
        except (JWTError, JWKError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise InvalidToken(str(exc)) from None
        if issued_at > now.timestamp() + CLOCK_SKEW_SECONDS:
            raise InvalidToken("issued in the future")
        return AccessClaims(
            user_id=user_id,
            family_id=family_id,
            issued_at=issued_at,
            expires_at=expires_at,
            jti=claims["jti"],
            amr=tuple(amr),
            auth_time=auth_time,
        )


class IntrospectionClients:
    """The resource servers allowed to introspect, checked by HTTP Basic in constant time.

    Ids and secrets are compared as SHA-256 digests with hmac.compare_digest, against every
    configured client whatever matched before: the time taken says nothing about how much of
    an id or a secret was right, nor which client it was.
    """

    def __init__(self, clients: Sequence[tuple[str, str]]) -> None:
        self._clients = [
            (client_id, _digest(client_id), _digest(secret)) for client_id, secret in clients
        ]

    @classmethod
    def from_settings(cls, settings: Settings) -> IntrospectionClients:
        return cls(
            [
                (client.client_id, client.secret.get_secret_value())
                for client in settings.introspection_clients
            ]
        )

    def authenticate(self, authorization: str | None) -> str | None:
        """The client id an `Authorization: Basic ...` header proves, or None."""
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return None
        id_digest, secret_digest = _digest(credentials[0]), _digest(credentials[1])
        matched = None
        for client_id, expected_id, expected_secret in self._clients:
            # `&`, not `and`: both comparisons run for every client.
            if hmac.compare_digest(id_digest, expected_id) & hmac.compare_digest(
                secret_digest, expected_secret
            ):
                matched = client_id
        return matched


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(id, secret) from an RFC 7617 Basic header, form-decoded as RFC 6749 §2.3.1 says."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # not base64, or not UTF-8
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


def new_refresh_token() -> str:
    """An opaque refresh token: 256 bits from the OS's CSPRNG."""
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hash_opaque_token(token)


def hash_opaque_token(token: str) -> str:
    """SHA-256 of a token of 256 random bits: a fast hash suffices, and a leak yields nothing."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# Second factor (RFC 6238 TOTP and recovery codes).
#
# passlib.totp (from libpass, already our password hasher) rather than pyotp: no new runtime
# dependency, and its match() checks exactly the counters of a window in constant time per
# candidate and reports which counter matched, which replay protection needs. The tests
# compute codes with pyotp, an independent implementation.

TOTP_SECRET_BYTES = 20  # 160 bits, RFC 4226 §4's recommended length, as API.md requires
TOTP_PERIOD_SECONDS = 30
TOTP_DIGITS = 6
TOTP_ISSUER = "Passgate"
RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_BYTES = 15  # 120 bits each, 24 base32 letters
MFA_TOKEN_BYTES = 32
# HKDF's `info`: the key that encrypts TOTP secrets is used for nothing else.
_TOTP_KEY_INFO = b"passgate totp secret encryption v1"
_ENCRYPTED_PREFIX = "v1:"


def new_totp_secret() -> bytes:
    return secrets.token_bytes(TOTP_SECRET_BYTES)


def totp_secret_base32(secret: bytes) -> str:
    return base64.b32encode(secret).decode("ascii")


def totp_uri(secret: bytes, *, account: str) -> str:
    """The otpauth:// URI authenticator apps read (Google's Key Uri Format), as API.md spells it."""
    label = quote(f"{TOTP_ISSUER}:{account}", safe="@:")
    return (
        f"otpauth://totp/{label}?secret={totp_secret_base32(secret)}&issuer={TOTP_ISSUER}"
        f"&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_PERIOD_SECONDS}"
    )


def totp_step(now: dt.datetime) -> int:
    return int(now.timestamp()) // TOTP_PERIOD_SECONDS


def match_totp(secret: bytes, code: str, *, now: dt.datetime) -> int | None:
    """The time step a code belongs to if it is right now, one step early or one late; else None.

    Whether that step was already used is for the caller's conditional UPDATE to decide.
    """
    totp = TOTP(key=secret, format="raw", digits=TOTP_DIGITS, period=TOTP_PERIOD_SECONDS)
    try:
        # window=period: counters from one step before to one step after, no further.
        matched = totp.match(code, time=now.timestamp(), window=TOTP_PERIOD_SECONDS)
    except TokenError:
        return None
    return int(matched.counter)


class TotpSecretBox:
    """Encrypts TOTP secrets at rest with AES-256-GCM under a key derived from SECRET_KEY.

    A database dump alone yields no secret. The user's id is the associated data, so a
    ciphertext moved to another user's row does not decrypt.
    """

    def __init__(self, service_secret: str | None) -> None:
        self._aead: AESGCM | None = None
        if service_secret is not None:
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_TOTP_KEY_INFO).derive(
                service_secret.encode("utf-8")
            )
            self._aead = AESGCM(key)

    @property
    def available(self) -> bool:
        """False where no SECRET_KEY is configured (RS256/ES256 in production without one)."""
        return self._aead is not None

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise SecondFactorUnavailable
        return self._aead

    def encrypt(self, secret: bytes, *, user_id: uuid.UUID) -> str:
        nonce = os.urandom(12)
        sealed = self._cipher().encrypt(nonce, secret, user_id.bytes)
        return _ENCRYPTED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, stored: str, *, user_id: uuid.UUID) -> bytes:
        """The secret; SecondFactorUnavailable if it cannot be read (another SECRET_KEY)."""
        if not stored.startswith(_ENCRYPTED_PREFIX):
            raise SecondFactorUnavailable
        try:
            raw = base64.urlsafe_b64decode(stored[len(_ENCRYPTED_PREFIX) :])
            return self._cipher().decrypt(raw[:12], raw[12:], user_id.bytes)
        except (InvalidTag, binascii.Error, ValueError):
            raise SecondFactorUnavailable from None


class SecondFactorUnavailable(Exception):
    """TOTP secrets cannot be sealed or opened: no SECRET_KEY, or not the one that sealed them."""


def new_recovery_codes() -> list[str]:
    """Ten codes of 120 random bits, as lower-case base32 in groups of four: `abcd-efgh-...`."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        text = base64.b32encode(secrets.token_bytes(RECOVERY_CODE_BYTES)).decode().lower()
        codes.append("-".join(text[i : i + 4] for i in range(0, len(text), 4)))
    return codes


def hash_recovery_code(code: str, *, user_id: uuid.UUID) -> str:
    """The stored form of a recovery code, ignoring case, spaces and hyphens.

    SHA-256 suffices for 120 random bits. Unkeyed on purpose: recovery codes must still work
    after SECRET_KEY is replaced, when TOTP secrets can no longer be decrypted. The user's id
    is mixed in so that equal codes of two users (never expected) could not be told apart.
    """
    normalized = "".join(code.split()).replace("-", "").lower()
    return hashlib.sha256(user_id.bytes + normalized.encode("utf-8", "surrogatepass")).hexdigest()


def new_mfa_token() -> str:
    return secrets.token_urlsafe(MFA_TOKEN_BYTES)
