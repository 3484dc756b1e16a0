"""`make bench`'s W1 (GET /users/me, 32 connections) with and without metrics, from one run.

    .venv/bin/python -m tests.bench.metrics_w1

Three copies of the service, on the uvicorn settings and production environment `make bench`
uses, each on its own SQLite file: without METRICS_TOKEN, with it (values in memory, as one
worker keeps them), and with it in multiprocess mode (values in mmap'd files, as every worker
of `serve --workers N` keeps them), plus the hello_auth reference. Rounds interleave the four,
so a busy neighbour weighs on each alike. BENCH_RUNS and BENCH_DURATION as for `make bench`.
"""

from __future__ import annotations

import secrets
import shutil
import statistics
import tempfile
from pathlib import Path

import httpx

from tests.bench.run import (
    BENCH_PASSWORD,
    RUNS,
    log,
    login,
    machine,
    run_wrk,
    uvicorn_flags,
)
from tests.faults.service import ServiceProcess, production_env

METRICS_TOKEN = secrets.token_urlsafe(32)


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="passgate-metrics-w1-"))
    secret = secrets.token_urlsafe(48)
    info = machine()
    log(
        f"{info['nproc']} cores, {info['cpu_model']}; load before: {Path('/proc/loadavg').read_text().split()[:3]}"
    )
    multiprocess_dir = folder / "multiproc"
    multiprocess_dir.mkdir()

    def service_env(name: str, **extra: str) -> dict[str, str]:
        return {
            **production_env(f"sqlite+aiosqlite:///{folder / name}.db", secret),
            "AUDIT_LOG": "off",
            **extra,
        }

    apps = {
        "hello_auth": ("tests.bench.hello_auth:app", {"BENCH_SECRET_KEY": secret}),
        "W1 metrics off": ("app.main:app", service_env("off")),
        "W1 metrics on": ("app.main:app", service_env("on", METRICS_TOKEN=METRICS_TOKEN)),
        "W1 metrics on, multiprocess": (
            "app.main:app",
            service_env(
                "multi",
                METRICS_TOKEN=METRICS_TOKEN,
                PROMETHEUS_MULTIPROC_DIR=str(multiprocess_dir),
            ),
        ),
    }
    servers = {
        name: ServiceProcess(env, folder / f"{index}.log", app=app, flags=uvicorn_flags())
        for index, (name, (app, env)) in enumerate(apps.items())
    }
    results: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.start()
        tokens: dict[str, str] = {}
        for name, server in servers.items():
            if name == "hello_auth":
                server.wait_ready(path="/users/me")
                continue
            server.wait_ready()
            client = httpx.Client(base_url=server.url, timeout=30)
            email = f"bench-{secrets.token_hex(4)}@example.com"
            client.post(
                "/signup", json={"name": "Bench", "email": email, "password": BENCH_PASSWORD}
            ).raise_for_status()
            tokens[name] = login(client, email)["access_token"]
        tokens["hello_auth"] = tokens["W1 metrics off"]
        for round_number in range(1, RUNS + 1):
            log(f"round {round_number}/{RUNS}")
            for name, server in servers.items():
                run = run_wrk(
                    server.url + "/users/me", "bearer_get.lua", 32, {"BENCH_TOKEN": tokens[name]}
                )
                assert run.errors == 0, (name, run)
                results[name].append(run.rps)
                log(f"  {name:<28} {run.rps:9.1f} req/s  p99 {run.latency_p99_ms:7.2f} ms")
        scraped = httpx.get(
            servers["W1 metrics on, multiprocess"].url + "/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        ).text
        counted = [line for line in scraped.splitlines() if 'route="/users/me"' in line]
        log(f"multiprocess scrape: {counted[0] if counted else 'no /users/me series?'}")
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    reference = statistics.median(results["hello_auth"])
    log(f"load after: {Path('/proc/loadavg').read_text().split()[:3]}")
    for name, values in results.items():
        median = statistics.median(values)
        log(
            f"{name:<28} median {median:9.1f} req/s [{min(values):.1f}-{max(values):.1f}]"
            f"  {median / reference:.2f} of hello_auth"
        )


if __name__ == "__main__":
    main()
