"""The service with each Python thread's name given to the kernel too (Linux, prctl).

Python 3.11 names its threads only for itself: /proc/<pid>/task/*/comm says "python" for all of
them. Serving `tests.bench.named_threads:app` instead of `app.main:app` makes each thread's
name (passgate-db-write, passgate-hash_0, asyncio_0...) visible per thread, so its CPU can be
read from /proc by `tests.bench.signup_cost`.
"""

from __future__ import annotations

import ctypes
import threading

_PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)
_bootstrap_inner = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def _named_bootstrap_inner(self: threading.Thread) -> None:
    _libc.prctl(_PR_SET_NAME, self.name.encode()[:15], 0, 0, 0)
    _bootstrap_inner(self)


threading.Thread._bootstrap_inner = _named_bootstrap_inner  # type: ignore[attr-defined]
_libc.prctl(_PR_SET_NAME, b"event-loop", 0, 0, 0)

from app.main import app  # noqa: E402 - after the patch, so that every thread is named

__all__ = ["app"]
