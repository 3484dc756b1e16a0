"""PostgreSQL stopped and started again under a running service.

Expected: /health/ready answers 503 within 5 s of the stop; protected endpoints answer 503
promptly (neither hang nor 500); within 10 s of the database's return everything works
again, without restarting the service. Needs root and a local Debian PostgreSQL cluster
(pg_ctlcluster); the database is always started again, whatever happens.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import make_url

READY_WITHIN_SECONDS = 5.0
RECOVER_WITHIN_SECONDS = 10.0
PROMPT_ANSWER_SECONDS = 10.0
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class OutageReport:
    ready_503_after: float | None = None
    protected_answers: dict[str, str] = field(default_factory=dict)
    recovered_after: float | None = None
    problems: list[str] = field(default_factory=list)


def pg_ctlcluster(action: str) -> None:
    versions = sorted(path.name for path in Path("/etc/postgresql").iterdir())
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", action],
        check=True,
        capture_output=True,
        timeout=60,
    )


def require_loopback(database_url: str) -> None:
    host = make_url(database_url).host
    if host not in LOOPBACK_HOSTS:
        raise SystemExit(f"refusing to stop a PostgreSQL server that is not local: {host}")


def _wait_for(predicate: object, limit: float) -> float | None:
    """Seconds until predicate() is true, or None after limit seconds."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if predicate():  # type: ignore[operator]  # a zero-argument callable
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def run_outage(base_url: str, access_token: str) -> OutageReport:
    report = OutageReport()
    client = httpx.Client(base_url=base_url, timeout=PROMPT_ANSWER_SECONDS)
    bearer = {"Authorization": f"Bearer {access_token}"}

    def status(method: str, path: str, **kwargs: object) -> int | str:
        try:
            return client.request(method, path, **kwargs).status_code  # type: ignore[arg-type]  # httpx's keyword types
        except httpx.TimeoutException:
            return "timeout"
        except httpx.TransportError as exc:
            return type(exc).__name__

    try:
        pg_ctlcluster("stop")
        report.ready_503_after = _wait_for(
            lambda: status("GET", "/health/ready") == 503, READY_WITHIN_SECONDS
        )
        if report.ready_503_after is None:
            report.problems.append(
                f"/health/ready did not answer 503 within {READY_WITHIN_SECONDS} s"
            )
        checks = {
            "GET /users/me": ("GET", "/users/me", {"headers": bearer}),
            "GET /users": ("GET", "/users", {"headers": bearer}),
            "POST /logout": ("POST", "/logout", {"headers": bearer}),
        }
        for label, (method, path, kwargs) in checks.items():
            started = time.monotonic()
            answer = status(method, path, **kwargs)
            report.protected_answers[label] = f"{answer} in {time.monotonic() - started:.2f} s"
            if answer != 503:
                report.problems.append(f"{label} answered {answer} while the database was down")
    finally:
        pg_ctlcluster("start")
    report.recovered_after = _wait_for(
        lambda: (
            status("GET", "/health/ready") == 200
            and status("GET", "/users/me", headers=bearer) == 200
        ),
        RECOVER_WITHIN_SECONDS,
    )
    if report.recovered_after is None:
        report.problems.append(f"not recovered within {RECOVER_WITHIN_SECONDS} s of the restart")
    client.close()
    return report
