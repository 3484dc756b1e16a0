"""Stopping `python -m app serve` (make run, the image) with SIGTERM, as `docker stop` does.

The server stops gracefully and the command exits 0, with one worker as with several; the
SQLite database is closed cleanly (SQLite removes its write-ahead log when the last
connection closes) and keeps what was written. How long the exit took is printed (pytest -s), never
asserted: the wait below only catches a server that does not stop at all.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEFAULT_PASSWORD
from tests.processes import free_port, service_environment, start_serve

# Far longer than a stop takes (a fraction of a second); only a server that hangs reaches it.
HANG_SECONDS = 60


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_serve_cleanly_with_status_0(tmp_path: Path, workers) -> None:
    database = tmp_path / "passgate.db"
    env = service_environment(
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        SECRET_KEY="serve-stop-test-secret-that-is-long-enough-for-hs256",
    )
    service = start_serve(env, tmp_path, port=free_port(), workers=workers)
    try:
        # Work that starts the hashing threads, the database threads and the mail sender.
        with httpx.Client(base_url=service.url, timeout=10, trust_env=False) as http:
            body = {"name": "Ada", "email": "ada@example.com", "password": DEFAULT_PASSWORD}
            assert http.post("/signup", json=body).status_code == 201
            login = {"grant_type": "password", "username": body["email"]}
            login["password"] = DEFAULT_PASSWORD
            assert http.post("/token", data=login).status_code == 200
    except BaseException:
        service.stop()
        raise

    started = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    try:
        status = service.process.wait(timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()
        raise AssertionError(f"serve still running {HANG_SECONDS} s after SIGTERM") from None
    print(f"serve --workers {workers} exited {time.monotonic() - started:.3f} s after SIGTERM")

    output = service.output()
    assert status == 0, output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output
    assert not (tmp_path / "passgate.db-wal").exists(), "the database was not closed"
    with sqlite3.connect(database) as connection:
        [(users,)] = connection.execute("SELECT count(*) FROM users").fetchall()
    assert users == 1
