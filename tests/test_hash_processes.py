"""The production hashing pool: passwords hashed in low-priority processes (app/hash_pools.py).

The rest of the suite hashes on threads (tests/conftest.py), which start at once; these tests
run the service as production does, with PASSWORD_HASH_POOL's default, and check what only
processes can get wrong: the pipe protocol, a process that dies, start-up and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import bcrypt
import httpx
import pytest
from asgi_lifespan import LifespanManager

from app import hash_pools
from app.config import Settings, usable_cores
from app.main import create_app
from app.security import Passwords
from tests.conftest import DEFAULT_PASSWORD, login, new_user, signup, test_settings
from tests.processes import free_port, service_environment, start_serve
from tests.test_import_users import PASSWORD, WRONG, run_import, stored_hash, write_lines
from tests.test_recovery import service


def process_settings(database_url: str, **overrides: Any) -> Settings:
    return test_settings(database_url=database_url, password_hash_pool="processes", **overrides)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): read its state.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


async def wait_until_hashing(passwords: Passwords, task: asyncio.Task[Any]) -> None:
    while passwords.in_progress == 0 and not task.done():  # noqa: ASYNC110 - polls a counter
        await asyncio.sleep(0.001)
    assert not task.done(), "the request finished before its hash was seen running"


async def test_signup_and_login_hash_in_processes_of_their_own(database_url):
    async with service(process_settings(database_url)) as (app, client):
        passwords = app.state.passwords
        pids = passwords.pool.pids
        assert len(pids) == 2  # PASSWORD_HASH_THREADS in test_settings
        assert os.getpid() not in pids
        user = await new_user(client)
        assert user["access_token"]
        wrong = await login(client, user["email"], "not the password")
        unknown = await login(client, "nobody@example.com")
        assert (wrong.status_code, unknown.status_code) == (400, 400)
        assert wrong.json() == unknown.json()
        # Signup's hash, the login's verify, the wrong password's and the unknown email's.
        assert passwords.hashes_computed == 4
        assert passwords.pool.pids == pids  # the same processes served every request


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
async def test_hashing_processes_run_at_the_lowest_cpu_priority(database_url):
    async with service(process_settings(database_url)) as (app, _):
        for pid in app.state.passwords.pool.pids:
            assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the event loop's is left alone


async def test_stopping_the_service_stops_its_hashing_processes(database_url):
    async with service(process_settings(database_url)) as (app, client):
        await new_user(client)
        pids = app.state.passwords.pool.pids
        assert all(alive(pid) for pid in pids)
    assert not any(alive(pid) for pid in pids)


async def test_a_process_killed_during_a_login_is_replaced_and_the_login_succeeds(database_url):
    # A slow hash, so that the process can be killed while it computes; one process, so
    # that it is the one computing.
    settings = process_settings(
        database_url,
        password_hash_memory_kib=65_536,
        password_hash_time_cost=3,
        password_hash_threads=1,
    )
    async with service(settings) as (app, client):
        passwords = app.state.passwords
        user = await new_user(client)
        [before] = passwords.pool.pids
        logging_in = asyncio.create_task(login(client, user["email"]))
        await wait_until_hashing(passwords, logging_in)
        os.kill(before, signal.SIGKILL)
        response = await logging_in
        assert response.status_code == 200, response.text
        [after] = passwords.pool.pids
        assert after != before
        # One killed while idle is replaced by the next request that needs it.
        os.kill(after, signal.SIGKILL)
        assert (await login(client, user["email"])).status_code == 200
        assert (await login(client, user["email"], "not the password")).status_code == 400


async def test_without_a_hashing_process_a_login_is_a_503_and_nothing_changes(
    database_url, monkeypatch
):
    async with service(process_settings(database_url)) as (app, client):
        user = await new_user(client)
        before = await stored_hash(app, user["email"])
        # Processes can no longer start (as on a host out of memory or of process slots).
        monkeypatch.setattr(
            hash_pools, "HASH_PROCESS_COMMAND", (sys.executable, "-c", "raise SystemExit(3)")
        )
        for pid in app.state.passwords.pool.pids:
            os.kill(pid, signal.SIGKILL)
        response = await login(client, user["email"])
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert response.json() == {"detail": "Service temporarily unavailable"}
        assert await stored_hash(app, user["email"]) == before
        taken = await signup(client, email=user["email"])
        assert taken.status_code in (409, 503)

        monkeypatch.undo()  # the host recovers: the next request starts a process again
        assert (await login(client, user["email"])).status_code == 200


async def test_a_service_whose_hashing_processes_cannot_start_fails_to_start(
    database_url, monkeypatch
):
    monkeypatch.setattr(
        hash_pools, "HASH_PROCESS_COMMAND", (sys.executable, "-c", "raise SystemExit(3)")
    )
    app = create_app(process_settings(database_url))
    with pytest.raises(hash_pools.HashingUnavailable):
        async with LifespanManager(app):
            pass


async def test_an_imported_hash_is_verified_in_a_process_and_pads_failures(database_url, tmp_path):
    settings = process_settings(database_url)
    path = write_lines(
        tmp_path / "users.jsonl",
        [
            {
                "email": "ada@example.com",
                "name": "Ada",
                "password_hash": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode(),
            }
        ],
    )
    await run_import(settings, path)
    async with service(settings) as (app, client):
        padding = app.state.passwords.padding
        # Before any imported hash was verified, a failure waits the whole ceiling.
        assert padding.seconds() == settings.imported_hash_padding_max_seconds
        assert (await login(client, "ada@example.com", WRONG)).status_code == 400
        # The process sent back how long bcrypt took: the wait is now that, not the ceiling.
        assert 0 < padding.seconds() < settings.imported_hash_padding_max_seconds
        assert (await login(client, "ada@example.com", PASSWORD)).status_code == 200
        assert (await stored_hash(app, "ada@example.com")).startswith("$argon2id$")


@contextlib.asynccontextmanager
async def one_hashing_process(memory_kib: int, time_cost: int) -> AsyncIterator[Passwords]:
    """Passwords on a pool of one hashing process, started, and closed afterwards."""
    passwords = Passwords(memory_kib=memory_kib, time_cost=time_cost, parallelism=1, threads=1)
    await passwords.start()
    try:
        yield passwords
    finally:
        await passwords.close()


async def test_any_text_crosses_to_a_hashing_process_exactly():
    async with one_hashing_process(1024, 1) as passwords:
        # Newlines, a NUL, quotes and text beyond the BMP: the pipe carries JSON lines.
        for password in ('a"b\n\0 mot de passe\\', "パスワード 🔑 pass\r\nword\u2028"):
            stored = await passwords.hash(password)
            assert await passwords.verify(password, stored)
            assert not await passwords.verify(password + "x", stored)


async def wait_until_in_hand(passwords: Passwords, count: int) -> None:
    """Until `count` requests have been handed to the hashing processes."""
    async with asyncio.timeout(30):
        while passwords.in_progress < count:  # noqa: ASYNC110 - polls a counter
            await asyncio.sleep(0.001)


async def test_a_request_cancelled_while_queued_costs_no_hash():
    async with one_hashing_process(65_536, 3) as passwords:
        # The process holds two: the one it computes and the next (PIPELINE_DEPTH).
        held = [asyncio.create_task(passwords.hash(f"held password {n}")) for n in range(2)]
        await wait_until_in_hand(passwords, hash_pools.PIPELINE_DEPTH)
        queued = asyncio.create_task(passwords.hash("queued password"))
        await asyncio.sleep(0.01)
        assert not queued.done()
        queued.cancel()
        await asyncio.gather(*held)
        last = await passwords.hash("last password")
        assert last.startswith("$argon2id$")
        assert passwords.hashes_computed == 3  # the cancelled one never reached a process


async def test_a_process_holds_the_next_request_and_answers_each_caller_its_own():
    async with one_hashing_process(8_192, 1) as passwords:
        [pid] = passwords.pool.pids
        texts = [f"password number {n}" for n in range(12)]
        hashes = await asyncio.gather(*(passwords.hash(text) for text in texts))
        verdicts = await asyncio.gather(
            *(passwords.verify(text, stored) for text, stored in zip(texts, hashes, strict=True)),
            *(
                passwords.verify(text, stored)
                for text, stored in zip(texts, hashes[1:], strict=False)
            ),
        )
        assert verdicts == [True] * 12 + [False] * 11
        assert passwords.pool.pids == [pid]


async def test_a_process_killed_with_two_requests_in_hand_is_replaced_and_both_succeed():
    async with one_hashing_process(65_536, 3) as passwords:
        [before] = passwords.pool.pids
        held = [asyncio.create_task(passwords.hash(f"held password {n}")) for n in range(2)]
        await wait_until_in_hand(passwords, 2)
        os.kill(before, signal.SIGKILL)
        hashed = await asyncio.gather(*held)
        assert all(value.startswith("$argon2id$") for value in hashed)
        [after] = passwords.pool.pids
        assert after != before
        assert not alive(before)


def hash_processes_under(root: int) -> list[int]:
    """The hashing processes among `root`'s descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:  # gone meanwhile
                continue

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root:
                return True
        return False

    found = []
    for pid in parents:
        if descends(pid):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"app.hash_process" in cmdline.read():
                    found.append(pid)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts processes from /proc")
@pytest.mark.parametrize("explicit", [None, 2], ids=["default", "PASSWORD_HASH_THREADS=2"])
def test_serve_with_workers_gives_each_its_share_of_the_cores_and_stops_them_all(
    tmp_path, explicit
):
    env = service_environment(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'passgate.db'}",
        SECRET_KEY="hash-processes-test-secret-long-enough-for-hs256",
    )
    # Unset, the cores are shared out between the workers; a value set is each worker's.
    del env["PASSWORD_HASH_THREADS"]
    if explicit is not None:
        env["PASSWORD_HASH_THREADS"] = str(explicit)
    env.pop("PASSWORD_HASH_POOL", None)
    workers = 2
    per_worker = explicit or max(1, usable_cores() // workers)
    service = start_serve(env, tmp_path, port=free_port(), workers=workers)
    try:
        deadline = time.monotonic() + 60
        while service.log.read_text().count("Application startup complete") < workers:
            assert time.monotonic() < deadline, service.output()
            time.sleep(0.1)
        found = hash_processes_under(service.process.pid)
        assert len(found) == workers * per_worker, found
        with httpx.Client(base_url=service.url, timeout=10, trust_env=False) as http:
            assert (
                http.post(
                    "/signup",
                    json={"name": "Ada", "email": "ada@example.com", "password": DEFAULT_PASSWORD},
                ).status_code
                == 201
            )
    finally:
        service.process.send_signal(signal.SIGTERM)
        service.process.wait(timeout=60)
    assert not any(alive(pid) for pid in found)
