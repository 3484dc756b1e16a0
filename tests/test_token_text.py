"""One spelling per token: only canonical base64url text is verified, or remembered.

python-jose decodes base64 leniently, so before the text check each of these spellings of a
valid token verified, and each was cached under its own text (junk included).
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from jose import jwt

from app.keys import SigningKey, VerificationKey
from app.security import (
    MAX_TOKEN_LENGTH,
    VERIFIED_TOKEN_CACHE_BYTES,
    VERIFIED_TOKEN_CACHE_ENTRIES,
    AccessTokens,
    InvalidToken,
    check_token_text,
)
from tests.conftest import TEST_SECRET, bearer, new_user

INVALID = 'Bearer error="invalid_token"'
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _with_low_bit_set(token: str) -> str:
    """The token with the lowest (unused) bit of its signature's last character set."""
    body, last = token[:-1], token[-1]
    return body + ALPHABET[ALPHABET.index(last) | 1]


def _insert_in_signature(token: str, junk: str) -> str:
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    return f"{header}.{payload}.{signature[:middle]}{junk}{signature[middle:]}"


VARIANTS = {
    "one = appended": lambda t: t + "=",
    "== appended": lambda t: t + "==",
    "= and junk appended": lambda t: t + "=junk",
    "= and 64 KB appended": lambda t: t + "=" + "A" * 65536,
    "a non-ASCII byte appended": lambda t: t + "\xe9",
    "= inserted in the signature": lambda t: _insert_in_signature(t, "="),
    "* inserted in the signature": lambda t: _insert_in_signature(t, "*"),
    "a tab inserted in the signature": lambda t: _insert_in_signature(t, "\t"),
    "a non-ASCII byte inserted": lambda t: _insert_in_signature(t, "\xff"),
    "unused low bits set": _with_low_bit_set,
    "- written as +": lambda t: t.replace("-", "+"),
    "_ written as /": lambda t: t.replace("_", "/"),
    "a fourth segment": lambda t: t + ".AAAA",
    "an empty segment": lambda t: ".".join(["", *t.split(".")[1:]]),
    "a segment of 4n+1 characters": lambda t: t + "A",
}


async def _a_token_spelled_with(client, characters: str) -> str:
    """A valid access token whose text contains each of `characters` (logins until one does)."""
    user = await new_user(client)
    token = user["access_token"]
    claims = jwt.get_unverified_claims(token)
    for attempt in range(10_000):
        if all(character in token for character in characters):
            return token
        # The same login, another jti: only the spelling changes.
        token = jwt.encode(
            {**claims, "jti": f"probe-{attempt}"},
            TEST_SECRET,
            algorithm="HS256",
            headers={"typ": "at+jwt"},
        )
    raise AssertionError(f"no token contains {characters!r}")


async def _get_me(client, text: str):
    # Raw bytes, latin-1 as a server reads them: a hostile client is not limited to ASCII.
    return await client.get(
        "/users/me", headers={"Authorization": b"Bearer " + text.encode("latin-1")}
    )


@pytest.mark.parametrize("variant", VARIANTS)
async def test_another_spelling_of_a_valid_token_is_refused(client, variant):
    token = await _a_token_spelled_with(client, "-_")
    assert (await _get_me(client, token)).status_code == 200
    spelled = VARIANTS[variant](token)
    assert spelled != token

    response = await _get_me(client, spelled)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith(INVALID)


async def test_a_validly_signed_token_longer_than_the_bound_is_refused(client):
    user = await new_user(client)
    claims = jwt.get_unverified_claims(user["access_token"])
    long = jwt.encode(
        {**claims, "jti": "x" * MAX_TOKEN_LENGTH},
        TEST_SECRET,
        algorithm="HS256",
        headers={"typ": "at+jwt"},
    )

    response = await client.get("/users/me", headers=bearer(long))

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith(INVALID)


async def test_junk_after_a_valid_token_never_reaches_the_cache(client, app):
    user = await new_user(client)
    token = user["access_token"]
    assert (await client.get("/users/me", headers=bearer(token))).status_code == 200
    cache = app.state.access_tokens.verified
    entries, size = len(cache), cache.bytes

    # The review's attack: about 100 requests of 512 KB of junk after one's own valid token.
    for number in range(100):
        junk = "=" + f"{number:04d}" * (512 * 1024 // 4)
        response = await client.get("/users/me", headers=bearer(token + junk))
        assert response.status_code == 401

    assert (len(cache), cache.bytes) == (entries, size)


async def test_revoke_does_not_verify_another_spelling_of_an_access_token(client, app):
    user = await new_user(client)
    cache = app.state.access_tokens.verified
    before = len(cache)

    response = await client.post("/revoke", data={"token": user["access_token"] + "=="})

    assert response.status_code == 200
    assert len(cache) == before
    assert (await client.get("/users/me", headers=bearer(user["access_token"]))).status_code == 200


@pytest.mark.parametrize(
    "text",
    [
        "eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo",
        "AA.AAA.AAAA",
        "Ag.AAE.AAAA",  # unused bits zero: last characters A/g and E are allowed
    ],
)
def test_canonical_base64url_text_passes_the_check(text):
    check_token_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "AB.AAA.AAAA",
        "AA.AAB.AAAA",
        "AA.AAA.AAAA=",
        "AA.AAA.AAAAA",
        "AA.AAA",
        "AA..AAAA",
        "AA.A A.AA",
    ],
)
def test_non_canonical_text_fails_the_check(text):
    with pytest.raises(InvalidToken):
        check_token_text(text)


def _access_tokens(**options) -> AccessTokens:
    return AccessTokens(
        signing_key=SigningKey(algorithm="HS256", kid=None, key=TEST_SECRET),
        verification_keys=[VerificationKey(algorithm="HS256", kid=None, key=TEST_SECRET, jwk=None)],
        ttl_seconds=900,
        audience=None,
        **options,
    )


def _fill(access_tokens: AccessTokens, count: int) -> None:
    now = dt.datetime.now(dt.UTC)
    for _ in range(count):
        token = access_tokens.issue(
            user_id=uuid.uuid4(), family_id=uuid.uuid4(), amr=["pwd"], auth_time=now, now=now
        )
        access_tokens.decode(token, now=now)


def test_the_cache_stays_within_its_byte_bound_after_many_distinct_tokens():
    # Tokens near the length bound (a long issuer), so bytes, not entries, run out first.
    access_tokens = _access_tokens(issuer="https://" + "i" * (MAX_TOKEN_LENGTH // 2))
    cache = access_tokens.verified
    sizes = []
    for _ in range(12):
        _fill(access_tokens, 500)
        sizes.append(cache.bytes)

    assert max(sizes) <= VERIFIED_TOKEN_CACHE_BYTES
    assert len(cache) < VERIFIED_TOKEN_CACHE_ENTRIES  # the byte bound is what held
    assert sizes[-1] > VERIFIED_TOKEN_CACHE_BYTES * 0.9  # and it was reached, not avoided
    assert sizes[-1] >= len(cache) * MAX_TOKEN_LENGTH // 2  # the accounting counts the text


def test_the_cache_stays_within_its_entry_bound():
    access_tokens = _access_tokens(issuer="https://auth.example.com", cache_entries=100)
    _fill(access_tokens, 1000)
    assert len(access_tokens.verified) == 100


def test_a_cached_token_verifies_again_from_the_cache():
    access_tokens = _access_tokens(issuer="https://auth.example.com")
    now = dt.datetime.now(dt.UTC)
    token = access_tokens.issue(
        user_id=uuid.uuid4(), family_id=uuid.uuid4(), amr=["pwd"], auth_time=now, now=now
    )
    claims = access_tokens.decode(token, now=now)
    assert access_tokens.decode(token, now=now) is claims
    assert len(access_tokens.verified) == 1
