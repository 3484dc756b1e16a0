"""A real Passgate process on 127.0.0.1, for tests and tools that need a socket, not ASGI.

The browser test and the schemathesis CI leg use it: uvicorn in a subprocess, on a free port,
with its own SQLite file and the cheapest password-hash cost, stopped when the block exits.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from app.config import Settings

STARTUP_TIMEOUT_SECONDS = 60.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0
SERVER_SECRET = "live-server-secret-key-that-is-long-enough-for-hs256"


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it; a race is possible but harmless)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_environment(data_dir: Path, overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any Passgate setting, plus test settings."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in Settings.model_fields
    }
    environment.update(
        {
            "DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'passgate.db'}",
            "SECRET_KEY": SERVER_SECRET,
            "ENVIRONMENT": "test",
            "MIGRATE_ON_START": "true",
            "PASSWORD_HASH_MEMORY_KIB": "1024",
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_PARALLELISM": "1",
            **overrides,
        }
    )
    return environment


@contextlib.contextmanager
def running_service(data_dir: Path, **overrides: str) -> Iterator[str]:
    """Start `uvicorn app.main:app` and yield its base URL once /health answers.

    Keyword arguments are extra environment variables (settings) for the service. The working
    directory is `data_dir`, so a developer's `.env` file is not read.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = data_dir / "server.log"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=data_dir,
            env=server_environment(data_dir, overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            _wait_until_healthy(base_url, process, log_path)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_healthy(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"the service did not answer within {STARTUP_TIMEOUT_SECONDS}s:\n{_tail(log_path)}"
    )


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
