"""CPU pinning for `make bench` on PostgreSQL: the database server on a core of its own.

In production PostgreSQL has its own host; on this machine it shares the cores with the service,
the reference apps and wrk, so its backends and the service's event loop take turns on the same
run queue and the figures say more about the scheduler than about either. The benchmark pins
the PostgreSQL server to one core with `taskset` and itself (and so every process it starts:
the service, the reference apps, wrk) to the others.

The server is shared with everyone else's tests, so the affinity it had is put back when the
benchmark ends, however it ends (return, exception, Ctrl+C, SIGTERM or SIGHUP). The postmaster
and all its current processes are pinned; backends forked later inherit the postmaster's
affinity, and at the end every child of the postmaster, new ones included, gets back the
affinity it (or, for new ones, the postmaster) had. Only a server on this host can be pinned:
the backend's process id must be one of this machine's postgres processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

PROC = Path("/proc")


@dataclass
class Pinning:
    """What the benchmark did to the CPU affinities, for the results and the log."""

    method: str  # "taskset", or "none" with the reason in `description`
    description: str
    database_cores: list[int] = field(default_factory=list)
    service_cores: list[int] = field(default_factory=list)
    postmaster_pid: int | None = None
    pinned_processes: int = 0


def _parent_pid(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces; the fields after it are plain.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _command_name(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def _children(parent: int) -> list[int]:
    return [
        int(entry.name)
        for entry in PROC.iterdir()
        if entry.name.isdigit() and _parent_pid(int(entry.name)) == parent
    ]


def _cores_text(cores: set[int] | list[int]) -> str:
    return ",".join(str(core) for core in sorted(cores))


def _taskset(pid: int, cores: set[int] | list[int]) -> bool:
    """Set the affinity of every thread of `pid`; False if the process is gone or refused."""
    result = subprocess.run(
        ["taskset", "--all-tasks", "--pid", "--cpu-list", _cores_text(cores), str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


def _affinity(pid: int) -> set[int] | None:
    try:
        return os.sched_getaffinity(pid)
    except OSError:
        return None


async def _postmaster_of_backend(server_url: str) -> int | None:
    engine = create_async_engine(server_url)
    try:
        async with engine.connect() as connection:
            backend = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            # Looked up while the connection is open: the backend exits when it closes.
            if _command_name(backend) != "postgres":
                return None  # another host, a container with its own process ids...
            postmaster = _parent_pid(backend)
    finally:
        await engine.dispose()
    if postmaster is None or _command_name(postmaster) != "postgres":
        return None
    return postmaster


def find_postmaster(server_url: str) -> int | None:
    """The PostgreSQL server's postmaster on this host: the parent of our backend; else None."""
    return asyncio.run(_postmaster_of_backend(server_url))


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run as an exception does, so that `finally` blocks restore."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def pinned(server_url: str | None, say: Callable[[str], None] = print) -> Iterator[Pinning]:
    """PostgreSQL on the first core this process may use, this process on the rest; restored."""
    own = sorted(os.sched_getaffinity(0))
    if server_url is None:
        yield Pinning("none", "none (SQLite runs in the service's process)")
        return
    if len(own) < 2:
        yield Pinning("none", f"none: this process may use only core {_cores_text(own)}")
        return
    postmaster = find_postmaster(server_url)
    if postmaster is None:
        yield Pinning("none", "none: the PostgreSQL server is not a process on this host")
        return
    database_cores, service_cores = own[:1], own[1:]
    postmaster_affinity = _affinity(postmaster) or set(own)
    saved: dict[int, set[int]] = {}
    own_affinity = set(own)
    with _signals_raise():
        try:
            # The postmaster first: whatever it forks from then on is born pinned.
            if not _taskset(postmaster, database_cores):
                raise RuntimeError(f"could not pin the postmaster (pid {postmaster}) with taskset")
            saved[postmaster] = postmaster_affinity
            for pid in _children(postmaster):
                affinity = _affinity(pid)
                if affinity is not None and _taskset(pid, database_cores):
                    saved[pid] = affinity
            if not _taskset(os.getpid(), service_cores):
                raise RuntimeError("could not pin the benchmark itself with taskset")
            pinning = Pinning(
                "taskset",
                f"taskset: PostgreSQL (postmaster {postmaster} and its {len(saved) - 1} "
                f"processes) on core {_cores_text(database_cores)}; the service, the reference "
                f"apps and wrk on core {_cores_text(service_cores)}",
                database_cores=database_cores,
                service_cores=service_cores,
                postmaster_pid=postmaster,
                pinned_processes=len(saved),
            )
            say(pinning.description)
            yield pinning
        finally:
            _taskset(os.getpid(), own_affinity)
            _taskset(postmaster, saved.get(postmaster, postmaster_affinity))
            # Backends forked while pinned inherited the pinned affinity: they get the
            # postmaster's original one, the others their own.
            for pid in set(_children(postmaster)) | (saved.keys() - {postmaster}):
                _taskset(pid, saved.get(pid, postmaster_affinity))
            say(f"CPU affinity restored: PostgreSQL {_cores_text(postmaster_affinity)}")
