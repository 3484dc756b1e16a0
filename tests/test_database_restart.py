"""PostgreSQL restarted under a running service: 503 while it is away, served again after.

Stops the machine's PostgreSQL cluster for a few seconds, which breaks anything else using
it, so it runs only when asked: PASSGATE_DISRUPTIVE_TESTS=1 (CI's PostgreSQL leg does).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.conftest import TEST_DATABASE_URL, bearer, login, new_user
from tests.keyfiles import new_private_pem, write
from tests.processes import ServiceProcess, running_services, service_environment

pytestmark = [
    pytest.mark.skipif(
        TEST_DATABASE_URL is None, reason="needs TEST_DATABASE_URL (a PostgreSQL server)"
    ),
    pytest.mark.skipif(
        os.environ.get("PASSGATE_DISRUPTIVE_TESTS") != "1",
        reason="restarts PostgreSQL: set PASSGATE_DISRUPTIVE_TESTS=1",
    ),
]


def _cluster_command(action: str) -> list[str]:
    """pg_ctlcluster for the machine's one cluster (Debian's layout: /etc/postgresql/VERSION)."""
    versions = sorted(path.name for path in Path("/etc/postgresql").glob("*"))
    if not versions or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        pytest.skip("needs root and a Debian PostgreSQL cluster (pg_ctlcluster)")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", action]


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    key = write(tmp_path / "signing.pem", new_private_pem("ES256"))
    environment = service_environment(
        DATABASE_URL=database_url,
        JWT_ALGORITHM="ES256",
        JWT_PRIVATE_KEY_FILE=str(key),
        DB_CONNECT_TIMEOUT_SECONDS="2",
    )
    with running_services(1, environment, tmp_path) as [process]:
        yield process


async def test_the_service_answers_503_while_postgres_is_down_and_recovers_after(
    service: ServiceProcess,
) -> None:
    stop, start = _cluster_command("stop"), _cluster_command("start")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        user = await new_user(client)
        me = await client.get("/users/me", headers=bearer(user["access_token"]))
        assert me.status_code == 200

        try:
            await anyio.run_process(stop)
            ready_while_down = await client.get("/health/ready")
            me_while_down = await client.get("/users/me", headers=bearer(user["access_token"]))
            login_while_down = await login(client, user["email"])
        finally:
            # Whatever happened above, PostgreSQL comes back: other tests need it.
            await anyio.run_process(start, check=False)

        me_after = await client.get("/users/me", headers=bearer(user["access_token"]))
        ready_after = await client.get("/health/ready")
        login_after = await login(client, user["email"])

    assert ready_while_down.status_code == 503
    for response in (me_while_down, login_while_down):
        assert response.status_code == 503, response.text
        assert response.json() == {"detail": "Service temporarily unavailable"}
        assert response.headers["retry-after"].isdigit()
    assert me_after.status_code == 200
    assert ready_after.status_code == 200
    assert login_after.status_code == 200
