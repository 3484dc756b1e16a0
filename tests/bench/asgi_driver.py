"""Calling an ASGI app in-process, for the cost tools: no sockets, no HTTP parser, no client.

A request goes through the app's whole ASGI stack (middleware, routing, the endpoint), so what
a tool measures is the server's own work, with no load generator sharing the cores.
tests/bench/w1_cost.py, user_list_cost.py, metrics_overhead.py and login_cost.py drive
their apps with it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.bench.run import BENCH_PASSWORD, login_form

Headers = list[tuple[bytes, bytes]]


def http_scope(
    path: str, headers: Headers, query: bytes = b"", *, method: str = "GET"
) -> dict[str, Any]:
    """A fresh HTTP scope for `method` `path`: the app writes into its scope, so one per call."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(
    app: Any, path: str, headers: Headers, query: bytes = b"", *, body: bytes | None = None
) -> tuple[int, bytes]:
    """One GET through the app, or a POST of `body`: (status, answer)."""
    status, answer = 0, b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body or b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, answer
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            answer += message.get("body", b"")

    method = "GET" if body is None else "POST"
    await app(http_scope(path, headers, query, method=method), receive, send)
    return status, answer


async def cost_per_request_us(
    app: Any,
    path: str,
    headers: Headers,
    count: int,
    *,
    query: bytes = b"",
    clients: int = 1,
) -> tuple[float, float]:
    """(CPU, wall) microseconds per request, `clients` callers at a time, as connections would.

    CPU is time.process_time: the event loop and the app's threads (database, hashing)
    together. Each caller sends count // clients requests.
    """
    per_client = count // clients

    async def client() -> None:
        for _ in range(per_client):
            await call(app, path, headers, query)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    requests = per_client * clients
    return (
        (time.process_time() - cpu) / requests * 1e6,
        (time.perf_counter() - wall) / requests * 1e6,
    )


async def bearer_headers(app: Any) -> Headers:
    """Sign a new account up through the app and log it in: headers carrying its access token."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        email = f"bench-{time.time_ns()}@example.com"
        await client.post(
            "/signup", json={"name": "Bench", "email": email, "password": BENCH_PASSWORD}
        )
        response = await client.post("/token", data=login_form(email))
        token = response.json()["access_token"]
    return [(b"authorization", f"Bearer {token}".encode()), (b"host", b"bench")]
