"""What a throttled POST /token costs next to a real login, with production Argon2 settings.

Runs the app in-process (httpx over ASGITransport, so no network or server noise) on a
temporary SQLite database, and prints medians over many requests and their ratio:

    .venv/bin/python tests/bench/throttle_cost.py [--logins 40] [--throttled 400] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from app.config import Settings
from app.db import Base
from app.main import create_app

PASSWORD = "correct-horse-battery-staple"


def client_at(app: object, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))  # type: ignore[arg-type]  # an ASGI app
    return httpx.AsyncClient(transport=transport, base_url="http://bench")


async def timed_requests(
    client: httpx.AsyncClient, form: dict[str, str], count: int, expect: int
) -> list[float]:
    durations = []
    for _ in range(count):
        start = time.perf_counter()
        response = await client.post("/token", data=form)
        durations.append(time.perf_counter() - start)
        assert response.status_code == expect, response.text
    return durations


async def timed_logins(
    client: httpx.AsyncClient, email: str, password: str, count: int, expect: int
) -> list[float]:
    form = {"grant_type": "password", "username": email, "password": password}
    return await timed_requests(client, form, count, expect)


async def main(logins: int, throttled: int, redis_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        # Production Argon2 parameters (the Settings defaults); only storage is made temporary.
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]  # pydantic-settings init kwarg
            environment="test",
            secret_key="benchmark-secret-key-that-is-long-enough!",
            database_url=f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}",
            migrate_on_start=False,
            audit_log="off",
            login_rate_limit="10/minute",
            redis_url=redis_url,
            redis_key_prefix=f"passgate-bench-{uuid.uuid4().hex}",
        )
        app = create_app(settings)
        async with LifespanManager(app):
            async with app.state.engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
            async with client_at(app, "10.0.0.1") as user, client_at(app, "10.0.0.2") as attacker:
                response = await user.post(
                    "/signup",
                    json={"name": "Bench", "email": "bench@example.com", "password": PASSWORD},
                )
                assert response.status_code == 201, response.text
                await timed_logins(user, "bench@example.com", PASSWORD, 3, 200)  # warm-up
                real = await timed_logins(user, "bench@example.com", PASSWORD, logins, 200)

                # Exhaust the attacker's limit on another account, then keep knocking.
                await timed_logins(attacker, "victim@example.com", "guess-1234", 10, 400)
                refused = await timed_logins(
                    attacker, "victim@example.com", "guess-1234", throttled, 429
                )
                # The floor: a /token request refused before any limiter or hash is involved.
                floor = await timed_requests(attacker, {"grant_type": "nonsense"}, throttled, 400)

    real_ms = statistics.median(real) * 1000
    refused_ms = statistics.median(refused) * 1000
    floor_ms = statistics.median(floor) * 1000
    print(f"storage: {'redis ' + redis_url if redis_url else 'in-process memory'}")
    print(
        f"Argon2id: {settings.password_hash_memory_kib} KiB, t={settings.password_hash_time_cost}, p={settings.password_hash_parallelism}"
    )
    print(f"real login     median {real_ms:8.3f} ms over {logins} requests")
    print(f"throttled 429  median {refused_ms:8.3f} ms over {throttled} requests")
    print(f"bad grant 400  median {floor_ms:8.3f} ms over {throttled} requests (request floor)")
    print(f"ratio: a throttled request costs 1/{real_ms / refused_ms:.0f} of a real login")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--throttled", type=int, default=400)
    parser.add_argument("--redis-url", default=None)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.logins, arguments.throttled, arguments.redis_url))
