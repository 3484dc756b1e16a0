"""HEAD answers like GET without a body (RFC 9110 §9.3.2): load balancers and monitors probe so."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest

from tests.conftest import bearer, new_user
from tests.live_server import running_service

# Headers that differ between any two answers.
PER_RESPONSE = {b"x-request-id", b"date"}


async def call(app, method: str, path: str, headers=()) -> tuple[int, dict, bytes]:
    """The app's answer as ASGI messages: status, headers and every body byte it sent."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {name: value for name, value in start["headers"] if name not in PER_RESPONSE}
    return start["status"], headers, body


@pytest.mark.parametrize("path", ["/health", "/health/ready", "/.well-known/jwks.json"])
async def test_head_answers_like_get_without_a_body(app, path):
    get_status, get_headers, get_body = await call(app, "GET", path)
    status, headers, body = await call(app, "HEAD", path)

    assert get_body and get_status == 200
    assert (status, headers, body) == (get_status, get_headers, b"")
    assert headers[b"content-length"] == str(len(get_body)).encode()


async def test_head_on_a_protected_route_gets_the_same_challenge(app, client):
    get_status, get_headers, _ = await call(app, "GET", "/users/me")
    status, headers, body = await call(app, "HEAD", "/users/me")
    assert (status, headers, body) == (get_status, get_headers, b"")
    assert (status, headers[b"www-authenticate"]) == (401, b"Bearer")

    user = await new_user(client)
    auth = [(b"authorization", bearer(user["access_token"])["Authorization"].encode())]
    status, headers, body = await call(app, "HEAD", "/users/me", auth)
    assert (status, body) == (200, b"")
    assert int(headers[b"content-length"]) > 0


async def test_head_is_not_allowed_where_get_is_not(app):
    status, headers, body = await call(app, "HEAD", "/token")
    assert (status, body) == (405, b"")
    assert headers[b"allow"] == b"POST"


async def test_the_access_log_records_head(client, caplog):
    with caplog.at_level("INFO", logger="passgate.access"):
        await client.head("/health")
    assert any("HEAD /health 200" in record.getMessage() for record in caplog.records)


def test_a_real_server_answers_head_without_a_body_and_keeps_the_connection(tmp_path):
    with running_service(tmp_path) as url:
        address = urlsplit(url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
        try:
            for path in ["/health", "/health/ready"]:
                connection.request("HEAD", path)
                response = connection.getresponse()
                assert response.status == 200
                assert int(response.headers["Content-Length"]) > 0
                assert response.read() == b""
            # No stray body bytes: the next request on the same connection reads cleanly.
            connection.request("GET", "/health")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b'{"status":"ok","checks":{}}')
        finally:
            connection.close()
