"""`make faults`: crash, outage and load tests against the real service process.

Run as `python -m tests.faults.run`; bounded in time, loopback only, exit status 1 on any
failure. Environment:
    FAULT_ROUNDS          kill -9 rounds (default 20)
    FAULT_MIX_SECONDS     length of the mixed load (default 60)
    FAULT_MIX_CLIENTS     concurrent clients in the mixed load (default 50)
    FAULT_WORKERS         uvicorn workers (default 1)
    FAULT_SEED            random seed, printed so a failing run can be replayed
    FAULTS_DATABASE_URL   a local PostgreSQL server URL (else TEST_DATABASE_URL): enables the
                          outage test, which stops and starts that server with pg_ctlcluster
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.databases import create_postgres_database, drop_postgres_database
from tests.faults.crash import run_crash_rounds
from tests.faults.mix import run_mix
from tests.faults.outage import require_loopback, run_outage
from tests.faults.service import ServiceProcess, service_env


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def crash_test(folder: Path, secret: str, rounds: int, workers: int, seed: int) -> list[str]:
    print(f"== kill -9 during signups, logins and refreshes: {rounds} rounds", flush=True)
    database = folder / "crash.db"
    service = ServiceProcess(
        service_env(f"sqlite+aiosqlite:///{database}", secret), folder / "crash.log", workers
    )
    try:
        reports = run_crash_rounds(service, str(database), rounds, seed)
    finally:
        service.stop()
    problems = [problem for report in reports for problem in report.problems]
    print(
        f"   total: {sum(r.signups_acknowledged for r in reports)} signups acknowledged, "
        f"{sum(r.signups_logged_in for r in reports)} logged in after the restart; "
        f"{sum(r.refreshes_acknowledged for r in reports)} refreshes acknowledged; chains "
        f"{sum(r.chains_checked_fully for r in reports)} checked fully, "
        f"{sum(r.chains_checked_access_only for r in reports)} on the access token only; "
        f"integrity ok in {sum(r.integrity == 'ok' for r in reports)} of {len(reports)} rounds",
        flush=True,
    )
    return problems


def mix_test(
    folder: Path, secret: str, clients: int, seconds: int, workers: int, seed: int
) -> list[str]:
    print(f"== {clients} clients for {seconds} s over every endpoint", flush=True)
    database = folder / "mix.db"
    service = ServiceProcess(
        service_env(f"sqlite+aiosqlite:///{database}", secret), folder / "mix.log", workers
    )
    service.start()
    try:
        service.wait_ready()
        report = asyncio.run(run_mix(service.url, str(database), clients, seconds, seed))
    finally:
        service.stop()
    classes = {f"{code // 100}xx": 0 for code in (200, 300, 400, 500)}
    for code, count in report.by_status.items():
        classes[f"{code // 100}xx"] += count
    print(
        f"   {report.requests} requests ({report.requests / seconds:.0f}/s): "
        + ", ".join(f"{name} {count}" for name, count in classes.items())
        + f"; transport errors {len(report.transport_errors)}",
        flush=True,
    )
    print("   by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(report.by_status.items())))
    print("   by endpoint: " + ", ".join(f"{k}: {v}" for k, v in report.by_endpoint.most_common()))
    return [*report.server_errors[:20], *report.transport_errors[:20]]


def outage_test(folder: Path, secret: str, server_url: str, workers: int) -> list[str]:
    print("== PostgreSQL stopped and started under the running service", flush=True)
    require_loopback(server_url)
    url = asyncio.run(create_postgres_database(server_url, prefix="passgate_faults"))
    service = ServiceProcess(service_env(url, secret), folder / "outage.log", workers)
    service.start()
    try:
        service.wait_ready()
        client = httpx.Client(base_url=service.url, timeout=30)
        email = "outage@example.com"
        password = "outage-password-5b7d"
        client.post(
            "/signup", json={"name": "Outage", "email": email, "password": password}
        ).raise_for_status()
        login = client.post(
            "/token", data={"grant_type": "password", "username": email, "password": password}
        )
        login.raise_for_status()
        client.close()
        report = run_outage(service.url, login.json()["access_token"])
    finally:
        service.stop()
        asyncio.run(drop_postgres_database(server_url, url))
    ready = report.ready_503_after
    recovered = report.recovered_after
    print(
        f"   /health/ready 503 after {'-' if ready is None else f'{ready:.1f} s'}; "
        + "; ".join(f"{label}: {answer}" for label, answer in report.protected_answers.items())
        + f"; recovered {'-' if recovered is None else f'{recovered:.1f} s'} after the restart",
        flush=True,
    )
    return report.problems


def main() -> int:
    rounds = env_int("FAULT_ROUNDS", 20)
    seconds = env_int("FAULT_MIX_SECONDS", 60)
    clients = env_int("FAULT_MIX_CLIENTS", 50)
    workers = env_int("FAULT_WORKERS", 1)
    seed = env_int("FAULT_SEED", random.randrange(1_000_000))
    postgres = os.environ.get("FAULTS_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    print(f"fault tests: seed {seed} (FAULT_SEED replays it)", flush=True)
    started = time.monotonic()
    secret = secrets.token_urlsafe(48)
    folder = Path(tempfile.mkdtemp(prefix="passgate-faults-"))
    failures: dict[str, list[str]] = {}
    try:
        failures["kill -9"] = crash_test(folder, secret, rounds, workers, seed)
        if postgres:
            failures["PostgreSQL outage"] = outage_test(folder, secret, postgres, workers)
        else:
            print("== PostgreSQL outage: skipped (set FAULTS_DATABASE_URL or TEST_DATABASE_URL)")
        failures["mixed load"] = mix_test(folder, secret, clients, seconds, workers, seed)
    except BaseException:
        print(f"logs kept in {folder}", file=sys.stderr)
        raise
    failed = {name: problems for name, problems in failures.items() if problems}
    print(f"fault tests finished in {time.monotonic() - started:.0f} s")
    if failed:
        for name, problems in failed.items():
            print(f"FAILED {name}:", *problems[:20], sep="\n  ", file=sys.stderr)
        print(f"logs kept in {folder}", file=sys.stderr)
        return 1
    shutil.rmtree(folder, ignore_errors=True)
    print("all fault tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
