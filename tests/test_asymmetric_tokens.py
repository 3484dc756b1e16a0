"""RS256/ES256 signing: key ids, the JWKS, forged tokens, rotation, and keys refused at start."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt
from pydantic import ValidationError

from app.keys import KeyConfigError, load_token_keys, thumbprint
from tests.conftest import bearer, new_user
from tests.conftest import test_settings as make_settings
from tests.keyfiles import (
    b64url_json,
    hs256_token,
    new_private_pem,
    public_pem,
    serving,
    unverified_parts,
    write,
)

ALGORITHMS = ["RS256", "ES256"]
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture(scope="session")
def key_pems() -> dict[str, list[bytes]]:
    """Three private keys per algorithm: the service's, a rotated-in one, an attacker's."""
    return {algorithm: [new_private_pem(algorithm) for _ in range(3)] for algorithm in ALGORITHMS}


@pytest.fixture(params=ALGORITHMS)
def algorithm(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def key_files(tmp_path: Path, key_pems: dict[str, list[bytes]], algorithm: str) -> list[Path]:
    return [write(tmp_path / f"key{i}.pem", pem) for i, pem in enumerate(key_pems[algorithm])]


def asymmetric_settings(database_url: str, algorithm: str, key: Path, *verify: Path) -> Any:
    return make_settings(
        database_url=database_url,
        jwt_algorithm=algorithm,
        jwt_private_key_file=key,
        jwt_verify_key_files=list(verify),
    )


def kid_of(pem: bytes) -> str:
    return thumbprint(serialization.load_pem_private_key(pem, password=None).public_key())


def signed(claims: dict[str, Any], pem: bytes, algorithm: str, **headers: Any) -> str:
    """Signed as the service signs (typed at+jwt) unless the headers say otherwise."""
    headers = {"typ": "at+jwt", **headers}
    return jwt.encode(claims, pem.decode(), algorithm=algorithm, headers=headers)


@pytest.fixture
async def client_and_token(
    tmp_path: Path, algorithm: str, key_files: list[Path]
) -> AsyncIterator[tuple[Any, str]]:
    """A service and a token it issued. On SQLite always: these tests are about tokens alone."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'tokens.db'}"
    async with serving(asymmetric_settings(database_url, algorithm, key_files[0])) as client:
        user = await new_user(client)
        yield client, user["access_token"]


def test_thumbprint_matches_rfc_7638_example() -> None:
    # RFC 7638 §3.1: this RSA key's thumbprint is NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJ"
        "ECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2"
        "QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6"
        "WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    numbers = rsa.RSAPublicNumbers(
        e=65537, n=int.from_bytes(base64.urlsafe_b64decode(n + "=="), "big")
    )
    assert thumbprint(numbers.public_key()) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


async def test_tokens_name_their_signing_key_and_the_jwks_publishes_it(
    client_and_token: tuple[Any, str], algorithm: str, key_pems: dict[str, list[bytes]]
) -> None:
    client, token = client_and_token
    header, _ = unverified_parts(token)
    assert header["alg"] == algorithm
    assert header["kid"] == kid_of(key_pems[algorithm][0])

    response = await client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    [key] = response.json()["keys"]
    assert key["kid"] == header["kid"]
    assert key["alg"] == algorithm
    assert key["use"] == "sig"
    assert key["kty"] == {"RS256": "RSA", "ES256": "EC"}[algorithm]


async def test_the_jwks_holds_public_keys_only(
    database_url: str, algorithm: str, key_files: list[Path]
) -> None:
    settings = asymmetric_settings(database_url, algorithm, key_files[0], key_files[1])
    async with serving(settings) as client:
        keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
    assert len(keys) == 2
    for key in keys:
        assert not PRIVATE_JWK_MEMBERS & key.keys()


async def test_the_jwks_is_empty_under_hs256(client: Any) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.json() == {"keys": []}
    assert response.headers["cache-control"].startswith("public, max-age=")


async def test_a_token_resigned_with_the_service_key_is_accepted(
    client_and_token: tuple[Any, str], algorithm: str, key_pems: dict[str, list[bytes]]
) -> None:
    # The control for the forgeries below: their claims are fine, only header or signature differ.
    client, token = client_and_token
    header, claims = unverified_parts(token)
    resigned = signed(claims, key_pems[algorithm][0], algorithm, kid=header["kid"])
    assert (await client.get("/users/me", headers=bearer(resigned))).status_code == 200


def forge(kind: str, token: str, algorithm: str, pems: list[bytes], url: str) -> str:
    header, claims = unverified_parts(token)
    service_pem, attacker_pem = pems[0], pems[2]
    kid = header["kid"]
    if kind == "alg none":
        return f"{b64url_json({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64url_json(claims)}."
    if kind == "HS256 with the public key as secret":
        return hs256_token(
            {"alg": "HS256", "typ": "JWT", "kid": kid}, claims, public_pem(service_pem)
        )
    if kind == "signed by an unknown key, claiming the service's kid":
        return signed(claims, attacker_pem, algorithm, kid=kid)
    if kind == "signed by an unknown key with its own kid":
        return signed(claims, attacker_pem, algorithm, kid=kid_of(attacker_pem))
    if kind == "an unknown kid on a good signature":
        return signed(claims, service_pem, algorithm, kid="not-a-key-we-have")
    if kind == "no kid":
        return signed(claims, service_pem, algorithm)
    if kind == "jwk header with the attacker's key":
        attacker_jwk = jwk.construct(public_pem(attacker_pem).decode(), algorithm).to_dict()
        return signed(claims, attacker_pem, algorithm, kid=kid, jwk=attacker_jwk)
    if kind in ("jku", "x5u"):
        return signed(claims, attacker_pem, algorithm, kid=kid_of(attacker_pem), **{kind: url})
    if kind in ("jku on a good signature", "x5u on a good signature"):
        return signed(claims, service_pem, algorithm, kid=kid, **{kind.split()[0]: url})
    if kind == "x5c":
        return signed(claims, attacker_pem, algorithm, kid=kid, x5c=["MIIBAAAA"])
    raise AssertionError(kind)


FORGERIES = [
    "alg none",
    "HS256 with the public key as secret",
    "signed by an unknown key, claiming the service's kid",
    "signed by an unknown key with its own kid",
    "an unknown kid on a good signature",
    "no kid",
    "jwk header with the attacker's key",
    "jku",
    "x5u",
    "jku on a good signature",
    "x5u on a good signature",
    "x5c",
]


@pytest.mark.parametrize("kind", FORGERIES)
async def test_a_forged_token_is_refused_and_no_key_url_is_fetched(
    client_and_token: tuple[Any, str],
    algorithm: str,
    key_pems: dict[str, list[bytes]],
    kind: str,
) -> None:
    client, token = client_and_token
    fetches = 0

    async def count_fetch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal fetches
        fetches += 1
        writer.close()

    server = await asyncio.start_server(count_fetch, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        forged = forge(kind, token, algorithm, key_pems[algorithm], f"http://127.0.0.1:{port}/keys")
        response = await client.get("/users/me", headers=bearer(forged))
    finally:
        server.close()
        await server.wait_closed()

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert fetches == 0


async def _token_signed_by(database_url: str, algorithm: str, key: Path) -> str:
    async with serving(asymmetric_settings(database_url, algorithm, key)) as client:
        return (await new_user(client))["access_token"]


@pytest.mark.parametrize("old_key_as", ["private key", "public key"])
async def test_tokens_signed_before_a_rotation_work_while_the_old_key_verifies(
    database_url: str,
    algorithm: str,
    key_files: list[Path],
    key_pems: dict[str, list[bytes]],
    tmp_path: Path,
    old_key_as: str,
) -> None:
    old_token = await _token_signed_by(database_url, algorithm, key_files[0])
    old_key = key_files[0]
    if old_key_as == "public key":
        old_key = write(tmp_path / "old-public.pem", public_pem(key_pems[algorithm][0]))

    settings = asymmetric_settings(database_url, algorithm, key_files[1], old_key)
    async with serving(settings) as client:
        old_response = await client.get("/users/me", headers=bearer(old_token))
        new_token = (await new_user(client))["access_token"]
        kids = {key["kid"] for key in (await client.get("/.well-known/jwks.json")).json()["keys"]}

    assert old_response.status_code == 200
    assert unverified_parts(new_token)[0]["kid"] == kid_of(key_pems[algorithm][1])
    assert kids == {kid_of(key_pems[algorithm][0]), kid_of(key_pems[algorithm][1])}


async def test_a_token_signed_by_a_removed_key_is_refused(
    database_url: str, algorithm: str, key_files: list[Path]
) -> None:
    old_token = await _token_signed_by(database_url, algorithm, key_files[0])

    async with serving(asymmetric_settings(database_url, algorithm, key_files[1])) as client:
        response = await client.get("/users/me", headers=bearer(old_token))

    assert response.status_code == 401


@pytest.mark.parametrize(("expires_in", "status"), [(-1, 401), (600, 200)])
async def test_an_old_key_token_works_until_it_expires(
    database_url: str,
    algorithm: str,
    key_files: list[Path],
    key_pems: dict[str, list[bytes]],
    expires_in: int,
    status: int,
) -> None:
    old_token = await _token_signed_by(database_url, algorithm, key_files[0])
    header, claims = unverified_parts(old_token)
    now = int(time.time())
    claims.update(iat=now - 900, exp=now + expires_in)
    aged = signed(claims, key_pems[algorithm][0], algorithm, kid=header["kid"])

    settings = asymmetric_settings(database_url, algorithm, key_files[1], key_files[0])
    async with serving(settings) as client:
        response = await client.get("/users/me", headers=bearer(aged))

    assert response.status_code == status


# Keys the service must refuse to start with, and the words the operator then reads.
def _bad_key(kind: str, tmp_path: Path, pems: dict[str, list[bytes]]) -> tuple[str, Path, str]:
    if kind == "RSA under 2048 bits":
        pem = new_private_pem("RS256", rsa_bits=1024)
        return (
            "RS256",
            write(tmp_path / "k.pem", pem),
            "1024-bit RSA key; RS256 needs at least 2048",
        )
    if kind == "EC key for RS256":
        return "RS256", write(tmp_path / "k.pem", pems["ES256"][0]), "needs an RSA key"
    if kind == "RSA key for ES256":
        return "ES256", write(tmp_path / "k.pem", pems["RS256"][0]), "needs an EC key on P-256"
    if kind == "P-384 key for ES256":
        pem = new_private_pem("ES256", curve=ec.SECP384R1())
        return "ES256", write(tmp_path / "k.pem", pem), "secp384r1"
    if kind == "missing file":
        return "ES256", tmp_path / "absent.pem", "cannot read"
    if kind == "not PEM":
        return "ES256", write(tmp_path / "k.pem", b"hello\n"), "is not a PEM key file"
    if kind == "public key as the signing key":
        pem = public_pem(pems["ES256"][0])
        return "ES256", write(tmp_path / "k.pem", pem), "holds a public key"
    if kind == "encrypted key":
        key = serialization.load_pem_private_key(pems["ES256"][0], password=None)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
        return "ES256", write(tmp_path / "k.pem", pem), "is encrypted"
    raise AssertionError(kind)


BAD_KEYS = [
    "RSA under 2048 bits",
    "EC key for RS256",
    "RSA key for ES256",
    "P-384 key for ES256",
    "missing file",
    "not PEM",
    "public key as the signing key",
    "encrypted key",
]


@pytest.mark.parametrize("kind", BAD_KEYS)
def test_an_unusable_signing_key_is_refused_with_a_clear_message(
    tmp_path: Path, key_pems: dict[str, list[bytes]], kind: str
) -> None:
    algorithm, path, words = _bad_key(kind, tmp_path, key_pems)
    settings = make_settings(jwt_algorithm=algorithm, jwt_private_key_file=path)
    with pytest.raises(KeyConfigError, match="JWT_PRIVATE_KEY_FILE") as raised:
        load_token_keys(settings)
    assert words in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_verification_key_of_another_type_is_refused(
    tmp_path: Path, key_pems: dict[str, list[bytes]]
) -> None:
    settings = make_settings(
        jwt_algorithm="ES256",
        jwt_private_key_file=write(tmp_path / "signing.pem", key_pems["ES256"][0]),
        jwt_verify_key_files=[write(tmp_path / "old.pem", public_pem(key_pems["RS256"][0]))],
    )
    with pytest.raises(KeyConfigError, match=r"JWT_VERIFY_KEY_FILES: .* needs an EC key on P-256"):
        load_token_keys(settings)


@pytest.mark.parametrize(
    "values",
    [
        {"jwt_algorithm": "RS256"},
        {"jwt_algorithm": "HS256", "jwt_private_key_file": "key.pem"},
        {"jwt_algorithm": "HS256", "jwt_verify_key_files": "old.pem"},
        {"jwt_algorithm": "PS256"},
    ],
)
def test_settings_refuse_key_files_that_do_not_fit_the_algorithm(values: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        make_settings(**values)


def _environment(**values: str) -> dict[str, str]:
    """This process's environment without Passgate's settings, plus the given ones."""
    names = {"DATABASE_URL", "SECRET_KEY", "JWT_ALGORITHM", "JWT_PRIVATE_KEY_FILE"}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **values}


def test_the_service_does_not_start_with_a_weak_key(tmp_path: Path) -> None:
    key = write(tmp_path / "weak.pem", new_private_pem("RS256", rsa_bits=1024))
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"],
        env=_environment(
            DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
            JWT_ALGORITHM="RS256",
            JWT_PRIVATE_KEY_FILE=str(key),
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"passgate: invalid configuration: JWT_PRIVATE_KEY_FILE: {key} holds a 1024-bit RSA key; "
        "RS256 needs at least 2048 bits"
    ]


@pytest.mark.parametrize(("algorithm", "extra"), [("ES256", []), ("RS256", ["--bits", "2048"])])
def test_generate_key_prints_a_key_the_service_accepts(
    tmp_path: Path, algorithm: str, extra: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "generate-key", "--alg", algorithm, *extra],
        capture_output=True,
        timeout=60,
        check=True,
    )
    path = write(tmp_path / "key.pem", result.stdout)
    keys = load_token_keys(make_settings(jwt_algorithm=algorithm, jwt_private_key_file=path))
    assert keys.signing.algorithm == algorithm
    if algorithm == "RS256":
        assert isinstance(keys.signing.key, rsa.RSAPrivateKey)
        assert keys.signing.key.key_size == 2048


def test_generate_key_refuses_short_rsa_keys() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "generate-key", "--alg", "RS256", "--bits", "1024"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "at least 2048 bits" in result.stderr
