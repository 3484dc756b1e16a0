"""New secrets and signing keys: what `python -m app generate-secret` and `generate-key` print.

Kept apart from app.config and app.keys, which load the settings stack (pydantic-settings,
SQLAlchemy): these two commands run before any configuration exists and import only this.
"""

from __future__ import annotations

import secrets

# NIST SP 800-57 and RFC 7518 §3.3: RSA keys under 2048 bits are not acceptable for signing.
MIN_RSA_BITS = 2048
DEFAULT_RSA_BITS = 3072


def generate_secret() -> str:
    """A new secret: 48 bytes (384 bits) from the OS's CSPRNG, as 64 URL-safe characters."""
    return secrets.token_urlsafe(48)


def generate_private_key_pem(algorithm: str, *, rsa_bits: int = DEFAULT_RSA_BITS) -> bytes:
    """A new unencrypted PKCS#8 PEM private key for RS256 or ES256."""
    # Imported here: `--help` and generate-secret, which import this module, need no key code.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "RS256":
        if rsa_bits < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits")
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    elif algorithm == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"{algorithm} uses a shared secret (SECRET_KEY), not a key file")
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
