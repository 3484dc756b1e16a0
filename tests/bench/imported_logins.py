"""What a login costs against an imported hash of each format, next to a native Argon2id one.

Runs the app in-process (httpx over ASGITransport) on a temporary SQLite database with the
production Argon2 settings. Each timed login against an imported hash is a first login: the old
hash is verified and replaced by Argon2id in the same request, so the row is set back to the old
hash before every try. Prints medians in milliseconds:

    .venv/bin/python -m tests.bench.imported_logins [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import argon2
import bcrypt
import httpx
from asgi_lifespan import LifespanManager
from passlib.hash import pbkdf2_sha256
from sqlalchemy import update
from werkzeug.security import generate_password_hash

from app.config import Settings
from app.main import create_app
from app.models import User
from app.services import imports

PASSWORD = "correct-horse-battery-staple"


def django(iterations: int) -> str:
    salt = "abcdefghijklmnopqrstuv"
    digest = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


FORMATS: dict[str, Callable[[], str]] = {
    "werkzeug scrypt:32768:8:1 (2.3-3.1 default)": lambda: generate_password_hash(PASSWORD),
    "werkzeug pbkdf2:sha256:150000 (0.15-1.0)": lambda: generate_password_hash(
        PASSWORD, method="pbkdf2:sha256:150000"
    ),
    "werkzeug pbkdf2:sha256:600000 (2.3-3.0)": lambda: generate_password_hash(
        PASSWORD, method="pbkdf2:sha256:600000"
    ),
    "werkzeug pbkdf2:sha256:1000000 (3.1)": lambda: generate_password_hash(
        PASSWORD, method="pbkdf2"
    ),
    "bcrypt cost 12": lambda: bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode(),
    "argon2-cffi defaults (64 MiB, t=3, p=4)": lambda: argon2.PasswordHasher().hash(PASSWORD),
    "django pbkdf2_sha256 870000 (5.1)": lambda: django(870_000),
    "passlib pbkdf2_sha256 100000": lambda: pbkdf2_sha256.using(rounds=100_000).hash(PASSWORD),
}


async def timed_login(client: httpx.AsyncClient, email: str, password: str, expect: int) -> float:
    start = time.perf_counter()
    response = await client.post(
        "/token", data={"grant_type": "password", "username": email, "password": password}
    )
    elapsed = time.perf_counter() - start
    assert response.status_code == expect, response.text
    return elapsed


async def measure(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]  # pydantic-settings init kwarg
            environment="test",
            secret_key="bench-secret-key-that-is-long-enough-for-hs256!",
            database_url=f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}",
            login_rate_limit="100000/minute",
        )
        app = create_app(settings)
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                hashes = {name: make() for name, make in FORMATS.items()}
                rows = [
                    imports.SourceRow(
                        f"bench {i}",
                        {"email": f"user{i}@example.com", "name": name, "password_hash": value},
                    )
                    for i, (name, value) in enumerate(hashes.items())
                ]
                # An account whose bcrypt hash stays: only wrong passwords are tried on it.
                kept = {
                    "email": "kept@example.com",
                    "name": "Kept",
                    "password_hash": hashes["bcrypt cost 12"],
                }
                rows.append(imports.SourceRow("bench kept", kept))
                report = await imports.import_users(
                    app.state.transactions,
                    rows,
                    dry_run=False,
                    max_argon2_memory_kib=settings.password_hash_memory_kib,
                    max_argon2_time_cost=settings.password_hash_time_cost,
                    emit=print,
                )
                assert report.created == len(rows), report.lines
                signup = {"name": "Native", "email": "native@example.com", "password": PASSWORD}
                assert (await client.post("/signup", json=signup)).status_code == 201

                results: dict[str, float] = {}
                native = [
                    await timed_login(client, "native@example.com", PASSWORD, 200)
                    for _ in range(rounds)
                ]
                results["native Argon2id (configured)"] = statistics.median(native)
                for i, (name, value) in enumerate(hashes.items()):
                    email = f"user{i}@example.com"
                    durations = []
                    for _ in range(rounds):
                        async with app.state.sessionmaker() as session:
                            await session.execute(
                                update(User).where(User.email == email).values(password_hash=value)
                            )
                            await session.commit()
                        durations.append(await timed_login(client, email, PASSWORD, 200))
                    results[f"{name}, first login"] = statistics.median(durations)
                # Failures after the imported logins above: every one waits for the slowest
                # recent imported verification, whichever account (or none) it names.
                wrong = {
                    "wrong password, imported bcrypt account": "kept@example.com",
                    "wrong password, native account": "native@example.com",
                    "wrong password, unknown email": "nobody@example.com",
                }
                for label, email in wrong.items():
                    durations = [
                        await timed_login(client, email, "wrong-password!", 400)
                        for _ in range(rounds)
                    ]
                    results[label] = statistics.median(durations)
    base = results["native Argon2id (configured)"]
    width = max(len(name) for name in results)
    print(f"{'login':<{width}}  median ms  x native")
    for name, seconds in results.items():
        print(f"{name:<{width}}  {seconds * 1000:9.1f}  {seconds / base:8.2f}")


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    asyncio.run(measure(args.rounds))


if __name__ == "__main__":
    main()
