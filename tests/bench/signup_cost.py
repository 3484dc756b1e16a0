"""Where a signup's (and a login's) server CPU goes, thread by thread.

    .venv/bin/python -m tests.bench.signup_cost [signups] [logins] [connections]

Starts the service as `make bench` does (production settings and Argon2 parameters, SQLite in
a temporary folder, no SMTP_HOST so mail goes to .eml files), sends `signups` signups with
unique emails and then `logins` logins of one account over `connections` concurrent
connections, and reads each server thread's CPU from /proc/<pid>/task/*/stat before and after
each phase, after the outbox has drained. Prints CPU per request by thread (the event loop,
the SQLite writer and reader, the hashing pool, executor threads), beside the Argon2 time
itself, so that what a signup does beyond its hash shows as milliseconds on a named thread.
Counts are CPU time, not wall time: they hold on a busy machine too.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

from tests.bench.run import BENCH_PASSWORD, login_form, service_environment, uvicorn_flags
from tests.faults.service import ServiceProcess

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread name, threads of one name summed."""
    totals: dict[str, float] = defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # Numbered pool threads (passgate-hash_0, asyncio_3...) are one row each pool.
        name = re.sub(r"[_-]?\d+$", "", name) or name
        totals[name] += (int(fields[11]) + int(fields[12])) / TICK
    return totals


def difference(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}


async def drive(url: str, requests: list[tuple[str, dict[str, str]]], connections: int) -> float:
    queue: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            while not queue.empty():
                path, body = queue.get_nowait()
                if path == "/token":
                    response = await client.post(path, data=body)
                else:
                    response = await client.post(path, json=body)
                assert response.status_code < 300, (response.status_code, response.text)

        await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - started


def pending_mail(database: Path) -> int:
    import sqlite3

    with sqlite3.connect(database) as connection:
        (count,) = connection.execute(
            "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
        ).fetchone()
    return int(count)


def report(label: str, count: int, seconds: float, cpu: dict[str, float]) -> None:
    total = sum(cpu.values())
    print(f"{label}: {count} in {seconds:.1f} s = {count / seconds:.1f}/s; CPU per request:")
    for name, value in sorted(cpu.items(), key=lambda item: -item[1]):
        if value > 0:
            print(f"  {name:<22} {value / count * 1000:7.2f} ms")
    print(f"  {'total':<22} {total / count * 1000:7.2f} ms")


def main(signups: int, logins: int, connections: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="passgate-signup-cost-"))
    database = folder / "bench.db"
    env = {
        **service_environment(f"sqlite+aiosqlite:///{database}", secrets.token_urlsafe(48)),
        "OUTBOX_DIR": str(folder / "outbox"),
    }
    server = ServiceProcess(
        env,
        folder / "service.log",
        app=os.environ.get("SIGNUP_COST_APP", "tests.bench.named_threads:app"),
        flags=uvicorn_flags(),
    )
    server.start()
    try:
        server.wait_ready()
        assert server.process is not None
        pid = server.process.pid
        run_id = secrets.token_hex(3)
        owner = {
            "name": "Owner",
            "email": f"owner-{run_id}@example.com",
            "password": BENCH_PASSWORD,
        }
        warm = [("/signup", owner)] + [
            ("/signup", {**owner, "email": f"warm-{run_id}-{n}@example.com"}) for n in range(16)
        ]
        asyncio.run(drive(server.url, warm, connections))
        time.sleep(1.0)
        phases = {
            "signup": [
                ("/signup", {**owner, "email": f"user-{run_id}-{n}@example.com"})
                for n in range(signups)
            ],
            "login": [("/token", login_form(owner["email"]))] * logins,
        }
        for label, requests in phases.items():
            if not requests:
                continue
            before = thread_cpu(pid)
            seconds = asyncio.run(drive(server.url, requests, connections))
            deadline = time.monotonic() + 30
            while pending_mail(database) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
            report(label, len(requests), seconds, difference(before, thread_cpu(pid)))
    finally:
        server.stop()


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:]]
    main(*(arguments + [300, 300, 16][len(arguments) :]))
