"""What one W3 login (POST /token, password grant) costs the service besides its hash.

    .venv/bin/python -m tests.bench.login_cost [logins per round] [rounds] [concurrency] [profile]

The service runs in this process on uvloop, called through its whole ASGI stack (no sockets, no
HTTP parser, no load generator), on a migrated SQLite file with the settings `make bench` gives
it, and its production pool of hashing processes. A hash's CPU is spent in those processes, so
time.process_time here is what W3 adds to each hash: the event loop and the database threads.
W3's ceiling is hash ÷ (hash + this). With a fourth argument, prints a cProfile of one round.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from tests.bench.asgi_driver import call
from tests.bench.run import BENCH_PASSWORD, login_form

SECRET = secrets.token_urlsafe(48)


FORM_HEADERS = [
    (b"host", b"bench"),
    (b"content-type", b"application/x-www-form-urlencoded"),
    (b"user-agent", b"wrk"),
]


async def login_cpu_us(app: Any, body: bytes, count: int, clients: int) -> tuple[float, float]:
    """This process's CPU microseconds per login, `clients` logging in at a time: (all
    threads, the event loop's thread alone)."""

    async def client() -> None:
        for _ in range(count // clients):
            headers = [*FORM_HEADERS, (b"content-length", str(len(body)).encode())]
            status, answer = await call(app, "/token", headers, body=body)
            assert status == 200, answer

    logins = count // clients * clients
    cpu, loop_cpu = time.process_time(), time.thread_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    return (
        (time.process_time() - cpu) / logins * 1e6,
        (time.thread_time() - loop_cpu) / logins * 1e6,
    )


async def main(count: int, rounds: int, clients: int, profile: bool) -> None:
    from app.config import Settings
    from app.main import create_app
    from app.migrate import upgrade_to_head
    from tests.conftest import test_settings
    from tests.faults.service import UNLIMITED_RATE

    folder = Path(tempfile.mkdtemp(prefix="passgate-login-cost-"))
    # The service logs each login (audit line) as it does under `make bench`: into a file.
    report = os.fdopen(os.dup(1), "w", buffering=1)
    log = os.open(folder / "service.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    await upgrade_to_head(url)
    service = create_app(
        test_settings(
            database_url=url,
            secret_key=SECRET,
            environment="production",
            public_url="http://127.0.0.1",
            access_log=False,
            login_rate_limit=UNLIMITED_RATE,
            signup_rate_limit=UNLIMITED_RATE,
            password_hash_pool="processes",
            # test_settings' cheap hashes keep the hashing processes from being the bottleneck;
            # their CPU is not this process's either way.
            log_format=Settings.model_fields["log_format"].default,
        )
    )
    async with LifespanManager(service):
        transport = httpx.ASGITransport(app=service)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            email = f"bench-{time.time_ns()}@example.com"
            answer = await client.post(
                "/signup", json={"name": "Bench", "email": email, "password": BENCH_PASSWORD}
            )
            assert answer.status_code == 201, answer.text
        body = httpx.QueryParams(login_form(email)).__str__().encode()
        await login_cpu_us(service, body, count // 5, clients)  # warm up
        runs = [await login_cpu_us(service, body, count, clients) for _ in range(rounds)]
        totals = [total for total, _ in runs]
        loops = [loop for _, loop in runs]
        print(
            f"login: {statistics.median(totals):6.0f} us CPU besides the hash "
            f"(rounds {min(totals):.0f}-{max(totals):.0f}), of which the event loop "
            f"{statistics.median(loops):.0f} (rounds {min(loops):.0f}-{max(loops):.0f})",
            file=report,
        )
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await login_cpu_us(service, body, count, clients)
            profiler.disable()
            stats = pstats.Stats(profiler, stream=report).sort_stats("cumulative")
            stats.print_stats(60)
            stats.sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    import uvloop

    arguments = [int(value) for value in sys.argv[1:4]]
    defaults = [1000, 5, 16]
    uvloop.run(main(*(arguments + defaults[len(arguments) :]), profile=len(sys.argv) > 4))
