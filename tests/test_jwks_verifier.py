"""The docs' verifier snippet (docs/signing-keys.md), run as written against the service's JWKS."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import JWTError, jwt

from tests.conftest import new_user
from tests.conftest import test_settings as make_settings
from tests.keyfiles import new_private_pem, serving, unverified_parts, write

README = Path(__file__).resolve().parent.parent / "docs" / "signing-keys.md"
ISSUER = "https://auth.example.com"
AUDIENCE = "orders-api"


def readme_verifier() -> Any:
    """The PassgateVerifier class from the README section, executed as a user would paste it."""
    section = README.read_text().split("Verifying Passgate tokens in another service", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None, "the README section lost its snippet"
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "signing-keys.md", "exec"), namespace)  # noqa: S102 -- our own README
    return namespace["PassgateVerifier"]


@pytest.fixture(params=["RS256", "ES256"])
def signing_pem(request: pytest.FixtureRequest) -> tuple[str, bytes]:
    return request.param, new_private_pem(request.param)


@pytest.fixture
async def passgate(
    database_url: str, tmp_path: Path, signing_pem: tuple[str, bytes]
) -> AsyncIterator[httpx.AsyncClient]:
    algorithm, pem = signing_pem
    settings = make_settings(
        database_url=database_url,
        jwt_algorithm=algorithm,
        jwt_private_key_file=write(tmp_path / "signing.pem", pem),
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    async with serving(settings) as client:
        yield client


def verifier(http: httpx.AsyncClient, *, audience: str = AUDIENCE) -> Any:
    return readme_verifier()(
        "http://test/.well-known/jwks.json", issuer=ISSUER, audience=audience, http=http
    )


async def test_another_service_verifies_a_token_with_the_jwks_alone(
    passgate: httpx.AsyncClient,
) -> None:
    user = await new_user(passgate)

    claims = await verifier(passgate).claims(user["access_token"])

    assert claims["sub"] == user["id"]
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE


async def test_the_verifier_refuses_a_token_for_another_audience(
    passgate: httpx.AsyncClient,
) -> None:
    user = await new_user(passgate)
    with pytest.raises(JWTError):
        await verifier(passgate, audience="billing-api").claims(user["access_token"])


async def test_the_verifier_refuses_an_expired_token(
    passgate: httpx.AsyncClient, signing_pem: tuple[str, bytes]
) -> None:
    algorithm, pem = signing_pem
    header, claims = unverified_parts((await new_user(passgate))["access_token"])
    claims.update(iat=int(time.time()) - 1000, exp=int(time.time()) - 10)
    expired = jwt.encode(claims, pem.decode(), algorithm=algorithm, headers=header)
    with pytest.raises(JWTError):
        await verifier(passgate).claims(expired)


async def test_the_verifier_refuses_a_token_signed_by_another_key(
    passgate: httpx.AsyncClient, signing_pem: tuple[str, bytes]
) -> None:
    algorithm, _ = signing_pem
    header, claims = unverified_parts((await new_user(passgate))["access_token"])
    forged = jwt.encode(
        claims, new_private_pem(algorithm).decode(), algorithm=algorithm, headers=header
    )
    with pytest.raises(JWTError):
        await verifier(passgate).claims(forged)
