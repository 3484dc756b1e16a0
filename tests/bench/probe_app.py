"""The service with instruments: event-loop lag, GC pauses, per-thread CPU (diagnostics only).

    uvicorn tests.bench.probe_app:app   (PROBE_OUT=/path/to/file.json)

SIGUSR1 writes what was measured since the last signal to PROBE_OUT and starts afresh, so a
driver can bracket one wrk run.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import threading
import time
from typing import Any

from app import hash_pools
from app.hash_process import HASH_PROCESS_POLICIES
from app.main import app as service

# PROBE_HASH_POLICY: how hashing processes or threads are scheduled, to compare (default: the
# service's): one of HASH_PROCESS_POLICIES for processes (PASSWORD_HASH_POOL=processes), or
# idle, niceN or batch for threads.
_policy = os.environ.get("PROBE_HASH_POLICY", "")
_processes = os.environ.get("PASSWORD_HASH_POOL", "processes") == "processes"


def _probe_hash_priority() -> None:
    tid = threading.get_native_id()
    if _policy == "idle":
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    elif _policy.startswith("nice"):
        os.setpriority(os.PRIO_PROCESS, tid, int(_policy.removeprefix("nice")))
    elif _policy == "batch":
        os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, tid, 19)


if _policy and _processes:
    if _policy not in HASH_PROCESS_POLICIES:
        raise SystemExit(f"PROBE_HASH_POLICY for processes: one of {HASH_PROCESS_POLICIES}")
    hash_pools.HASH_PROCESS_POLICY = _policy
elif _policy:
    hash_pools._lower_thread_priority = _probe_hash_priority

LAG_TICK = 0.002


class Probe:
    def __init__(self) -> None:
        self.reset()
        gc.callbacks.append(self._gc)
        self._gc_started = 0.0

    def reset(self) -> None:
        self.lags: list[float] = []
        self.gc: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.gc_collected = {0: 0, 1: 0, 2: 0}
        self.started = time.monotonic()
        self.cpu = thread_cpu()

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            generation = info["generation"]
            self.gc[generation].append(time.perf_counter() - self._gc_started)
            self.gc_collected[generation] += info["collected"]

    async def watch_loop(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(LAG_TICK)
            self.lags.append(time.perf_counter() - before - LAG_TICK)

    def dump(self) -> None:
        seconds = time.monotonic() - self.started
        now_cpu = thread_cpu()
        zero = (0.0, 0.0, 0, 0)
        cpu = {
            name: [
                round(now - then, 3)
                for now, then in zip(now_cpu[name], self.cpu.get(name, zero), strict=True)
            ]
            for name in now_cpu
        }
        lags = sorted(self.lags)

        def q(values: list[float], p: float) -> float:
            return (
                round(values[min(len(values) - 1, int(len(values) * p))] * 1000, 2)
                if values
                else 0.0
            )

        report = {
            "seconds": round(seconds, 2),
            "lag_ms": {
                "n": len(lags),
                "p50": q(lags, 0.5),
                "p99": q(lags, 0.99),
                "p999": q(lags, 0.999),
                "max": q(lags, 1.0),
                "over_10ms": sum(1 for lag in lags if lag > 0.010),
                "over_30ms": sum(1 for lag in lags if lag > 0.030),
                "top": [round(lag * 1000, 1) for lag in lags[-10:]],
            },
            "gc": {
                str(g): {
                    "n": len(pauses),
                    "total_ms": round(sum(pauses) * 1000, 1),
                    "max_ms": round(max(pauses, default=0) * 1000, 2),
                    "collected": self.gc_collected[g],
                }
                for g, pauses in self.gc.items()
            },
            "gc_counts": gc.get_count(),
            "objects": len(gc.get_objects()) if os.environ.get("PROBE_OBJECTS") else None,
            "thread_cpu_s": cpu,
        }
        path = os.environ.get("PROBE_OUT")
        if path:
            with open(path, "a") as out:
                out.write(json.dumps(report) + "\n")
        self.reset()


def thread_cpu() -> dict[str, tuple[float, float, int, int]]:
    """Per thread of this process, by name: (CPU s, run-queue wait s, voluntary and
    involuntary context switches), from /proc's schedstat and status."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tasks = {f"/proc/self/task/{tid}": tid for tid in os.listdir("/proc/self/task")}
    # The hashing processes too (PASSWORD_HASH_POOL=processes), one thread each.
    pool = getattr(getattr(service.state, "passwords", None), "pool", None)
    for pid in getattr(pool, "pids", []):
        tasks[f"/proc/{pid}"] = str(pid)
        names[pid] = "hash-process"
    cpu: dict[str, tuple[float, float, int, int]] = {}
    for path, tid in tasks.items():
        try:
            with open(f"{path}/schedstat") as stat:
                on_cpu, waiting, _ = (int(field) for field in stat.read().split())
            with open(f"{path}/status") as status:
                fields = dict(line.split(":", 1) for line in status.read().splitlines())
            with open(f"{path}/comm") as comm:
                fallback = comm.read().strip()
        except OSError:
            continue
        name = f"{names.get(int(tid), fallback)}:{tid}"
        cpu[name] = (
            on_cpu / 1e9,
            waiting / 1e9,
            int(fields["voluntary_ctxt_switches"]),
            int(fields["nonvoluntary_ctxt_switches"]),
        )
    return cpu


probe = Probe()


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":

        async def receive_wrapped() -> Any:
            message = await receive()
            if message["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGUSR1, probe.dump)
                probe.task = asyncio.ensure_future(probe.watch_loop())  # type: ignore[attr-defined]
            return message

        await service(scope, receive_wrapped, send)
        return
    await service(scope, receive, send)
