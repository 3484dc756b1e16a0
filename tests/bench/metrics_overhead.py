"""What the metrics cost a request: the same app with and without METRICS_TOKEN, in-process.

    .venv/bin/python -m tests.bench.metrics_overhead [requests per round] [rounds]

Both apps serve GET /health and GET /users/me (the bearer check, one database read) through
the whole ASGI stack, called directly (no sockets, no HTTP client), in interleaved rounds so a
busy neighbour weighs on both alike. Prints the median microseconds per request of each and
their difference, then the cost of the pieces alone: one middleware observation, one counter
increment. The difference is what METRICS_TOKEN adds to every request; `make bench` measures
whole-server throughput, where a few microseconds disappear in the noise.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.main import create_app
from app.metrics import HttpMetricsMiddleware, count_login
from app.migrate import upgrade_to_head
from tests.bench.asgi_driver import Headers, bearer_headers, call, cost_per_request_us
from tests.conftest import test_settings

TOKEN = "bench-metrics-token-" + "x" * 32


async def per_request_us(app: FastAPI, path: str, headers: Headers, count: int) -> float:
    """Wall microseconds per request, one at a time."""
    _, wall = await cost_per_request_us(app, path, headers, count)
    return wall


async def main(count: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="passgate-metrics-bench-"))
    url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    await upgrade_to_head(url)
    off = create_app(test_settings(database_url=url, audit_log="off"))
    on = create_app(test_settings(database_url=url, audit_log="off", metrics_token=TOKEN))
    async with LifespanManager(off), LifespanManager(on):
        headers = {"off": await bearer_headers(off), "on": await bearer_headers(on)}
        apps = {"off": off, "on": on}
        for path in ("/health", "/users/me"):
            for name, app in apps.items():  # warm up: caches, label children, compiled SQL
                status, _ = await call(app, path, headers[name])
                assert status == 200
                await per_request_us(app, path, headers[name], count // 10)
            times: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(rounds):
                for name, app in apps.items():
                    times[name].append(await per_request_us(app, path, headers[name], count))
            off_us, on_us = statistics.median(times["off"]), statistics.median(times["on"])
            print(
                f"GET {path}: without metrics {off_us:.1f} us/request, with {on_us:.1f} "
                f"(+{on_us - off_us:.1f} us, {100 * (on_us - off_us) / off_us:+.1f}%); "
                f"rounds off {min(times['off']):.1f}-{max(times['off']):.1f}, "
                f"on {min(times['on']):.1f}-{max(times['on']):.1f}"
            )

    middleware = HttpMetricsMiddleware(off)
    scope = {"method": "GET", "route": SimpleNamespace(path="/users/me")}
    observations = 100_000
    started = time.perf_counter()
    for _ in range(observations):
        middleware._observe(scope, 200, 0.001)
    observe_us = (time.perf_counter() - started) / observations * 1e6
    started = time.perf_counter()
    for _ in range(observations):
        count_login("success")
    count_us = (time.perf_counter() - started) / observations * 1e6
    print(
        f"one request's observation (counter + histogram) {observe_us:.2f} us; "
        f"one login count {count_us:.2f} us"
    )


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:]]
    asyncio.run(main(*(arguments + [5000, 7][len(arguments) :])))
