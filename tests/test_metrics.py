"""GET /metrics: Prometheus' text format, off by default, counting every worker process.

In-process tests share this process's registry with every other test, so they compare a
value before and after; the two-worker test runs real uvicorn workers on a fresh directory
and expects exact totals.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.conftest import DEFAULT_PASSWORD, bearer, login, new_user, refresh, signup
from tests.conftest import test_settings as make_settings
from tests.live_server import server_environment
from tests.mail import MailServer
from tests.processes import ServiceProcess, free_port, start_serve
from tests.test_mail import wait_until
from tests.test_mfa import clock, code_at, enrol, mfa_token_of, otp_step, recovery_step  # noqa: F401 - clock is a fixture
from tests.test_recovery import VERIFY, request_reset, service

METRICS_TOKEN = "scraper-token-" + "m" * 32
SCRAPER = bearer(METRICS_TOKEN)

# Every series API.md lists, by the name its TYPE line carries.
API_SERIES = {
    "passgate_login_attempts": "counter",
    "passgate_token_refresh": "counter",
    "passgate_mfa_verifications": "counter",
    "passgate_signups": "counter",
    "passgate_password_reset_requests": "counter",
    "passgate_emails": "counter",
    "passgate_email_outbox_pending": "gauge",
    "passgate_password_hash_seconds": "histogram",
    "passgate_password_hash_queue": "gauge",
    "passgate_http_requests": "counter",
    "passgate_http_request_duration_seconds": "histogram",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: Samples, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(database_url=database_url, metrics_token=METRICS_TOKEN)
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200, response.text
    return samples(response.text)


async def test_metrics_are_off_without_metrics_token(database_url):
    application = create_app(make_settings(database_url=database_url))
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/metrics")).status_code == 404
            assert (await client.get("/metrics", headers=SCRAPER)).status_code == 404


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, "Bearer"),
        ("Basic " + METRICS_TOKEN, "Bearer"),
        ("Bearer wrong", 'Bearer error="invalid_token"'),
        ("Bearer " + METRICS_TOKEN[:-1], 'Bearer error="invalid_token"'),
        ("Bearer " + METRICS_TOKEN + "x", 'Bearer error="invalid_token"'),
    ],
)
async def test_metrics_need_the_metrics_token(client, authorization, challenge):
    headers = {"Authorization": authorization} if authorization else {}

    response = await client.get("/metrics", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge
    assert "passgate_" not in response.text


async def test_the_scrape_is_prometheus_text_with_every_series_api_md_lists(client):
    response = await client.get("/metrics", headers=SCRAPER)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert response.headers["cache-control"] == "no-store"
    types = {family.name: family.type for family in text_string_to_metric_families(response.text)}
    for name, kind in API_SERIES.items():
        assert types.get(name) == kind, name
    # Every login outcome is there from the start, at zero if nothing happened yet.
    scraped = samples(response.text)
    for result in ("success", "invalid_credentials", "throttled", "mfa_required", "unverified"):
        assert ("passgate_login_attempts_total", frozenset({("result", result)})) in scraped
    for method in ("totp", "recovery_code"):
        for result in ("success", "invalid", "throttled"):
            labels = frozenset({("method", method), ("result", result)})
            assert ("passgate_mfa_verifications_total", labels) in scraped


async def test_logins_refreshes_and_signups_are_counted_by_outcome(client):
    before = await scrape(client)
    user = await new_user(client)
    await login(client, user["email"], "a-wrong-password-here")
    await login(client, "nobody@example.com")
    renewed = (await refresh(client, user["refresh_token"])).json()
    await refresh(client, "not-a-refresh-token")
    await refresh(client, user["refresh_token"])  # spent: reuse
    assert renewed["access_token"]
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("passgate_login_attempts_total", result="success") == 1
    assert delta("passgate_login_attempts_total", result="invalid_credentials") == 2
    assert delta("passgate_token_refresh_total", result="success") == 1
    assert delta("passgate_token_refresh_total", result="invalid") == 1
    assert delta("passgate_token_refresh_total", result="reuse_detected") == 1
    assert delta("passgate_signups_total") == 1
    # Signup, the good and the bad password and the unknown email each cost one hash.
    assert delta("passgate_password_hash_seconds_count") == 4


async def test_throttled_logins_are_counted(database_url):
    settings = make_settings(
        database_url=database_url, metrics_token=METRICS_TOKEN, login_rate_limit="2/minute"
    )
    application = create_app(settings)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            before = await scrape(client)
            for _ in range(4):
                await login(client, "ada@example.com", "wrong-password-1")
            after = await scrape(client)

    name = "passgate_login_attempts_total"
    assert value(after, name, result="throttled") - value(before, name, result="throttled") == 2


async def test_http_requests_are_counted_by_route_template_never_by_raw_path(client):
    user = await new_user(client)
    unknown_id = str(uuid.uuid4())
    await client.get(f"/users/{user['id']}", headers=bearer(user["access_token"]))
    await client.get(f"/users/{unknown_id}", headers=bearer(user["access_token"]))
    await client.get(f"/no/such/path/{unknown_id}")
    await client.request("BREW", "/users/me")

    response = await client.get("/metrics", headers=SCRAPER)
    scraped = samples(response.text)

    by_template = {"method": "GET", "route": "/users/{user_id}"}
    assert value(scraped, "passgate_http_requests_total", **by_template, status="200") >= 1
    assert value(scraped, "passgate_http_requests_total", **by_template, status="404") >= 1
    duration = "passgate_http_request_duration_seconds_count"
    assert value(scraped, duration, **by_template, status="200") >= 1
    assert (
        value(
            scraped, "passgate_http_requests_total", method="GET", route="unmatched", status="404"
        )
        >= 1
    )
    assert (
        value(
            scraped, "passgate_http_requests_total", method="other", route="/users/me", status="405"
        )
        >= 1
    )
    # Nothing a client sent, and nothing personal, in any label.
    for secret in (user["id"], unknown_id, user["email"], user["access_token"], "BREW", "/no/such"):
        assert secret not in response.text


async def test_a_scrape_counts_itself_under_its_template(client):
    await client.get("/metrics", headers=SCRAPER)
    scraped = await scrape(client)

    assert (
        value(scraped, "passgate_http_requests_total", method="GET", route="/metrics", status="200")
        >= 1
    )


async def test_the_hash_queue_gauge_returns_to_zero_when_idle(client):
    await asyncio.gather(*(signup(client) for _ in range(6)))

    scraped = await scrape(client)

    assert value(scraped, "passgate_password_hash_queue") == 0


# A real server with two worker processes, as `make run WORKERS=2` and the image start it.


def logins_by_process(directory: Path) -> dict[str, float]:
    """Successful logins as each worker's own file holds them: which processes served."""
    counts: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        for key, count, _timestamp, _position in MmapedDict.read_all_values_from_file(str(path)):
            _metric, sample, labels, _help = json.loads(key)
            if sample == "passgate_login_attempts_total" and labels == {"result": "success"}:
                counts[path.stem] = counts.get(path.stem, 0.0) + count
    return counts


def worker_pids(server_pid: int, directory: Path) -> list[int]:
    """The server's child processes that keep metrics files: its uvicorn workers."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    return [int(pid) for pid in children if (directory / f"gauge_livesum_{pid}.db").exists()]


def start_two_workers(tmp_path: Path, port: int) -> ServiceProcess:
    """`python -m app serve --workers 2`, as make run WORKERS=2 and the image start it."""
    env = server_environment(
        tmp_path, {"METRICS_TOKEN": METRICS_TOKEN, "LOGIN_RATE_LIMIT": "1000/minute"}
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return start_serve(env, tmp_path, port=port, workers=2)


def login_many(url: str, email: str, batch: int) -> None:
    def one_login() -> None:
        # A new connection each time, so the kernel hands logins to either worker.
        with httpx.Client(base_url=url, timeout=30) as http:
            response = http.post(
                "/token",
                data={"grant_type": "password", "username": email, "password": DEFAULT_PASSWORD},
            )
            assert response.status_code == 200, response.text

    async def run() -> None:
        await asyncio.gather(*(asyncio.to_thread(one_login) for _ in range(batch)))

    asyncio.run(run())


def scraped_from(url: str) -> Samples:
    with httpx.Client(base_url=url, timeout=30) as http:
        response = http.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200, response.text
    return samples(response.text)


def test_a_two_worker_server_reports_exactly_the_logins_of_both_workers(tmp_path: Path):
    port = free_port()
    metrics_dir = tmp_path / f"metrics-{port}"  # serve's folder: beside the SQLite file
    service = start_two_workers(tmp_path, port)
    try:
        email = "ada@example.com"
        created = httpx.post(
            f"{service.url}/signup",
            json={"name": "Ada", "email": email, "password": DEFAULT_PASSWORD},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        logins = 0
        for _ in range(12):  # until both workers have served some
            login_many(service.url, email, 6)
            logins += 6
            if sum(1 for count in logins_by_process(metrics_dir).values() if count) >= 2:
                break
        served = logins_by_process(metrics_dir)
        assert sum(1 for count in served.values() if count) >= 2, served
        assert sum(served.values()) == logins

        for _ in range(6):  # whichever worker answers, the total is the same
            scraped = scraped_from(service.url)
            assert value(scraped, "passgate_login_attempts_total", result="success") == logins
            assert value(scraped, "passgate_signups_total") == 1
            assert value(scraped, "passgate_password_hash_queue") == 0

        # A worker killed outright: uvicorn starts another, what it counted stays counted,
        # and its live gauge (the hash queue) is dropped at the next scrape.
        workers = worker_pids(service.process.pid, metrics_dir)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len(worker_pids(service.process.pid, metrics_dir)) < 2 or workers[0] in (
            worker_pids(service.process.pid, metrics_dir)
        ):
            assert time.monotonic() < deadline, "uvicorn did not replace the killed worker"
            time.sleep(0.2)
        assert (metrics_dir / f"gauge_livesum_{workers[0]}.db").exists()
        scraped = scraped_from(service.url)
        assert value(scraped, "passgate_login_attempts_total", result="success") == logins
        assert not (metrics_dir / f"gauge_livesum_{workers[0]}.db").exists()
    finally:
        service.stop()

    # The next start counts from zero: the first start's files are gone before any worker runs.
    service = start_two_workers(tmp_path, port)
    try:
        assert (
            value(scraped_from(service.url), "passgate_login_attempts_total", result="success") == 0
        )
        login_many(service.url, email, 3)
        assert (
            value(scraped_from(service.url), "passgate_login_attempts_total", result="success") == 3
        )
    finally:
        service.stop()


# Mail (issue 12's outbox): sent and failed deliveries by kind, the backlog, reset requests.


async def test_mail_deliveries_the_backlog_and_reset_requests_are_counted(database_url):
    server = MailServer()  # its port is chosen, but nothing listens there yet
    settings = make_settings(
        database_url=database_url, metrics_token=METRICS_TOKEN, **server.settings()
    )
    async with service(settings) as (_, client):
        before = await scrape(client)
        assert (await signup(client, email="ada@example.com")).status_code == 201
        assert (await request_reset(client, "ada@example.com")).status_code == 202
        assert (await request_reset(client, "nobody@example.com")).status_code == 202

        async def backlog_and_failures() -> bool:
            scraped = await scrape(client)
            failed = value(
                scraped, "passgate_emails_total", kind="email_verification", result="failed"
            ) - value(before, "passgate_emails_total", kind="email_verification", result="failed")
            return value(scraped, "passgate_email_outbox_pending") == 2 and failed >= 1

        await wait_until(backlog_and_failures)

        server.start()
        try:
            await server.wait_for("ada@example.com", subject=VERIFY)

            async def delivered() -> bool:
                scraped = await scrape(client)
                return value(scraped, "passgate_email_outbox_pending") == 0

            await wait_until(delivered)
        finally:
            server.stop()
        after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("passgate_emails_total", kind="email_verification", result="sent") == 1
    assert delta("passgate_emails_total", kind="password_reset", result="sent") == 1
    assert delta("passgate_password_reset_requests_total") == 2
    # Labels hold kinds of mail only, never an address.
    assert not any("@" in label for _name, labels in after for _, label in labels)


async def test_a_login_refused_for_an_unverified_address_is_counted(database_url):
    settings = make_settings(
        database_url=database_url, metrics_token=METRICS_TOKEN, require_email_verification=True
    )
    async with service(settings) as (_, client):
        before = await scrape(client)
        await signup(client, email="ada@example.com")
        assert (await login(client, "ada@example.com")).status_code == 400
        after = await scrape(client)

    name = "passgate_login_attempts_total"
    assert value(after, name, result="unverified") - value(before, name, result="unverified") == 1


# Second factor (issue 13): mfa_required logins and the codes checked at /token.


async def test_second_factor_logins_and_codes_are_counted(client, clock):  # noqa: F811 - the fixture
    user = await enrol(client, await new_user(client), clock)
    before = await scrape(client)
    token = await mfa_token_of(client, user)
    right = code_at(user["secret"], clock.now)
    wrong = "000000" if right != "000000" else "111111"
    assert (await otp_step(client, token, wrong)).status_code == 400
    assert (await otp_step(client, token, right)).status_code == 200
    token = await mfa_token_of(client, user)
    assert (await recovery_step(client, token, user["recovery_codes"][0])).status_code == 200
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    mfa = "passgate_mfa_verifications_total"
    assert delta("passgate_login_attempts_total", result="mfa_required") == 2
    assert delta(mfa, method="totp", result="invalid") == 1
    assert delta(mfa, method="totp", result="success") == 1
    assert delta(mfa, method="recovery_code", result="success") == 1
    # A login finished with a second factor is one login: counted once, as mfa_required.
    assert delta("passgate_login_attempts_total", result="success") == 0
