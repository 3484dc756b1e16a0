"""The service as a separate process that the fault tests can start, kill -9 and restart."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.processes import free_port

REPO = Path(__file__).resolve().parent.parent.parent

# The cheapest Argon2 cost: the fault tests are about what survives, not about hashing, and
# cheap hashes put many more requests in flight when the process dies.
CHEAP_HASHING = {
    "PASSWORD_HASH_MEMORY_KIB": "1024",
    "PASSWORD_HASH_TIME_COST": "1",
    "PASSWORD_HASH_PARALLELISM": "1",
}
# Big enough that no limiter ever answers 429: the fault tests and `make bench` measure the work.
UNLIMITED_RATE = "1000000000/second"


def production_env(database_url: str, secret_key: str) -> dict[str, str]:
    """Production settings on the given database, with limits too high to answer 429.

    The fault tests and `make bench` (tests/bench/run.py) both start the service from it.
    """
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEY": secret_key,
        "ENVIRONMENT": "production",
        "PUBLIC_URL": "http://127.0.0.1",
        # The service writes its own access log (uvicorn's --no-access-log no longer applies).
        "ACCESS_LOG": "false",
        "MIGRATE_ON_START": "true",
        "LOGIN_RATE_LIMIT": UNLIMITED_RATE,
        "SIGNUP_RATE_LIMIT": UNLIMITED_RATE,
    }


def service_env(database_url: str, secret_key: str) -> dict[str, str]:
    """The fault tests' service: production settings with cheap hashing (see CHEAP_HASHING)."""
    return {**production_env(database_url, secret_key), **CHEAP_HASHING}


class ServiceProcess:
    """uvicorn serving an app on a loopback port that stays the same across restarts.

    The fault tests run the service (app.main:app); the benchmark also runs its reference
    apps this way, with its own uvicorn flags.
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        workers: int = 1,
        *,
        app: str = "app.main:app",
        flags: list[str] | None = None,
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.app = app
        self.flags = flags or [
            "--workers", str(workers), "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            sys.executable, "-m", "uvicorn", self.app,
            "--host", "127.0.0.1", "--port", str(self.port), *self.flags,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # one process group: kill -9 takes the workers too
            )

    def wait_ready(self, timeout: float = 60.0, *, path: str = "/health/ready") -> None:
        """Until `path` answers without a server error (/health/ready: 200, not 503)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited with {self.process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}{path}", timeout=2).status_code < 500:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.app} was not ready within {timeout} s")

    def kill(self) -> None:
        """SIGKILL to every process of the service: no shutdown code runs."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
