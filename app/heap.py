"""Keeps Python's cyclic garbage collector from pausing the event loop for the whole heap.

A started service holds about 160,000 objects that live as long as the process: modules,
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

from fastapi import FastAPI, status
from starlette.exceptions import HTTPException
from starlette.types import Message

# A path no route has: see build_routes.
_NO_ROUTE = "/.passgate-start-up/no-such-route"


async def freeze_startup_objects(app: FastAPI) -> None:
    """Build what the first requests would, then exempt every object from later collections.

    No collection first: one would stop the start-up for as long as one of the pauses this
    avoids (150-300 ms), and in every test's start-up too, while start-up leaves only about
    3,000 objects of cyclic garbage behind, a few hundred kilobytes kept until shutdown.
    """
    await build_routes(app)
    gc.freeze()


async def build_routes(app: FastAPI) -> None:
    """Have FastAPI build every route now instead of at the first request that passes it.

    FastAPI builds an included router's routes (their dependency graphs, Pydantic validators
    and serialisers: about 7,000 objects, whose scan costs the collector more than the rest
    of the heap) the first time a request is matched against them. A request for a path that
    no route has is matched against all of them; sent to the router alone, it reaches no
    middleware, no metric and no log, and ends in the router's 404.
    """

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": _NO_ROUTE,
        "raw_path": _NO_ROUTE.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": None,
        "server": None,
        "app": app,
    }
    try:
        await app.router(scope, receive, send)
    except HTTPException as exc:
        if exc.status_code != status.HTTP_404_NOT_FOUND:
            raise


def unfreeze() -> None:
    """Let the collector see the frozen objects again, for a process that outlives the app."""
    gc.unfreeze()
