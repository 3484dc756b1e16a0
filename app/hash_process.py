"""The program each hashing process runs: `python -m app.hash_process '<parameters>'`.

The service's event loop (app/hash_pools.py) writes one request per line to this process's
stdin, a JSON array `[operation, arguments]`, and reads one reply per line from its stdout:
`{"ok": result, "seconds": s}` or `{"error": "ExceptionType"}`. One request at a time, so a
process is one hash's worth of CPU and memory. It reads nothing else and writes nothing
else: JSON carries a password's text exactly, newlines included, and nothing in a reply is
executed.

The process lowers its own CPU priority before it hashes (see HASH_PROCESS_POLICIES), and
exits when stdin closes: the service stopped, or died and took the pipe's other end with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

from app.password_hasher import OPERATIONS, PasswordHasher

# How a hashing process asks the kernel to schedule it, by the name the pool passes. "idle"
# is SCHED_IDLE: it runs only on a core nothing else wants, and any runnable normal task
# (the event loop woken by a request) preempts it at once. "nice19" is the lowest ordinary
# priority, for kernels without SCHED_IDLE.
HASH_PROCESS_POLICIES = ("idle", "nice19", "normal")

READY = b'"ready"\n'


def lower_priority(policy: str) -> None:
    with contextlib.suppress(OSError, AttributeError):
        if policy == "idle":
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        elif policy == "nice19":
            os.setpriority(os.PRIO_PROCESS, 0, 19)


def serve(hasher: PasswordHasher, requests: Any, replies: Any) -> None:
    for line in requests:
        operation, arguments = json.loads(line)
        started = time.perf_counter()
        try:
            if operation not in OPERATIONS:
                raise ValueError("unknown operation")
            result = getattr(hasher, operation)(*arguments)
            reply = {"ok": result, "seconds": time.perf_counter() - started}
        except Exception as exc:
            reply = {"error": type(exc).__name__}
        replies.write(json.dumps(reply).encode("ascii") + b"\n")


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the service decides when its
    # hashing processes stop (by closing their stdin), so they finish the hash in hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parameters = json.loads(sys.argv[1])
    lower_priority(parameters.pop("policy"))
    hasher = PasswordHasher(**parameters)
    # Replies get a descriptor of their own, and stdout becomes stderr, so that anything a
    # library prints cannot be read as a reply.
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    # A service that died leaves a closed pipe behind: nothing is left to answer.
    with contextlib.suppress(BrokenPipeError):
        replies.write(READY)
        serve(hasher, sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
