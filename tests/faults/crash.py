"""kill -9 in the middle of concurrent signups, logins and refreshes; nothing answered is lost.

Each round puts signups and login-then-refresh chains in flight, kills every process of the
service with SIGKILL at a random moment, checks the SQLite file with `PRAGMA integrity_check`,
restarts the service on the same file and then checks that:
- every signup answered 201 can log in;
- every chain's last access token answered 200 works on /users/me, and its last refresh token
  can be refreshed once more, and the token that gives can be refreshed again.
A chain whose refresh was in flight at the kill is checked on its access token only: the
server may have spent the refresh token and died before answering, and presenting it again
would then rightly be treated as reuse.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.faults.service import ServiceProcess

PASSWORD = "fault-password-2f9c"
SIGNUP_WORKERS = 4
CHAINS = 8


@dataclass
class Chain:
    email: str
    access_token: str | None = None
    refresh_token: str | None = None
    in_flight: bool = False
    refreshes: int = 0


@dataclass
class RoundReport:
    number: int
    signups_acknowledged: int = 0
    signups_logged_in: int = 0
    refreshes_acknowledged: int = 0
    chains_checked_fully: int = 0
    chains_checked_access_only: int = 0
    integrity: str = ""
    problems: list[str] = field(default_factory=list)


def integrity_check(path: str) -> str:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()
    return "; ".join(str(row[0]) for row in rows)


async def _login(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post(
        "/token", data={"grant_type": "password", "username": email, "password": PASSWORD}
    )


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token})


async def create_accounts(base_url: str, emails: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for email in emails:
            response = await client.post(
                "/signup", json={"name": "Chain", "email": email, "password": PASSWORD}
            )
            response.raise_for_status()


async def load_until_killed(
    service: ServiceProcess, report: RoundReport, chains: list[Chain], rng: random.Random
) -> list[str]:
    """Signups and refresh chains until a random moment, then SIGKILL; the signups answered 201."""
    acknowledged: list[str] = []
    stopping = False

    async def signups(client: httpx.AsyncClient, worker: int) -> None:
        number = 0
        while not stopping:
            email = f"crash-r{report.number}-w{worker}-{number}@example.com"
            number += 1
            try:
                response = await client.post(
                    "/signup", json={"name": "Crash", "email": email, "password": PASSWORD}
                )
            except httpx.TransportError:
                return
            if response.status_code == 201:
                acknowledged.append(email)
            else:
                report.problems.append(f"signup answered {response.status_code} before the kill")

    async def rotate(client: httpx.AsyncClient, chain: Chain) -> None:
        chain.in_flight = True
        try:
            response = await _login(client, chain.email)
        except httpx.TransportError:
            return
        chain.in_flight = False
        if response.status_code != 200:
            report.problems.append(f"login answered {response.status_code} before the kill")
            return
        body = response.json()
        chain.access_token, chain.refresh_token = body["access_token"], body["refresh_token"]
        while not stopping:
            await asyncio.sleep(rng.uniform(0.05, 0.2))  # idle chains can be checked fully
            if stopping:
                return
            assert chain.refresh_token is not None
            chain.in_flight = True
            try:
                response = await _refresh(client, chain.refresh_token)
            except httpx.TransportError:
                return  # in flight at the kill: the outcome is unknown
            chain.in_flight = False
            if response.status_code != 200:
                report.problems.append(f"refresh answered {response.status_code} before the kill")
                return
            body = response.json()
            chain.access_token, chain.refresh_token = body["access_token"], body["refresh_token"]
            chain.refreshes += 1

    limits = httpx.Limits(max_connections=SIGNUP_WORKERS + CHAINS)
    async with httpx.AsyncClient(base_url=service.url, timeout=30, limits=limits) as client:
        tasks = [asyncio.create_task(signups(client, worker)) for worker in range(SIGNUP_WORKERS)]
        tasks += [asyncio.create_task(rotate(client, chain)) for chain in chains]
        await asyncio.sleep(rng.uniform(0.4, 1.5))
        # No await between these two lines: no request starts after `stopping`, so every
        # request the kill interrupts was already on its way.
        stopping = True
        service.kill()
        await asyncio.gather(*tasks)
    report.signups_acknowledged = len(acknowledged)
    report.refreshes_acknowledged = sum(chain.refreshes for chain in chains)
    return acknowledged


async def verify_after_restart(
    service: ServiceProcess, report: RoundReport, signups: list[str], chains: list[Chain]
) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        gate = asyncio.Semaphore(8)

        async def can_log_in(email: str) -> None:
            async with gate:
                response = await _login(client, email)
            if response.status_code == 200:
                report.signups_logged_in += 1
            else:
                report.problems.append(
                    f"{email} answered 201 but login gives {response.status_code}"
                )

        await asyncio.gather(*(can_log_in(email) for email in signups))

        for chain in chains:
            if chain.access_token is None:
                continue
            me = await client.get(
                "/users/me", headers={"Authorization": f"Bearer {chain.access_token}"}
            )
            if me.status_code != 200:
                report.problems.append(f"an acknowledged access token gives {me.status_code}")
                continue
            if chain.in_flight:
                report.chains_checked_access_only += 1
                continue
            assert chain.refresh_token is not None
            first = await _refresh(client, chain.refresh_token)
            if first.status_code != 200:
                report.problems.append(
                    f"an acknowledged refresh token gives {first.status_code}: {first.text}"
                )
                continue
            pair: dict[str, Any] = first.json()
            me = await client.get(
                "/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"}
            )
            again = await _refresh(client, pair["refresh_token"])
            if me.status_code != 200 or again.status_code != 200:
                report.problems.append(
                    f"the refreshed pair gives {me.status_code} on /users/me and "
                    f"{again.status_code} on a further refresh"
                )
                continue
            report.chains_checked_fully += 1


def run_crash_rounds(
    service: ServiceProcess, database_path: str, rounds: int, seed: int
) -> list[RoundReport]:
    rng = random.Random(seed)
    chain_emails = [f"chain-{number}@example.com" for number in range(CHAINS)]
    service.start()
    service.wait_ready()
    asyncio.run(create_accounts(service.url, chain_emails))
    reports = []
    for number in range(1, rounds + 1):
        report = RoundReport(number)
        chains = [Chain(email) for email in chain_emails]
        signups = asyncio.run(load_until_killed(service, report, chains, rng))
        report.integrity = integrity_check(database_path)
        if report.integrity != "ok":
            report.problems.append(f"integrity_check: {report.integrity}")
        started = time.monotonic()
        service.start()
        service.wait_ready()
        restart_seconds = time.monotonic() - started
        asyncio.run(verify_after_restart(service, report, signups, chains))
        reports.append(report)
        print(
            f"  round {number:>2}: {report.signups_acknowledged:>4} signups acknowledged, "
            f"{report.signups_logged_in:>4} log in; {report.refreshes_acknowledged:>4} refreshes "
            f"acknowledged, chains checked {report.chains_checked_fully} fully + "
            f"{report.chains_checked_access_only} access only; integrity {report.integrity}; "
            f"restart {restart_seconds:.1f} s"
            + (f"; PROBLEMS: {report.problems[:3]}" if report.problems else ""),
            flush=True,
        )
    service.stop()
    return reports
