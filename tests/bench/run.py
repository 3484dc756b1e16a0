"""`make bench`: the service against the framework's own limit, on this machine, in one run.

Starts the service from the working tree and the two reference apps (`hello`: a constant;
`hello_auth`: an HS256 JWT check, no database) on the same uvicorn settings, drives them with
wrk and the Lua scripts beside this file, and prints medians with min and max and the ratios
to the references and targets. Results go to tests/bench/results/latest.json and .md, and
the README's table between its bench markers is replaced.

Rounds interleave the workloads (hello, hello_auth, W1, ... W6, then again), so a noisy
neighbour on a shared machine weighs on every workload alike instead of on one.

Environment:
    BENCH_DATABASE_URL   PostgreSQL server URL; a fresh database is created on it and dropped
                         afterwards. Unset: SQLite in a temporary folder. A server on this
                         host is pinned to a core of its own with taskset for the run, and
                         the service, the reference apps and wrk to the other (see
                         tests/bench/pinning.py); its affinity is restored at the end.
    BENCH_RUNS           rounds (default 5)
    BENCH_DURATION       seconds per wrk run (default 5)
    BENCH_WORKERS        uvicorn workers for all three apps (default 1); each of the service's
                         workers gets PASSWORD_HASH_THREADS = usable cores // workers (at
                         least 1), as docs/benchmarks.md "Sizing" tells operators, unless
                         PASSWORD_HASH_THREADS is set. With more than one, hello, hello_auth
                         and W1 also run at one worker in the same rounds, so that W1 / hello
                         at both counts comes from one run, and each run reports how wrk's
                         connections were spread over the workers
    BENCH_WRK_THREADS    wrk threads per wrk process (default 2, as the independent harness:
                         one thread saturates on W1 and inflates W1's own p99, the baseline
                         of W5's ratio; the load generator's CPU is printed beside it)
    BENCH_USERS          users seeded for W2 (default 100000)
    BENCH_README         page to update (default docs/benchmarks.md; "" to leave it alone)
    BENCH_ONLY           comma-separated workloads to run, for a quick look while working
                         (hello, hello_auth, W1 ... W6); a partial run only prints its table
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from app.config import Settings, usable_cores
from app.db import make_engine, utcnow
from app.models import User, uuid7
from app.security import Passwords
from tests.bench.pinning import Pinning, pinned
from tests.databases import create_postgres_database, drop_postgres_database
from tests.faults.service import ServiceProcess, production_env

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LUA = HERE / "lua"
RESULTS = HERE / "results"
# docs/benchmarks.md holds one table per kind of run, each between its own markers.
README_BLOCKS = {"sqlite": "bench", "workers": "bench-workers", "postgresql": "bench-postgres"}

BENCH_PASSWORD = "bench-password-7f3a"  # not on any common-password list
# Targets from issues 7 and 16.
# W1 / hello_auth's requests per second, at least: SQLite answers in-process; PostgreSQL on its
# own core costs a network round trip and a driver per request.
W1_TARGETS = {"sqlite": 0.70, "postgresql": 0.50}
HASH_TARGET = 0.90  # of hashing threads / single-hash time
STORM_P99_TARGET = 1.5  # W5 p99 / W1 p99 alone, at most
DEEP_PAGE_TARGET = 1.2  # W2 deep page latency / first page latency, at most


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


RUNS = env_int("BENCH_RUNS", 5)
DURATION = env_int("BENCH_DURATION", 5)
WORKERS = env_int("BENCH_WORKERS", 1)
WRK_THREADS = env_int("BENCH_WRK_THREADS", 2)
SEED_USERS = env_int("BENCH_USERS", 100_000)
DEEP_PAGE_AT = int(SEED_USERS * 0.9)
WORKLOADS = ("hello", "hello_auth", "W1", "W2", "W3", "W4", "W5", "W6")
# With BENCH_WORKERS > 1 these also run at one worker, each as (app, the workload BENCH_ONLY
# names it by, its results' name); the one-worker copy of the app and its results carry the
# suffix.
ONE_WORKER_RUNS = (
    ("hello", "hello", "hello"),
    ("hello_auth", "hello_auth", "hello_auth"),
    ("service", "W1", "W1 me"),
)
ONE_WORKER = " (1 worker)"
ONLY = [name.strip() for name in os.environ.get("BENCH_ONLY", "").split(",") if name.strip()]


def wanted(workload: str) -> bool:
    return not ONLY or workload in ONLY


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def uvicorn_flags(workers: int = WORKERS) -> list[str]:
    """The settings every app is served with; the loop and parser are named, not left to luck."""
    loop = "uvloop" if importable("uvloop") else "asyncio"
    http = "httptools" if importable("httptools") else "h11"
    return [
        "--workers", str(workers),
        "--loop", loop,
        "--http", http,
        "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip


def importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@dataclass
class WrkRun:
    requests: int
    duration_us: int
    errors: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    # CPU seconds wrk itself used (user + system): a load generator near a whole core per
    # thread is measuring its own queueing, not the server's latency.
    load_cpu_s: float = 0.0
    # wrk's connections held by each worker halfway through the run, most first (several
    # workers only): uvicorn's workers share one listening socket, and whichever wakes first
    # accepts every connection waiting, so a run can measure one busy worker and an idle one.
    worker_connections: list[int] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6)

    @property
    def load_cores(self) -> float:
        """wrk's CPU as cores busy over the run."""
        return self.load_cpu_s / (self.duration_us / 1e6)


def parse_wrk(output: str) -> WrkRun:
    for line in output.splitlines():
        if line.startswith("BENCH_RESULT "):
            raw = json.loads(line.removeprefix("BENCH_RESULT "))
            break
    else:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    errors = sum(
        raw[key]
        for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkRun(
        requests=raw["requests"],
        duration_us=raw["duration_us"],
        errors=errors,
        latency_p50_ms=raw["latency_p50_us"] / 1000,
        latency_p99_ms=raw["latency_p99_us"] / 1000,
        latency_mean_ms=raw["latency_mean_us"] / 1000,
    )


def wrk_command(url: str, script: str, connections: int, duration: int) -> list[str]:
    threads = min(WRK_THREADS, connections)
    return [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
        "-s", str(LUA / script), url,
    ]  # fmt: skip


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    url: str, script: str, connections: int, env: dict[str, str], *, workers: int = 1
) -> WrkRun:
    # RUSAGE_CHILDREN counts children once they are reaped: here only this wrk (a storm running
    # beside it in W5 is reaped after this returns).
    cpu_before = children_cpu_s()
    wrk = subprocess.Popen(
        wrk_command(url, script, connections, DURATION),
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    spread: list[int] = []
    ss_cpu_s = 0.0
    if workers > 1:
        time.sleep(DURATION / 2)
        before = children_cpu_s()
        spread = connections_per_process(httpx.URL(url).port)
        ss_cpu_s = children_cpu_s() - before  # ss is a child too: not wrk's CPU
    stdout, stderr = wrk.communicate()
    if wrk.returncode != 0:
        raise subprocess.CalledProcessError(wrk.returncode, wrk.args, stdout, stderr)
    run = parse_wrk(stdout)
    run.load_cpu_s = children_cpu_s() - cpu_before - ss_cpu_s
    run.worker_connections = spread
    return run


def connections_per_process(port: int | None) -> list[int]:
    """Established connections on the local port, counted per process that holds them."""
    listed = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    holders = Counter(re.findall(r"pid=(\d+)", listed))
    return sorted(holders.values(), reverse=True)


def run_wrk_under_storm(
    url: str, env: dict[str, str], storm_url: str, storm_env: dict[str, str]
) -> tuple[WrkRun, WrkRun]:
    """W5: W1's load while 16 connections log in flat out; the storm starts first and ends last."""
    storm = subprocess.Popen(
        wrk_command(storm_url, "login.lua", 16, DURATION + 3),
        env={**os.environ, **storm_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # the hashing threads are saturated before W1 starts measuring
        # No spread of connections: the storm's share the port.
        measured = run_wrk(url, "bearer_get.lua", 32, env)
    finally:
        storm_out, _ = storm.communicate(timeout=DURATION + 60)
    return measured, parse_wrk(storm_out)


# --- the database ---------------------------------------------------------------------------


async def seed_users(database_url: str, count: int, password_hash: str) -> None:
    """Insert users straight into the table, all with one precomputed hash: seconds, not hours."""
    engine = make_engine(database_url)
    now = utcnow()
    batch_size = 5_000
    try:
        for start in range(0, count, batch_size):
            rows = [
                {
                    "id": uuid7(),
                    "name": f"Seeded User {number}",
                    "email": f"seed-{number}@example.com",
                    "email_normalized": f"seed-{number}@example.com",
                    "password_hash": password_hash,
                    "is_active": True,
                    "is_admin": False,
                    "created_at": now,
                }
                for number in range(start, min(start + batch_size, count))
            ]
            async with engine.begin() as connection:
                await connection.execute(insert(User), rows)
    finally:
        await engine.dispose()


# --- hashing limit --------------------------------------------------------------------------


def hash_pool() -> str:
    """The hashing pool the service runs: the environment's PASSWORD_HASH_POOL, else Settings'
    default (processes), so that the in-process measurements use the same."""
    return (
        os.environ.get("PASSWORD_HASH_POOL") or Settings.model_fields["password_hash_pool"].default
    )


def production_passwords(threads: int = 1) -> Passwords:
    """The production Argon2 parameters, whatever the environment says, and the service's
    hashing pool."""
    defaults = Settings.model_fields
    return Passwords(
        memory_kib=defaults["password_hash_memory_kib"].default,
        time_cost=defaults["password_hash_time_cost"].default,
        parallelism=defaults["password_hash_parallelism"].default,
        threads=threads,
        pool=hash_pool(),
    )


def measure_hash_seconds(samples: int = 8) -> tuple[list[float], list[float]]:
    """Single-hash times in this process, and single-verify times through the service's
    hashing pool (a verify's round trip to it included), one at a time."""
    passwords = production_passwords()
    hashes: list[float] = []
    verifies: list[float] = []
    stored = passwords.hash_blocking(BENCH_PASSWORD)

    async def measure() -> None:
        await passwords.start()
        try:
            for _ in range(samples):
                started = time.perf_counter()
                passwords.hash_blocking(BENCH_PASSWORD)
                hashes.append(time.perf_counter() - started)
                started = time.perf_counter()
                assert await passwords.verify(BENCH_PASSWORD, stored)
                verifies.append(time.perf_counter() - started)
        finally:
            await passwords.close()

    asyncio.run(measure())
    return hashes, verifies


def measure_parallel_hash_rate(threads: int, seconds: float = 3.0) -> float:
    """Hashes per second with the service's pool of `threads` kept busy, from this process.

    What the machine delivers at that moment, with the service's own pool and priority:
    parallel Argon2 runs share memory bandwidth and caches, and other processes share the
    cores, so this is below threads / single-hash time.
    """
    passwords = production_passwords(threads)

    async def saturate() -> int:
        await passwords.start()
        done = 0
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await passwords.hash(BENCH_PASSWORD)
                done += 1

        try:
            await asyncio.gather(*(worker() for _ in range(threads * 4)))
        finally:
            await passwords.close()
        return done

    return asyncio.run(saturate()) / seconds


# --- the run --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk_version.splitlines()[0] if wrk_version else "unknown",
        "commit": commit,
    }


def hash_threads_per_worker(workers: int = WORKERS) -> int:
    """PASSWORD_HASH_THREADS for each of the service's workers: the environment's if it sets it,
    else the usable cores shared out between the workers, at least 1 (docs/benchmarks.md,
    "Sizing"): more threads than cores only queue in the kernel and take CPU from the loops.

    Counted when called, not from Settings' default (fixed at import, before the run pins
    itself): the service starts on the pinned cores.
    """
    explicit = os.environ.get("PASSWORD_HASH_THREADS")
    if explicit:
        return int(explicit)
    return max(1, usable_cores() // workers)


def service_environment(
    database_url: str, secret_key: str, workers: int = WORKERS
) -> dict[str, str]:
    """The service's environment in `make bench`: production, limits out of reach, sized threads."""
    return {
        **production_env(database_url, secret_key),
        "PASSWORD_HASH_THREADS": str(hash_threads_per_worker(workers)),
    }


def hash_threads_started(service_env: dict[str, str], workers: int = WORKERS) -> int:
    """Hashing threads in all the service's workers, read from the environment it was given."""
    return int(service_env["PASSWORD_HASH_THREADS"]) * workers


def summarise(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None  # not measured in this run (BENCH_ONLY)
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@contextlib.contextmanager
def bench_database() -> Iterator[tuple[str, str]]:
    """(URL, backend name): a fresh database, removed afterwards."""
    server_url = os.environ.get("BENCH_DATABASE_URL")
    if server_url:
        url = asyncio.run(create_postgres_database(server_url, prefix="passgate_bench"))
        try:
            yield url, "postgresql"
        finally:
            asyncio.run(drop_postgres_database(server_url, url))
        return
    folder = Path(tempfile.mkdtemp(prefix="passgate-bench-"))
    try:
        yield f"sqlite+aiosqlite:///{folder / 'bench.db'}", "sqlite"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def login_form(email: str) -> dict[str, str]:
    """POST /token's form for a password login with the benchmark's password."""
    return {"grant_type": "password", "username": email, "password": BENCH_PASSWORD}


def login(client: httpx.Client, email: str) -> dict[str, Any]:
    response = client.post("/token", data=login_form(email))
    response.raise_for_status()
    return response.json()


def walk_to_deep_cursor(client: httpx.Client, token: str, position: int) -> str:
    """The cursor of the page starting after `position` users, reached by following cursors."""
    cursor: str | None = None
    seen = 0
    while seen < position:
        params: dict[str, Any] = {"limit": min(100, position - seen)}
        if cursor:
            params["cursor"] = cursor
        response = client.get("/users", params=params, headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        page = response.json()
        seen += len(page["users"])
        cursor = page["next_cursor"]
        if cursor is None:
            raise RuntimeError(f"the list ended after {seen} users")
    assert cursor is not None
    return cursor


def main() -> int:
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed: `make bench` installs it (apt-get install wrk)", file=sys.stderr
        )
        return 1
    started = time.monotonic()
    secret = secrets.token_urlsafe(48)
    log_dir = Path(tempfile.mkdtemp(prefix="passgate-bench-logs-"))
    info = machine()
    log(f"{info['nproc']} cores, {info['cpu_model']}, Python {info['python']}; logs in {log_dir}")

    # PostgreSQL pinned first, so that the benchmark's database is made and dropped pinned too.
    server_url = os.environ.get("BENCH_DATABASE_URL")
    with pinned(server_url, log) as pinning, bench_database() as (database_url, backend):
        # Inside the pinning: the hashing threads are sized from the cores the service gets.
        service_env = service_environment(database_url, secret)
        apps = {
            "hello": ("tests.bench.hello:app", {}, WORKERS),
            "hello_auth": ("tests.bench.hello_auth:app", {"BENCH_SECRET_KEY": secret}, WORKERS),
            "service": ("app.main:app", service_env, WORKERS),
        }
        if WORKERS > 1 and any(wanted(workload) for _, workload, _ in ONE_WORKER_RUNS):
            # The same three at one worker, for W1 / hello at both counts from the same rounds.
            one_worker_env = service_environment(database_url, secret, workers=1)
            apps |= {
                f"{name}{ONE_WORKER}": (app, one_worker_env if name == "service" else env, 1)
                for name, (app, env, _) in list(apps.items())
            }
        servers = {
            name: ServiceProcess(
                env, log_dir / f"{name}.log", app=app, flags=uvicorn_flags(workers)
            )
            for name, (app, env, workers) in apps.items()
        }
        try:
            for server in servers.values():
                server.start()
            for name, server in servers.items():
                server.wait_ready(
                    path="/health/ready" if name.startswith("service") else "/users/me"
                )
            results = bench(servers, database_url, backend, info, pinning)
        finally:
            for server in servers.values():
                server.stop()
    results["total_seconds"] = round(time.monotonic() - started, 1)
    write_results(results)
    log(f"done in {results['total_seconds']} s")
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


def bench(
    servers: dict[str, ServiceProcess],
    database_url: str,
    backend: str,
    info: dict[str, Any],
    pinning: Pinning,
) -> dict[str, Any]:
    service = servers["service"].url
    # The hashing threads the service was started with, not a count made again later.
    threads_total = hash_threads_started(servers["service"].env)
    client = httpx.Client(base_url=service, timeout=30)
    bench_email = f"bench-owner-{secrets.token_hex(4)}@example.com"
    response = client.post(
        "/signup", json={"name": "Bench Owner", "email": bench_email, "password": BENCH_PASSWORD}
    )
    response.raise_for_status()

    log(f"seeding {SEED_USERS:,} users")
    seed_started = time.monotonic()
    seed_hash = production_passwords().hash_blocking(secrets.token_urlsafe(12))
    asyncio.run(seed_users(database_url, SEED_USERS, seed_hash))
    log(f"seeded in {time.monotonic() - seed_started:.1f} s")

    access_token = login(client, bench_email)["access_token"]
    deep_cursor = walk_to_deep_cursor(client, access_token, DEEP_PAGE_AT)
    log(f"walked the cursor to user {DEEP_PAGE_AT:,}")

    bearer_env = {"BENCH_TOKEN": access_token}
    login_env = {"BENCH_EMAIL": bench_email, "BENCH_PASSWORD": BENCH_PASSWORD}
    refresh_file = Path(tempfile.mkstemp(prefix="passgate-bench-refresh-")[1])
    w6_connections = 16
    tokens_per_thread = w6_connections // min(WRK_THREADS, w6_connections) + 1

    runs: dict[str, list[WrkRun]] = {}
    hash_samples: list[float] = []
    verify_samples: list[float] = []
    parallel_rates: list[float] = []

    def record(name: str, run: WrkRun) -> None:
        runs.setdefault(name, []).append(run)
        log(
            f"  {name:<16} {run.rps:9.1f} req/s  p50 {run.latency_p50_ms:7.2f} ms  "
            f"p99 {run.latency_p99_ms:7.2f} ms  errors {run.errors}  "
            f"wrk CPU {run.load_cores:.2f} cores"
        )

    def settle() -> None:
        time.sleep(1.0)  # hashes queued when wrk stopped finish before the next workload

    def bearer_get(url: str, workers: int = WORKERS) -> WrkRun:
        return run_wrk(url, "bearer_get.lua", 32, bearer_env, workers=workers)

    for round_number in range(1, RUNS + 1):
        log(f"round {round_number}/{RUNS}")
        if wanted("hello"):
            record("hello", bearer_get(servers["hello"].url + "/users/me"))
        if wanted("hello_auth"):
            record("hello_auth", bearer_get(servers["hello_auth"].url + "/users/me"))
        if wanted("W1") or wanted("W5"):  # W1 alone is W5's baseline
            record("W1 me", bearer_get(service + "/users/me"))
        # The one-worker copies, if started, right after: the same minute of the machine.
        for app, workload, results_name in ONE_WORKER_RUNS:
            one_worker = servers.get(f"{app}{ONE_WORKER}")
            if one_worker is not None and wanted(workload):
                record(
                    f"{results_name}{ONE_WORKER}",
                    bearer_get(one_worker.url + "/users/me", workers=1),
                )
        if wanted("W2"):
            record("W2 first page", bearer_get(service + "/users?limit=50"))
            record("W2 deep page", bearer_get(service + f"/users?limit=50&cursor={deep_cursor}"))
        if wanted("W3") or wanted("W4"):
            hashes, verifies = measure_hash_seconds()
            hash_samples += hashes
            verify_samples += verifies
            parallel_rates.append(measure_parallel_hash_rate(threads_total))
        if wanted("W3"):
            record("W3 login", run_wrk(service, "login.lua", 16, login_env, workers=WORKERS))
            settle()
        if wanted("W4"):
            record(
                "W4 signup",
                run_wrk(
                    service,
                    "signup.lua",
                    16,
                    {"BENCH_RUN_ID": f"{secrets.token_hex(3)}r{round_number}", **login_env},
                    workers=WORKERS,
                ),
            )
            settle()
        if wanted("W5"):
            measured, storm = run_wrk_under_storm(
                service + "/users/me", bearer_env, service, login_env
            )
            record("W5 me in storm", measured)
            record("W5 storm logins", storm)
            settle()
        if wanted("W6"):
            logins = [
                login(client, bench_email)["refresh_token"]
                for _ in range(tokens_per_thread * min(WRK_THREADS, w6_connections))
            ]
            refresh_file.write_text("\n".join(logins) + "\n")
            record(
                "W6 refresh",
                run_wrk(
                    service,
                    "refresh.lua",
                    w6_connections,
                    {
                        "BENCH_REFRESH_FILE": str(refresh_file),
                        "BENCH_TOKENS_PER_THREAD": str(tokens_per_thread),
                    },
                    workers=WORKERS,
                ),
            )
    refresh_file.unlink(missing_ok=True)
    client.close()
    return analyse(
        runs, hash_samples, verify_samples, parallel_rates, threads_total, backend, info, pinning
    )


def analyse(
    runs: dict[str, list[WrkRun]],
    hash_samples: list[float],
    verify_samples: list[float],
    parallel_rates: list[float],
    threads_total: int,
    backend: str,
    info: dict[str, Any],
    pinning: Pinning,
) -> dict[str, Any]:
    workloads = {
        name: {
            "rps": summarise([run.rps for run in values]),
            "p50_ms": summarise([run.latency_p50_ms for run in values]),
            "p99_ms": summarise([run.latency_p99_ms for run in values]),
            "wrk_cpu_cores": summarise([run.load_cores for run in values]),
            "errors": sum(run.errors for run in values),
            "requests": sum(run.requests for run in values),
            "worker_connections": [run.worker_connections for run in values],
        }
        for name, values in runs.items()
    }
    # The cores the service may run on: with PostgreSQL pinned to a core of its own, one fewer
    # than the machine has (the service inherits this process's affinity).
    cores = len(os.sched_getaffinity(0))
    # The limit uses the hash time measured at normal priority in this thread (a verify is a
    # hash and a comparison); the verify time, measured through the hashing pool, is shown beside.
    hash_seconds = statistics.median(hash_samples) if hash_samples else float("nan")
    # Threads beyond the cores only queue in the kernel: the usable limit is the smaller.
    usable_threads = min(threads_total, cores)
    hash_limit = usable_threads / hash_seconds
    parallel_rate = statistics.median(parallel_rates) if parallel_rates else float("nan")

    def median(name: str, metric: str) -> float | None:
        row = workloads.get(name)
        return None if row is None else row[metric]["median"]

    def ratio(numerator: float | None, denominator: float | None) -> float | None:
        if numerator is None or denominator is None:
            return None  # a workload BENCH_ONLY left out
        return numerator / denominator

    def zero_errors(name: str) -> bool:
        return workloads.get(name, {"errors": 0})["errors"] == 0

    ratios = {
        "W1 / hello_auth rps": ratio(median("W1 me", "rps"), median("hello_auth", "rps")),
        "W1 / hello rps": ratio(median("W1 me", "rps"), median("hello", "rps")),
        "hello_auth / hello rps": ratio(median("hello_auth", "rps"), median("hello", "rps")),
        "W2 first / hello rps": ratio(median("W2 first page", "rps"), median("hello", "rps")),
        "W2 deep / first p50": ratio(
            median("W2 deep page", "p50_ms"), median("W2 first page", "p50_ms")
        ),
        "W3 / hash limit": ratio(median("W3 login", "rps"), hash_limit),
        "W4 / hash limit": ratio(median("W4 signup", "rps"), hash_limit),
        "W3 / parallel hash rate": ratio(median("W3 login", "rps"), parallel_rate),
        "W4 / parallel hash rate": ratio(median("W4 signup", "rps"), parallel_rate),
        "W5 p99 storm / alone": ratio(
            median("W5 me in storm", "p99_ms"), median("W1 me", "p99_ms")
        ),
        "W1 / hello rps, one worker": ratio(
            median(f"W1 me{ONE_WORKER}", "rps"), median(f"hello{ONE_WORKER}", "rps")
        ),
    }
    # Item 5 of issue 16: W1 keeps up with hello as workers are added.
    ratios["W1 / hello, workers / one"] = ratio(
        ratios["W1 / hello rps"], ratios["W1 / hello rps, one worker"]
    )
    # The same, round by round: the four runs of a round come from the same minute of a
    # shared machine, where the medians of each workload may come from different rounds.
    paired = zip(
        *(
            runs.get(name, [])
            for name in ("W1 me", "hello", f"W1 me{ONE_WORKER}", f"hello{ONE_WORKER}")
        ),
        strict=False,
    )
    per_round = [
        (w1.rps / hello.rps) / (w1_one.rps / hello_one.rps)
        for w1, hello, w1_one, hello_one in paired
    ]
    w1_target = W1_TARGETS[backend]

    def at_least(name: str, target: float) -> bool | None:
        value = ratios[name]
        return None if value is None else value >= target

    def at_most(name: str, target: float) -> bool | None:
        value = ratios[name]
        return None if value is None else value <= target

    def and_no_errors(met: bool | None, workload: str) -> bool | None:
        return None if met is None else met and zero_errors(workload)

    targets = {
        "W1 >= target of hello_auth": at_least("W1 / hello_auth rps", w1_target),
        "W2 deep page <= 1.2x first": at_most("W2 deep / first p50", DEEP_PAGE_TARGET),
        "W3 >= 90% of hash limit, no errors": and_no_errors(
            at_least("W3 / hash limit", HASH_TARGET), "W3 login"
        ),
        "W4 >= 90% of hash limit, no errors": and_no_errors(
            at_least("W4 / hash limit", HASH_TARGET), "W4 signup"
        ),
        "W5 p99 <= 1.5x W1 p99": at_most("W5 p99 storm / alone", STORM_P99_TARGET),
        "W1 / hello at N workers >= at one": at_least("W1 / hello, workers / one", 1.0),
    }
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "settings": {
            "database": backend,
            "uvicorn": " ".join(uvicorn_flags()),
            "workers": WORKERS,
            "runs": RUNS,
            "duration_s": DURATION,
            "wrk_threads": WRK_THREADS,
            "seeded_users": SEED_USERS,
            "deep_page_at": DEEP_PAGE_AT,
            "password_hash_threads_total": threads_total,
            "password_hash_pool": hash_pool(),
            "service_cores": cores,
            "cpu_pinning": pinning.method,
            "cpu_pinning_detail": pinning.description,
        },
        "hashing": {
            "single_hash_ms": summarise([s * 1000 for s in hash_samples]),
            "single_verify_ms": summarise([s * 1000 for s in verify_samples]),
            "cores_limit_per_s": cores / hash_seconds,
            "threads_limit_per_s": threads_total / hash_seconds,
            "limit_per_s": hash_limit,
            "parallel_rate_per_s": summarise(parallel_rates),
        },
        "workloads": workloads,
        "ratios": ratios,
        "targets": targets,
        "w1_hello_workers_per_round": per_round,
    }


# --- reporting ------------------------------------------------------------------------------

WORKLOAD_ROWS = [
    ("hello", "reference: constant, 32 conns"),
    ("hello_auth", "reference: HS256 JWT check, 32 conns"),
    ("W1 me", "W1 GET /users/me, 32 conns"),
    ("W2 first page", "W2 GET /users?limit=50, first page"),
    ("W2 deep page", f"W2 GET /users?limit=50, page after user {DEEP_PAGE_AT:,}"),
    ("W3 login", "W3 password login, one account, 16 conns"),
    ("W4 signup", "W4 signup, unique emails, 16 conns"),
    ("W5 me in storm", "W5 W1 during a 16-conn login storm"),
    ("W5 storm logins", "W5 the storm's logins"),
    ("W6 refresh", "W6 refresh-token rotation, 16 chains"),
    (f"hello{ONE_WORKER}", "reference: constant, 32 conns, one worker"),
    (f"hello_auth{ONE_WORKER}", "reference: HS256 JWT check, 32 conns, one worker"),
    (f"W1 me{ONE_WORKER}", "W1 GET /users/me, 32 conns, one worker"),
]


# (ratio, label, target, key in results["targets"])
RATIO_ROWS: list[tuple[str, str, str, str | None]] = [
    ("W1 / hello_auth rps", "W1 / hello_auth req/s", "W1_TARGET", "W1 >= target of hello_auth"),
    ("W1 / hello rps", "W1 / hello req/s", "", None),
    ("hello_auth / hello rps", "hello_auth / hello req/s", "", None),
    ("W2 first / hello rps", "W2 first page / hello req/s", "", None),
    ("W2 deep / first p50", "W2 deep / first page p50", "<= 1.2", "W2 deep page <= 1.2x first"),
    (
        "W3 / hash limit",
        "W3 / (threads / hash time)",
        ">= 0.90, 0 errors",
        "W3 >= 90% of hash limit, no errors",
    ),
    (
        "W4 / hash limit",
        "W4 / (threads / hash time)",
        ">= 0.90, 0 errors",
        "W4 >= 90% of hash limit, no errors",
    ),
    ("W5 p99 storm / alone", "W5 p99 in storm / W1 p99 alone", "<= 1.5", "W5 p99 <= 1.5x W1 p99"),
    ("W3 / parallel hash rate", "W3 / measured parallel hash rate", "", None),
    ("W4 / parallel hash rate", "W4 / measured parallel hash rate", "", None),
    ("W1 / hello rps, one worker", "W1 / hello req/s at one worker", "", None),
    (
        "W1 / hello, workers / one",
        "W1 / hello at these workers ÷ at one",
        ">= 1.00",
        "W1 / hello at N workers >= at one",
    ),
]


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    settings = results["settings"]
    hashing = results["hashing"]
    lines = [
        f"Run {results['date']} at commit {info['commit']} on {info['nproc']} cores "
        f"({info['cpu_model']}), Python {info['python']}, {info['wrk']}; database "
        f"{settings['database']}; uvicorn `{settings['uvicorn']}`; {settings['runs']} runs of "
        f"{settings['duration_s']} s each, interleaved; wrk with {settings['wrk_threads']} "
        "threads; median [min-max]. wrk CPU: the cores the load generator itself kept busy. "
        f"CPU pinning: {settings.get('cpu_pinning_detail', 'none')}.",
        "",
        "| workload | req/s | p50 ms | p99 ms | wrk CPU | errors |",
        "|---|---|---|---|---|---|",
    ]

    def cell(stats: dict[str, float], digits: int) -> str:
        return f"{stats['median']:.{digits}f} [{stats['min']:.{digits}f}-{stats['max']:.{digits}f}]"

    for name, label in WORKLOAD_ROWS:
        row = results["workloads"].get(name)
        if row is None:
            continue
        lines.append(
            f"| {label} | {cell(row['rps'], 0)} | {cell(row['p50_ms'], 1)} | "
            f"{cell(row['p99_ms'], 1)} | {cell(row['wrk_cpu_cores'], 2)} | "
            f"{row['errors']} of {row['requests']:,} |"
        )
    if hashing["single_hash_ms"] is not None:
        lines += [
            "",
            "Argon2id with the production parameters: one hash "
            f"{hashing['single_hash_ms']['median']:.1f} ms, one verify "
            f"{hashing['single_verify_ms']['median']:.1f} ms through the service's hashing pool "
            f"(medians); cores the service may use "
            f"({settings.get('service_cores', info['nproc'])}) / hash time = "
            f"{hashing['cores_limit_per_s']:.1f}/s; hashing threads "
            f"({settings['password_hash_threads_total']}) / hash time = "
            f"{hashing['threads_limit_per_s']:.1f}/s. Measured with the service's "
            f"pool of {settings['password_hash_threads_total']} low-priority hashing "
            f"{settings.get('password_hash_pool', 'threads')} kept busy: {cell(hashing['parallel_rate_per_s'], 1)} hashes/s.",
        ]
    lines += [
        "",
        "| ratio | value | target | met |",
        "|---|---|---|---|",
    ]
    for ratio, label, target, target_key in RATIO_ROWS:
        value = results["ratios"][ratio]
        if value is None:
            continue
        if target == "W1_TARGET":
            target = f">= {W1_TARGETS[settings['database']]:.2f}"
        met = "" if target_key is None else ("yes" if results["targets"][target_key] else "**no**")
        lines.append(f"| {label} | {value:.2f} | {target} | {met} |")
    alone = results["workloads"].get("W1 me")
    storm = results["workloads"].get("W5 me in storm")
    if alone and storm:
        lines += [
            "",
            f"W5's baseline, W1 alone: p99 {cell(alone['p99_ms'], 1)} ms, wrk "
            f"({settings['wrk_threads']} threads) using {cell(alone['wrk_cpu_cores'], 2)} cores; "
            f"in the storm p99 {cell(storm['p99_ms'], 1)} ms, wrk using "
            f"{cell(storm['wrk_cpu_cores'], 2)} cores.",
        ]
    per_round = results.get("w1_hello_workers_per_round")
    if per_round:
        lines += [
            "",
            "W1 / hello at these workers ÷ at one, round by round (the four runs of a round "
            "within the same minute): "
            + ", ".join(f"{value:.2f}" for value in per_round)
            + f"; median {statistics.median(per_round):.2f}.",
        ]
    spreads = [
        f"{name}: " + ", ".join("+".join(map(str, spread)) for spread in row["worker_connections"])
        for name, _ in WORKLOAD_ROWS
        if (row := results["workloads"].get(name)) and any(row.get("worker_connections", []))
    ]
    if spreads:
        lines += [
            "",
            "wrk's connections per worker halfway through each run (the workers share one "
            "listening socket; a run whose connections all went to one worker measured one): "
            + "; ".join(spreads)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any]) -> None:
    table = markdown(results)
    print()
    print(table)
    if ONLY:
        return  # a quick look: the recorded results and the page keep the last full run
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(table)
    readme = os.environ.get("BENCH_README", str(REPO / "docs" / "benchmarks.md"))
    if not readme:
        return
    path = Path(readme)
    content = path.read_text() if path.exists() else ""
    block = readme_block(results["settings"]["database"], WORKERS)
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    if start in content and end in content:
        before, rest = content.split(start, 1)
        _, after = rest.split(end, 1)
        path.write_text(f"{before}{start}\n{table}{end}{after}")
        log(f"README table updated: {path} ({block})")


def readme_block(database: str, workers: int) -> str:
    """Which table of docs/benchmarks.md a run replaces: PostgreSQL's, several workers', or
    the one-worker SQLite table at the top, so that no run overwrites another kind's."""
    if database == "postgresql":
        return README_BLOCKS["postgresql"]
    return README_BLOCKS["workers" if workers > 1 else "sqlite"]


if __name__ == "__main__":
    sys.exit(main())
