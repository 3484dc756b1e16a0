"""The benchmark harness: the service's hashing threads per worker, and the in-process driver.

`make bench` must run the service as docs/benchmarks.md ("Sizing") tells operators to: with N
workers, PASSWORD_HASH_THREADS = usable cores // N (at least 1) unless the environment sets it,
and the hash limit in its report counts the threads it started. The cost tools' in-process
ASGI driver must get the same answers as a real HTTP client.
"""

from __future__ import annotations

import json
import os

import pytest
from fastapi import FastAPI

from tests.bench import hello, run
from tests.bench.asgi_driver import bearer_headers, call, cost_per_request_us

URL = "sqlite+aiosqlite:////tmp/passgate-bench-test.db"
SECRET = "s" * 48


@pytest.fixture
def cores(monkeypatch: pytest.MonkeyPatch):
    """Set how many cores the harness sees, with PASSWORD_HASH_THREADS unset."""
    monkeypatch.delenv("PASSWORD_HASH_THREADS", raising=False)

    def set_cores(count: int) -> None:
        monkeypatch.setattr(run, "usable_cores", lambda: count)

    return set_cores


@pytest.mark.parametrize(
    ("usable", "workers", "per_worker", "total"),
    [
        (2, 1, 2, 2),  # one worker hashes on every core
        (4, 1, 4, 4),
        (2, 2, 1, 2),  # two workers on two cores: one thread each, not two
        (4, 2, 2, 4),
        (3, 2, 1, 2),  # cores that do not share out evenly round down
        (1, 2, 1, 2),  # pinned to one core (PostgreSQL on the other): still at least one each
    ],
)
def test_the_service_gets_the_usable_cores_shared_out_between_its_workers(
    cores, usable, workers, per_worker, total
):
    cores(usable)

    env = run.service_environment(URL, SECRET, workers=workers)

    assert env["PASSWORD_HASH_THREADS"] == str(per_worker)
    assert run.hash_threads_started(env, workers=workers) == total
    assert env["DATABASE_URL"] == URL
    assert env["SECRET_KEY"] == SECRET
    assert env["ENVIRONMENT"] == "production"


@pytest.mark.parametrize("workers", [1, 2])
def test_an_explicit_password_hash_threads_wins(cores, monkeypatch, workers):
    cores(2)
    monkeypatch.setenv("PASSWORD_HASH_THREADS", "3")

    env = run.service_environment(URL, SECRET, workers=workers)

    assert env["PASSWORD_HASH_THREADS"] == "3"
    assert run.hash_threads_started(env, workers=workers) == 3 * workers


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_the_threads_are_counted_from_the_cores_the_run_is_pinned_to(monkeypatch):
    monkeypatch.delenv("PASSWORD_HASH_THREADS", raising=False)
    own = os.sched_getaffinity(0)
    try:
        # As `make bench` with BENCH_DATABASE_URL: pinned first, the environment built after.
        os.sched_setaffinity(0, {min(own)})
        pinned = run.service_environment(URL, SECRET, workers=1)
    finally:
        os.sched_setaffinity(0, own)
    unpinned = run.service_environment(URL, SECRET, workers=1)

    assert pinned["PASSWORD_HASH_THREADS"] == "1"
    assert unpinned["PASSWORD_HASH_THREADS"] == str(len(own))


def test_the_report_counts_the_threads_it_was_given():
    results = run.analyse(
        {},
        [0.02],
        [0.02],
        [95.0],
        threads_total=2,
        backend="sqlite",
        info={"nproc": 2, "cpu_model": "test", "python": "3", "wrk": "wrk", "commit": "abc"},
        pinning=run.Pinning("none", "none"),
    )

    assert results["settings"]["password_hash_threads_total"] == 2
    assert results["hashing"]["threads_limit_per_s"] == pytest.approx(100.0)
    assert "hashing threads (2) / hash time = 100.0/s" in run.markdown(results)


async def test_the_driver_answers_as_the_app_does():
    status, body = await call(hello.app, "/users/me", [])

    assert status == 200
    assert json.loads(body) == hello.CONSTANT_USER
    status, _ = await call(hello.app, "/nowhere", [])
    assert status == 404


async def test_the_driver_carries_a_bearer_token_and_its_query(app: FastAPI):
    headers = await bearer_headers(app)

    status, body = await call(app, "/users/me", headers)
    assert status == 200, body
    assert json.loads(body)["email"].startswith("bench-")
    status, _ = await call(app, "/users/me", [(b"host", b"bench")])
    assert status == 401
    status, body = await call(app, "/users", headers, b"limit=1")
    assert status == 200, body
    assert len(json.loads(body)["users"]) == 1

    cpu_us, wall_us = await cost_per_request_us(app, "/users/me", headers, 8, clients=4)
    assert cpu_us > 0
    assert wall_us > 0


@pytest.mark.parametrize(
    ("database", "workers", "block"),
    [("sqlite", 1, "bench"), ("sqlite", 2, "bench-workers"), ("postgresql", 1, "bench-postgres")],
)
def test_each_kind_of_run_replaces_its_own_table(database, workers, block):
    page = (run.REPO / "docs" / "benchmarks.md").read_text()
    assert run.readme_block(database, workers) == block
    assert f"<!-- {block}:start -->" in page and f"<!-- {block}:end -->" in page


def wrk_run(rps: float, spread: list[int] | None = None) -> run.WrkRun:
    return run.WrkRun(
        requests=int(rps * 5),
        duration_us=5_000_000,
        errors=0,
        latency_p50_ms=1.0,
        latency_p99_ms=2.0,
        latency_mean_ms=1.0,
        worker_connections=spread or [],
    )


def test_a_run_at_several_workers_compares_w1_to_hello_with_the_one_worker_copies():
    one = run.ONE_WORKER
    runs = {
        "hello": [wrk_run(16_000, [16, 16]), wrk_run(15_000, [32])],
        "W1 me": [wrk_run(8_000, [17, 15]), wrk_run(7_000, [16, 16])],
        f"hello{one}": [wrk_run(10_000), wrk_run(9_000)],
        f"W1 me{one}": [wrk_run(4_600), wrk_run(4_400)],
    }
    results = run.analyse(
        runs,
        [],
        [],
        [],
        threads_total=2,
        backend="sqlite",
        info={"nproc": 2, "cpu_model": "test", "python": "3", "wrk": "wrk", "commit": "abc"},
        pinning=run.Pinning("none", "none"),
    )

    assert results["ratios"]["W1 / hello rps, one worker"] == pytest.approx(4_500 / 9_500)
    assert results["ratios"]["W1 / hello, workers / one"] == pytest.approx(
        (7_500 / 15_500) / (4_500 / 9_500)
    )
    assert results["targets"]["W1 / hello at N workers >= at one"] is True
    table = run.markdown(results)
    assert "| W1 / hello at these workers ÷ at one | 1.02 | >= 1.00 | yes |" in table
    assert "hello: 16+16, 32; W1 me: 17+15, 16+16." in table
    # Round by round: (8000/16000)/(4600/10000) and (7000/15000)/(4400/9000).
    assert results["w1_hello_workers_per_round"] == pytest.approx(
        [0.5 / 0.46, (7 / 15) / (4.4 / 9)]
    )
    assert (
        "round by round (the four runs of a round within the same minute): 1.09, 0.95; median 1.02."
        in table
    )
