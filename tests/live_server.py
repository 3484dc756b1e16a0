"""A real Passgate process on 127.0.0.1, for tests and tools that need a socket, not ASGI.

The browser test and the schemathesis CI leg use it: uvicorn in a subprocess, on a free port,
with its own SQLite file and the cheapest password-hash cost, stopped when the block exits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.processes import service_environment, start_service

SERVER_SECRET = "live-server-secret-key-that-is-long-enough-for-hs256"


def server_environment(data_dir: Path, overrides: Mapping[str, str]) -> dict[str, str]:
    """Test settings for a service keeping its SQLite file in `data_dir`, then the overrides."""
    return service_environment(
        DATABASE_URL=f"sqlite+aiosqlite:///{data_dir / 'passgate.db'}",
        SECRET_KEY=SERVER_SECRET,
        MIGRATE_ON_START="true",
        **overrides,
    )


@contextlib.contextmanager
def running_service(data_dir: Path, **overrides: str) -> Iterator[str]:
    """Start `uvicorn app.main:app` in `data_dir` and yield its base URL once it is ready.

    Keyword arguments are extra environment variables (settings) for the service.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    service = start_service(server_environment(data_dir, overrides), data_dir)
    try:
        service.wait_ready()
        yield service.url
    finally:
        service.stop()
