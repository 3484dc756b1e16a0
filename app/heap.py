"""Keeps Python's cyclic garbage collector from pausing the event loop for the whole heap.

A started service holds about 150,000 objects that live as long as the process: modules,
classes, FastAPI's routes and dependency graphs, SQLAlchemy's metadata, compiled statements.
CPython 3.11 scans all of them at every collection of its oldest generation, and under load
such a collection comes every second or so: the objects of the requests in flight survive
the young collections, which counts toward the next full one even though reference counting
frees them a moment later. On the benchmark machine each full scan took about 150 ms with
the event loop stopped, seven of them in five seconds of W1: they were W1's p99 (123 ms
against a p50 of 12 ms) and a large part of W5's.

gc.freeze() after start-up moves those objects to a generation the collector never scans, so
a full collection only looks at what was made since; the requests' own objects are still
collected as before. gc.unfreeze() at shutdown hands them back, so an application that is
started and stopped many times in one process (the tests) leaves no uncollectable garbage.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Exempt every object that exists now from later collections.

    No collection first: one would stop the start-up for as long as one of the pauses this
    avoids (150-300 ms), and in every test's start-up too, while start-up leaves only about
    3,000 objects of cyclic garbage behind, a few hundred kilobytes kept until shutdown.
    """
    gc.freeze()


def unfreeze() -> None:
    """Let the collector see the frozen objects again, for a process that outlives the app."""
    gc.unfreeze()
