"""What one W1 request (GET /users/me with a bearer token) costs the server, against hello_auth.

    .venv/bin/python -m tests.bench.w1_cost [requests per round] [rounds] [concurrency] [profile]

Both apps run in this one process on uvloop, called through their whole ASGI stacks directly
(no sockets, no HTTP parser, no load generator sharing the cores): the service on a migrated
SQLite file with the settings `make bench` gives it (production, access log off), and the
hello_auth reference, which accepts the same tokens. `concurrency` clients send requests at
once, as wrk's connections do, so the bearer check's hops to the SQLite reader thread overlap
as they do under load. Rounds interleave the two apps so a busy neighbour weighs on both alike.
Prints the median CPU per request (time.process_time: the event loop and the database threads
together), the ratio, and what the difference means for W1 ÷ hello_auth. With BENCH_DATABASE_URL
the service reads a fresh database on that PostgreSQL server instead; with a fourth argument,
a cProfile of one more round of W1 follows.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import secrets
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from asgi_lifespan import LifespanManager

from tests.bench.asgi_driver import Headers, bearer_headers, call, cost_per_request_us

SECRET = secrets.token_urlsafe(48)
os.environ.setdefault("BENCH_SECRET_KEY", SECRET)


async def cost(app: Any, headers: Headers, count: int, clients: int) -> float:
    """CPU microseconds per request, `clients` at a time."""
    cpu, _ = await cost_per_request_us(app, "/users/me", headers, count, clients=clients)
    return cpu


async def main(count: int, rounds: int, clients: int, profile: bool) -> None:
    from app.migrate import upgrade_to_head
    from tests.databases import create_postgres_database, drop_postgres_database

    server = os.environ.get("BENCH_DATABASE_URL")
    if server:  # a fresh database on that PostgreSQL server, dropped afterwards
        url = await create_postgres_database(server, prefix="passgate_w1_cost")
    else:
        folder = Path(tempfile.mkdtemp(prefix="passgate-w1-cost-"))
        url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    try:
        await upgrade_to_head(url)
        await compare(url, count, rounds, clients, profile)
    finally:
        if server:
            await drop_postgres_database(server, url)


async def compare(url: str, count: int, rounds: int, clients: int, profile: bool) -> None:
    from app.main import create_app
    from tests.bench import hello_auth
    from tests.conftest import test_settings

    service = create_app(
        test_settings(
            database_url=url,
            secret_key=os.environ["BENCH_SECRET_KEY"],
            environment="production",
            public_url="http://127.0.0.1",
            access_log=False,
        )
    )
    async with LifespanManager(service):
        headers = await bearer_headers(service)
        apps = {"hello_auth": hello_auth.app, "W1": service}
        for name, app in apps.items():  # warm up: compiled SQL, the verified-token cache
            status, body = await call(app, "/users/me", headers)
            assert status == 200, (name, body)
            await cost(app, headers, count // 5, clients)
        results: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(rounds):
            for name, app in apps.items():
                results[name].append(await cost(app, headers, count, clients))
        medians = {name: statistics.median(runs) for name, runs in results.items()}
        for name, us in medians.items():
            runs = results[name]
            print(f"{name:>10}: {us:6.1f} us CPU/request (rounds {min(runs):.1f}-{max(runs):.1f})")
        print(f"W1 / hello_auth CPU: {medians['W1'] / medians['hello_auth']:.2f}")
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await cost(service, headers, count, clients)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    import uvloop

    arguments = [int(value) for value in sys.argv[1:4]]
    defaults = [4000, 5, 32]
    uvloop.run(main(*(arguments + defaults[len(arguments) :]), profile=len(sys.argv) > 4))
