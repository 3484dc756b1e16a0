"""Where password hashes run: a few low-priority processes (production), or threads (tests).

Both pools take the same calls, `await pool.run(operation, *arguments)` with an operation of
app.password_hasher.PasswordHasher, and keep the same counts (HashAccounting).

Why processes. Argon2 releases the GIL while it computes, but a hashing thread must take the
GIL back to return each result, and CPython hands the GIL over on a timer: measured during a
login storm (tests/bench/storm_probe.py), the event loop then waited on low-priority hashing
threads whichever way they were scheduled (nice 10, nice 19, SCHED_BATCH, SCHED_IDLE), and
`/users/me`'s p99 rose 1.7-1.9 times. A hashing process shares no GIL with the loop, so it can
run at the lowest priority the kernel has: the loop, reading its reply from a pipe like any
socket, is never held up by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.hash_process import READY
from app.metrics import PASSWORD_HASH_QUEUE, PASSWORD_HASH_SECONDS
from app.password_hasher import PasswordHasher

logger = logging.getLogger("passgate.hashing")

# How the hashing processes are scheduled (app/hash_process.py's HASH_PROCESS_POLICIES).
HASH_PROCESS_POLICY = "idle"

# Hashing threads (the thread pool) run at a lower CPU priority than the event loop. Not
# lower: a thread at the lowest priority holds the loop up whenever it needs the GIL back.
HASH_THREAD_NICENESS = 10

# Where the `app` package lies: a hashing process imports it from there, whatever the service's
# own sys.path was (uvicorn's --app-dir, a checkout run without installing).
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)

# What a hashing process runs.
HASH_PROCESS_COMMAND = (sys.executable, "-m", "app.hash_process")

# How long a new hashing process may take to import passlib and say it is ready.
PROCESS_START_SECONDS = 30.0
# How long closing waits for a process to finish the hash in hand before killing it.
PROCESS_STOP_SECONDS = 5.0
# How many processes a request may go through: a process that dies with a hash in hand (the
# OOM killer, a kill by an operator) is replaced and the hash run again, once.
ATTEMPTS = 2
# How many requests each process holds at once: the one it computes and the next, which it
# starts the moment it has replied. With one, it waited after every hash for the event loop to
# read the reply and write the next request: 0.1 to 1 ms a hash during W3, when the loop is
# busy with other requests (measured in the process). A request cancelled once handed over
# still costs its hash: at most one such request per process, as the next one is not sent.
PIPELINE_DEPTH = 2
# A reply is a few hundred bytes; a request holds a password and a stored hash, both bounded
# by the API's limits, far below this.
LINE_LIMIT = 1024 * 1024


class HashingUnavailable(Exception):
    """No hashing process could compute the hash: the request gets a 503, try again later."""


class HashingFailed(Exception):
    """The operation raised in the hashing process (its exception's type is the message)."""


class HashAccounting:
    """What every pool counts: hashes queued (a gauge), running, done, and how long each took."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # thread pools count from their threads
        self.in_progress = 0  # hashes running right now, for tests and diagnostics
        # Hashes started so far: what login traffic has cost this process. Tests read it to
        # show that a throttled attempt costs none.
        self.hashes_computed = 0

    def queued(self) -> None:
        PASSWORD_HASH_QUEUE.inc()

    def dequeued(self) -> None:
        PASSWORD_HASH_QUEUE.dec()

    def started(self) -> None:
        with self._lock:
            self.in_progress += 1
            self.hashes_computed += 1

    def finished(self, seconds: float | None) -> None:
        if seconds is not None:
            PASSWORD_HASH_SECONDS.observe(seconds)
        with self._lock:
            self.in_progress -= 1


def _lower_thread_priority() -> None:
    # On Linux a thread id names one thread for setpriority(); elsewhere this is best effort.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)


class ThreadHashPool:
    """Hashes on threads of this process: no processes to start, for tests' cheap hashes."""

    def __init__(self, hasher: PasswordHasher, size: int, accounting: HashAccounting) -> None:
        self._hasher = hasher
        self._accounting = accounting
        self._executor = ThreadPoolExecutor(
            max_workers=size,
            thread_name_prefix="passgate-hash",
            initializer=_lower_thread_priority,
        )

    async def start(self) -> None:
        pass

    async def run(self, operation: str, *arguments: Any) -> Any:
        # The argon2 binding releases the GIL, so the event loop keeps serving while it runs.
        self._accounting.queued()
        function = getattr(self._hasher, operation)
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._counted, function, arguments
        )

    def _counted(self, function: Callable[..., Any], arguments: tuple[Any, ...]) -> Any:
        self._accounting.dequeued()
        self._accounting.started()
        started = time.perf_counter()
        try:
            return function(*arguments)
        finally:
            self._accounting.finished(time.perf_counter() - started)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class HashProcessDied(Exception):
    """The process exited, or its pipe broke, before it replied."""


class HashProcess:
    """One hashing process and its two pipes.

    Up to PIPELINE_DEPTH requests may be in its stdin at once; it answers them in order, one
    line each, and a task of its own reads the replies and hands each to its caller.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._waiting: deque[asyncio.Future[bytes]] = deque()
        self._died: str | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, parameters: dict[str, Any]) -> HashProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (PACKAGE_ROOT, env.get("PYTHONPATH"))))
        process = await asyncio.create_subprocess_exec(
            *HASH_PROCESS_COMMAND,
            json.dumps(parameters),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=LINE_LIMIT,
        )
        started = cls(process)
        try:
            async with asyncio.timeout(PROCESS_START_SECONDS):
                ready = await process.stdout.readline()  # type: ignore[union-attr]
        except BaseException:
            await started.close()
            raise
        if ready != READY:
            await started.close()
            raise HashingUnavailable(f"hashing process did not start (exit {process.returncode})")
        started._reader = asyncio.create_task(
            started._read_replies(), name=f"passgate-hash-replies-{process.pid}"
        )
        return started

    @property
    def pid(self) -> int:
        return self._process.pid

    async def call(self, operation: str, arguments: tuple[Any, ...]) -> tuple[Any, float]:
        """(result, seconds the hash took); HashingFailed if it raised, HashProcessDied."""
        if self._died is not None:
            raise HashProcessDied(self._died)
        stdin = self._process.stdin
        assert stdin is not None
        # Queued in the order the lines are written: the process answers in that order. A
        # caller cancelled meanwhile cancels its future, and the reader drops its reply.
        reply_line = asyncio.get_running_loop().create_future()
        self._waiting.append(reply_line)
        try:
            stdin.write(json.dumps([operation, arguments]).encode("ascii") + b"\n")
            await stdin.drain()
            line = await reply_line
        except ConnectionError as exc:
            raise HashProcessDied(type(exc).__name__) from None
        finally:
            reply_line.cancel()  # nothing once it is settled; else the reader drops its reply
        reply = json.loads(line)
        if "error" in reply:
            raise HashingFailed(reply["error"])
        return reply["ok"], reply["seconds"]

    async def _read_replies(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        why = "end of output"
        try:
            while True:
                try:
                    line = await stdout.readline()
                except (ConnectionError, ValueError) as exc:  # ValueError: beyond LINE_LIMIT
                    why = type(exc).__name__
                    break
                if not line.endswith(b"\n") or not self._waiting:
                    break
                reply_line = self._waiting.popleft()
                if not reply_line.done():
                    reply_line.set_result(line)
        finally:
            # Whatever the process held when it went is lost: its callers may try elsewhere.
            self._died = why
            while self._waiting:
                reply_line = self._waiting.popleft()
                if not reply_line.done():
                    reply_line.set_exception(HashProcessDied(why))

    async def close(self) -> None:
        """Let the process finish the hashes in hand and exit; kill it if it does not."""
        if self._process.returncode is None and self._process.stdin is not None:
            self._process.stdin.close()
        try:
            async with asyncio.timeout(PROCESS_STOP_SECONDS):
                await self._process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
        if self._reader is not None:
            # Its output has ended with the process; the reader settles what was still waiting.
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@dataclass(eq=False)
class _Job:
    operation: str
    arguments: tuple[Any, ...]
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ProcessHashPool:
    """`size` hashing processes at the lowest CPU priority, fed by the event loop.

    Requests queue here, in the service, holding nothing else; each process has
    PIPELINE_DEPTH tasks, each handing it the next request and waiting for its reply. The loop
    runs no thread for this: a reply arrives on a pipe the loop polls like its sockets.
    """

    def __init__(self, parameters: dict[str, Any], size: int, accounting: HashAccounting) -> None:
        self._parameters = {**parameters, "policy": HASH_PROCESS_POLICY}
        self._size = size
        self._accounting = accounting
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._processes: list[HashProcess | None] = [None] * size
        # One start at a time per slot: both of its tasks may find its process gone at once.
        self._starting = [asyncio.Lock() for _ in range(size)]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every process and wait until each is ready, so a broken install fails here."""
        started = await asyncio.gather(
            *(HashProcess.start(self._parameters) for _ in range(self._size)),
            return_exceptions=True,
        )
        failure = next((item for item in started if isinstance(item, BaseException)), None)
        if failure is not None:
            for item in started:
                if isinstance(item, HashProcess):
                    await item.close()
            raise failure
        self._processes = list(started)  # type: ignore[arg-type]
        self._tasks = [
            asyncio.create_task(self._feed(slot), name=f"passgate-hash-{slot}-{lane}")
            for slot in range(self._size)
            for lane in range(PIPELINE_DEPTH)
        ]

    @property
    def pids(self) -> list[int]:
        """The hashing processes' ids, for tests and diagnostics (one that died stays listed
        until the next hash for its slot replaces it)."""
        return [process.pid for process in self._processes if process is not None]

    async def run(self, operation: str, *arguments: Any) -> Any:
        if not self._tasks:
            raise RuntimeError("the hashing pool has not been started")
        job = _Job(operation, arguments)
        self._accounting.queued()
        self._queue.put_nowait(job)
        return await job.future

    async def _feed(self, slot: int) -> None:
        while True:
            job = await self._queue.get()
            self._accounting.dequeued()
            if job.future.done():  # the request went away while it waited
                continue
            self._accounting.started()
            seconds = None
            try:
                result, seconds = await self._call(slot, job)
            except asyncio.CancelledError:  # the pool is closing under a waiting request
                if not job.future.done():
                    job.future.set_exception(HashingUnavailable())
                raise
            except Exception as exc:
                if not job.future.done():
                    job.future.set_exception(exc)
            else:
                if not job.future.done():
                    job.future.set_result(result)
            finally:
                self._accounting.finished(seconds)

    async def _call(self, slot: int, job: _Job) -> tuple[Any, float]:
        for _ in range(ATTEMPTS):
            process = await self._process_in(slot)
            try:
                return await process.call(job.operation, job.arguments)
            except HashProcessDied as exc:
                if self._processes[slot] is process:  # not yet replaced by the slot's other task
                    # Nothing of the request in the log: it holds a password.
                    logger.warning(
                        "hashing process %s died (%s); starting another", process.pid, exc
                    )
                    self._processes[slot] = None
                    await process.close()
        raise HashingUnavailable

    async def _process_in(self, slot: int) -> HashProcess:
        """The slot's process, started first if it has none (it died, or never started)."""
        async with self._starting[slot]:
            process = self._processes[slot]
            if process is None:
                try:
                    process = self._processes[slot] = await HashProcess.start(self._parameters)
                except (OSError, HashingUnavailable, TimeoutError) as exc:
                    logger.error("hashing process could not start: %s", type(exc).__name__)
                    raise HashingUnavailable from None
            return process

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        while not self._queue.empty():
            job = self._queue.get_nowait()
            self._accounting.dequeued()
            if not job.future.done():
                job.future.set_exception(HashingUnavailable())
        processes, self._processes = self._processes, [None] * self._size
        await asyncio.gather(*(process.close() for process in processes if process is not None))
