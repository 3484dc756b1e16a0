"""docs/for-services.md: its two Python examples, run as written against a real server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import JWTError, jwt

from tests.conftest import DEFAULT_PASSWORD
from tests.keyfiles import new_private_pem, write
from tests.live_server import server_environment
from tests.processes import free_port, start_serve

PAGE = Path(__file__).resolve().parent.parent / "docs" / "for-services.md"
TESTED = "<!-- tested: tests/test_docs_for_services.py runs this block as written -->"
CLIENT_ID, CLIENT_SECRET = "orders-api", "orders-api-secret-that-is-long-enough-for-tests"
AUDIENCE = "orders-api"


def page_examples() -> dict[str, Any]:
    """Every block the page marks as tested, executed as a reader would paste it."""
    blocks = re.findall(re.escape(TESTED) + r"\n```python\n(.*?)```", PAGE.read_text(), re.DOTALL)
    assert len(blocks) == 2, "the page lost a tested example"
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102 -- our own docs
    return namespace


@pytest.fixture
def passgate(tmp_path: Path):
    """`python -m app serve` with ES256 keys, an audience and one introspection client."""
    key = write(tmp_path / "signing.pem", new_private_pem("ES256"))
    env = server_environment(
        tmp_path,
        {
            "JWT_ALGORITHM": "ES256",
            "JWT_PRIVATE_KEY_FILE": str(key),
            "JWT_AUDIENCE": AUDIENCE,
            "INTROSPECTION_CLIENTS": f"{CLIENT_ID}:{CLIENT_SECRET}",
        },
    )
    env.pop("PUBLIC_URL", None)  # serve names its own address, as make run does
    service = start_serve(env, tmp_path, port=free_port())
    try:
        yield service.url
    finally:
        service.stop()


async def run_examples(url: str) -> None:
    examples = page_examples()
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        user = {"name": "Ada", "email": "ada@example.com", "password": DEFAULT_PASSWORD}
        assert (await http.post("/signup", json=user)).status_code == 201
        form = {"grant_type": "password", "username": user["email"], "password": user["password"]}
        tokens = (await http.post("/token", data=form)).json()
        token = tokens["access_token"]

        verifier = examples["PassgateVerifier"](url, audience=AUDIENCE, http=http)
        introspection = examples["PassgateIntrospection"](
            url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, http=http
        )

        claims = await verifier.claims(token)
        assert claims["iss"] == url and claims["aud"] == AUDIENCE
        active = await introspection.active_claims(token)
        assert active is not None and active["sub"] == claims["sub"]
        # A refresh token is live, but it is not an access token.
        assert await introspection.active_claims(tokens["refresh_token"]) is None

        # The verifier refuses a token of another type, or for another audience.
        header, payload = jwt.get_unverified_header(token), jwt.get_unverified_claims(token)
        with pytest.raises(JWTError, match="not an access token"):
            await verifier.claims(
                jwt.encode(payload, "k" * 32, algorithm="HS256", headers={"kid": header["kid"]})
            )
        with pytest.raises(JWTError):
            await examples["PassgateVerifier"](url, audience="billing", http=http).claims(token)

        # After a logout, only introspection knows: the very point of the page's table.
        logout = await http.post("/logout", headers={"Authorization": f"Bearer {token}"})
        assert logout.status_code == 204
        assert await introspection.active_claims(token) is None
        assert (await verifier.claims(token))["sub"] == claims["sub"]

        # Wrong credentials are an error for the resource server to see, not "inactive".
        wrong = examples["PassgateIntrospection"](
            url, client_id=CLIENT_ID, client_secret="wrong", http=http
        )
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await wrong.active_claims(token)
        assert refused.value.response.status_code == 401


def test_the_pages_examples_verify_and_introspect_as_the_page_says(passgate: str):
    asyncio.run(run_examples(passgate))
