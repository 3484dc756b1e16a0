"""How long POST /password-reset takes for a registered and for an unknown address.

API.md promises the same answer "in about the same time" for both, so that timing tells no
one which addresses are registered. This starts the service as a real uvicorn process on a
fresh database, with a real SMTP server (aiosmtpd) taking the mail, signs up N users, then
sends N requests for registered and N for unknown addresses in a shuffled order, one at a
time, and prints the medians (and 90th percentiles) of each, measured at the client:

    .venv/bin/python -m tests.bench.password_reset_timing [--requests 300] [--postgres SERVER_URL]

Every registered address is asked for once, so the per-address cooldown never hides the work
of a registered address (its mail is queued, and the sender delivers it after the answer).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import TEST_SECRET
from tests.databases import create_postgres_database, drop_postgres_database
from tests.mail import MailServer
from tests.processes import service_environment, start_service

UNLIMITED = "1000000000/second"


async def measure(url: str, emails: list[tuple[str, bool]]) -> dict[bool, list[float]]:
    times: dict[bool, list[float]] = {True: [], False: []}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(20):  # warm-up: connections, caches, the first compiled statements
            await client.post("/password-reset", json={"email": "warm-up@example.org"})
        for email, registered in emails:
            started = time.perf_counter()
            response = await client.post("/password-reset", json={"email": email})
            elapsed = time.perf_counter() - started
            assert response.status_code == 202, response.text
            times[registered].append(elapsed * 1000)
    return times


async def sign_up(url: str, emails: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for email in emails:
            response = await client.post(
                "/signup", json={"name": "Bench", "email": email, "password": "bench-pass-9f2c"}
            )
            assert response.status_code == 201, response.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per kind of address")
    parser.add_argument(
        "--postgres",
        metavar="SERVER_URL",
        help="run on a throwaway database of this PostgreSQL server (default: a SQLite file)",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="passgate-reset-timing-"))
    database_url = f"sqlite+aiosqlite:///{workdir / 'passgate.db'}"
    if args.postgres:
        database_url = asyncio.run(create_postgres_database(args.postgres, prefix="passgate_bench"))
    server = MailServer()
    server.start()
    env = service_environment(
        DATABASE_URL=database_url,
        SECRET_KEY=TEST_SECRET,
        MIGRATE_ON_START="true",
        SIGNUP_RATE_LIMIT=UNLIMITED,
        RECOVERY_RATE_LIMIT=UNLIMITED,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(server.port),
        SMTP_TLS="none",
        AUDIT_LOG="off",
        LOG_LEVEL="warning",
    )
    service = start_service(env, workdir)
    try:
        service.wait_ready()
        registered = [f"user-{n}@example.com" for n in range(args.requests)]
        unknown = [f"nobody-{n}@example.com" for n in range(args.requests)]
        asyncio.run(sign_up(service.url, registered))
        # Let the signups' verification mails leave first, so they do not load the run.
        asyncio.run(server.wait_for(registered[-1], within=120))
        order = [(email, True) for email in registered] + [(email, False) for email in unknown]
        random.Random(12).shuffle(order)  # noqa: S311 - a replayable order, not a secret
        times = asyncio.run(measure(service.url, order))
        asyncio.run(server.wait_for(registered[-1], count=2, within=120))
    finally:
        service.stop()
        server.stop()
        if args.postgres:
            asyncio.run(drop_postgres_database(args.postgres, database_url))

    def summary(values: list[float]) -> str:
        deciles = statistics.quantiles(values, n=10)
        return f"median {statistics.median(values):.2f} ms, p90 {deciles[-1]:.2f} ms"

    print(f"database: {database_url.split(':', 1)[0]}; {args.requests} requests of each kind")
    print(f"registered address: {summary(times[True])}")
    print(f"unknown address:    {summary(times[False])}")
    difference = statistics.median(times[True]) - statistics.median(times[False])
    print(f"difference of medians: {difference:+.2f} ms")


if __name__ == "__main__":
    main()
