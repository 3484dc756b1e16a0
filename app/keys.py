"""Token signing keys: loading and checking PEM files, key ids, the public JWK Set, new keys.

Uses `cryptography` directly (python-jose's backend); JWTs themselves are made in security.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.config import Settings, load_or_create_secret_key
from app.keygen import MIN_RSA_BITS

Algorithm = Literal["HS256", "RS256", "ES256"]
ASYMMETRIC_ALGORITHMS: tuple[Algorithm, ...] = ("RS256", "ES256")

# PEM key files are a few kilobytes; refuse to read something that is obviously not one.
MAX_KEY_FILE_BYTES = 64 * 1024

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class KeyConfigError(Exception):
    """A configured key can't be used; the message is one line meant for the operator."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key that checks signatures: a public key (named by its thumbprint) or the HMAC secret."""

    algorithm: Algorithm
    kid: str | None
    key: PublicKey | str
    jwk: dict[str, str] | None  # the public JWK; None for an HMAC secret, which is never shown


@dataclass(frozen=True, slots=True)
class SigningKey:
    algorithm: Algorithm
    kid: str | None
    key: PrivateKey | str


@dataclass(frozen=True, slots=True)
class TokenKeys:
    """The one key that signs, and every key that verifies (the signing key's first)."""

    signing: SigningKey
    verifying: tuple[VerificationKey, ...]
    jwks: dict[str, list[dict[str, str]]] = field(init=False)

    def __post_init__(self) -> None:
        keys = [key.jwk for key in self.verifying if key.jwk is not None]
        object.__setattr__(self, "jwks", {"keys": keys})


def _b64url_uint(value: int, length: int | None = None) -> str:
    """RFC 7518 §2 Base64urlUInt: big-endian, no leading zeros unless a fixed length is given."""
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()


def public_jwk_members(public_key: PublicKey) -> dict[str, str]:
    """The members of a public JWK that RFC 7638 hashes (and nothing else)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
    point = public_key.public_numbers()
    size = (public_key.curve.key_size + 7) // 8  # RFC 7518 §6.2.1.2: full-length coordinates
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url_uint(point.x, size),
        "y": _b64url_uint(point.y, size),
    }


def thumbprint(public_key: PublicKey) -> str:
    """RFC 7638 JWK thumbprint: base64url SHA-256 of the required members, sorted, no spaces."""
    canonical = json.dumps(public_jwk_members(public_key), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _read_pem(path: Path, setting: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES or b"-----BEGIN " not in data:
        raise KeyConfigError(f"{setting}: {path} is not a PEM key file")
    return data


def _load_private(data: bytes, path: Path, setting: str) -> Any | None:
    """The private key in the PEM data, None when it holds no private key."""
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying "this one needs a password"
        raise KeyConfigError(
            f"{setting}: {path} is encrypted; give an unencrypted PEM key and protect the file"
        ) from None
    except ValueError:
        return None
    except serialization.UnsupportedAlgorithm:
        raise KeyConfigError(f"{setting}: {path} holds a key type that is not supported") from None


def _load_public(data: bytes) -> Any | None:
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, serialization.UnsupportedAlgorithm):
        return None


def _check_fits(public_key: Any, algorithm: Algorithm, path: Path, setting: str) -> PublicKey:
    """The key if it can sign `algorithm` safely; KeyConfigError naming the mismatch otherwise."""
    if algorithm == "RS256":
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise KeyConfigError(
                f"{setting}: {path} holds {_describe(public_key)}, "
                "but JWT_ALGORITHM=RS256 needs an RSA key"
            )
        if public_key.key_size < MIN_RSA_BITS:
            raise KeyConfigError(
                f"{setting}: {path} holds a {public_key.key_size}-bit RSA key; "
                f"RS256 needs at least {MIN_RSA_BITS} bits"
            )
        return public_key
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise KeyConfigError(
            f"{setting}: {path} holds {_describe(public_key)}, "
            "but JWT_ALGORITHM=ES256 needs an EC key on P-256"
        )
    return public_key


def _describe(public_key: Any) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"a {public_key.key_size}-bit RSA key"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"an EC key on {public_key.curve.name}"
    return f"a {type(public_key).__name__.removeprefix('_')} key"


def _jwk(public_key: PublicKey, algorithm: Algorithm, kid: str) -> dict[str, str]:
    return {**public_jwk_members(public_key), "use": "sig", "alg": algorithm, "kid": kid}


def load_signing_key(path: Path, algorithm: Algorithm) -> tuple[SigningKey, VerificationKey]:
    """The private key in a PEM file, checked against the algorithm, with its public half."""
    setting = "JWT_PRIVATE_KEY_FILE"
    data = _read_pem(path, setting)
    private_key = _load_private(data, path, setting)
    if private_key is None:
        if _load_public(data) is not None:
            raise KeyConfigError(
                f"{setting}: {path} holds a public key; the signing key must be a private key "
                "(public keys go in JWT_VERIFY_KEY_FILES)"
            )
        raise KeyConfigError(f"{setting}: {path} is not a PEM private key")
    public_key = _check_fits(private_key.public_key(), algorithm, path, setting)
    kid = thumbprint(public_key)
    return (
        SigningKey(algorithm=algorithm, kid=kid, key=private_key),
        VerificationKey(
            algorithm=algorithm, kid=kid, key=public_key, jwk=_jwk(public_key, algorithm, kid)
        ),
    )


def load_verification_key(path: Path, algorithm: Algorithm) -> VerificationKey:
    """The public half of a PEM file's key (public or private), checked against the algorithm."""
    setting = "JWT_VERIFY_KEY_FILES"
    data = _read_pem(path, setting)
    private_key = _load_private(data, path, setting)
    public_key = private_key.public_key() if private_key is not None else None
    if public_key is None:
        public_key = _load_public(data)
    if public_key is None:
        raise KeyConfigError(f"{setting}: {path} is not a PEM public or private key")
    public_key = _check_fits(public_key, algorithm, path, setting)
    kid = thumbprint(public_key)
    return VerificationKey(
        algorithm=algorithm, kid=kid, key=public_key, jwk=_jwk(public_key, algorithm, kid)
    )


def _without_duplicates(keys: Iterable[VerificationKey]) -> tuple[VerificationKey, ...]:
    unique: dict[str | None, VerificationKey] = {}
    for key in keys:
        unique.setdefault(key.kid, key)
    return tuple(unique.values())


def load_token_keys(settings: Settings) -> TokenKeys:
    """Every key the settings name, read and checked once; KeyConfigError when one is unusable."""
    algorithm: Algorithm = settings.jwt_algorithm
    if algorithm == "HS256":
        secret = load_or_create_secret_key(settings)
        return TokenKeys(
            signing=SigningKey(algorithm=algorithm, kid=None, key=secret),
            verifying=(VerificationKey(algorithm=algorithm, kid=None, key=secret, jwk=None),),
        )
    if settings.jwt_private_key_file is None:  # the settings validator already refuses this
        raise KeyConfigError(f"JWT_PRIVATE_KEY_FILE is required when JWT_ALGORITHM={algorithm}")
    signing, own = load_signing_key(settings.jwt_private_key_file, algorithm)
    others = [load_verification_key(path, algorithm) for path in settings.jwt_verify_key_files]
    return TokenKeys(signing=signing, verifying=_without_duplicates([own, *others]))
