"""W1 alone and W1 in a login storm (W5) against the instrumented service (diagnostics).

    .venv/bin/python -m tests.bench.storm_probe [rounds]

Prints wrk's p50/p99 beside what the service measured over the same seconds: event-loop lag,
GC pauses per generation and CPU per thread. Run it inside /work/bin/quiet.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.bench import run as bench
from tests.faults.service import ServiceProcess, production_env

EXTRA_ENV = dict(item.split("=", 1) for item in os.environ.get("PROBE_ENV", "").split() if item)


def w1_in_storm(url: str, bearer: dict, login_env: dict, mark) -> tuple:  # type: ignore[no-untyped-def]
    """As run.py's W5, with the service's measures taken over W1's seconds only."""
    storm = subprocess.Popen(
        bench.wrk_command(url, "login.lua", 16, bench.DURATION + 3),
        env={**os.environ, **login_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        mark()
        measured = bench.run_wrk(url + "/users/me", "bearer_get.lua", 32, bearer)
        stats = mark()
    finally:
        out, _ = storm.communicate(timeout=bench.DURATION + 60)
    return measured, bench.parse_wrk(out), stats


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    phases = os.environ.get("PROBE_PHASES", "alone,storm").split(",")
    log_dir = Path(tempfile.mkdtemp(prefix="passgate-probe-"))
    out = log_dir / "probe.jsonl"
    secret = secrets.token_urlsafe(48)
    with bench.bench_database() as (database_url, _):
        env = {
            **production_env(database_url, secret),
            "PROBE_OUT": str(out),
            **EXTRA_ENV,
        }
        server = ServiceProcess(
            env,
            log_dir / "service.log",
            app="tests.bench.probe_app:app",
            flags=bench.uvicorn_flags(),
        )
        server.start()
        try:
            server.wait_ready()
            client = httpx.Client(base_url=server.url, timeout=30)
            email = f"probe-{secrets.token_hex(4)}@example.com"
            client.post(
                "/signup", json={"name": "Probe", "email": email, "password": bench.BENCH_PASSWORD}
            ).raise_for_status()
            token = bench.login(client, email)["access_token"]
            bearer = {"BENCH_TOKEN": token}
            login_env = {"BENCH_EMAIL": email, "BENCH_PASSWORD": bench.BENCH_PASSWORD}
            assert server.process is not None
            pid = server.process.pid

            def mark() -> dict:
                before = out.stat().st_size if out.exists() else 0
                os.kill(pid, signal.SIGUSR1)
                for _ in range(100):
                    time.sleep(0.05)
                    if out.exists() and out.stat().st_size > before:
                        break
                return json.loads(out.read_text().splitlines()[-1])

            # Warm up.
            bench.run_wrk(server.url + "/users/me", "bearer_get.lua", 32, bearer)
            for number in range(rounds):
                for phase in phases:
                    time.sleep(1.0)
                    if phase == "alone":
                        mark()
                        run = bench.run_wrk(server.url + "/users/me", "bearer_get.lua", 32, bearer)
                        stats = mark()
                        storm = None
                    elif phase == "login":
                        mark()
                        storm = bench.run_wrk(server.url, "login.lua", 16, login_env)
                        stats = mark()
                        run = storm
                    else:
                        run, storm, stats = w1_in_storm(server.url, bearer, login_env, mark)
                    line = (
                        f"round {number + 1} {phase:<6} W1 {run.rps:7.0f}/s p50 "
                        f"{run.latency_p50_ms:6.1f} p99 {run.latency_p99_ms:6.1f} ms "
                        f"wrk {run.load_cores:.2f} cores"
                    )
                    if storm is not None:
                        line += f"  storm {storm.rps:5.1f}/s p99 {storm.latency_p99_ms:.0f} ms"
                    print(line, flush=True)
                    print("   lag", json.dumps(stats["lag_ms"]), flush=True)
                    print("   gc ", json.dumps(stats["gc"]), flush=True)
                    print(
                        f"   per thread over {stats['seconds']} s: cpu s, runq wait s, vcsw, ivcsw"
                    )
                    for name, values in stats["thread_cpu_s"].items():
                        if values[0] > 0.01:
                            print(f"     {name:<28} {values}", flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
