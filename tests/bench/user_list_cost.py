"""What a page of GET /users costs the server: today's route against the ORM route it replaced.

    .venv/bin/python -m tests.bench.user_list_cost [users] [requests per round] [rounds]

One app, one SQLite database of a few thousand users. Beside the real GET /users the app gets
the route as it was before issue 16 (the page through the ORM session, a UserOut validated per
row, FastAPI serialising the UserPage), at /bench/orm-users. Both are called through the whole
ASGI stack directly (no sockets, no HTTP client, so no load generator shares the cores), the
first page and a page deep in the list, in interleaved rounds so a busy neighbour weighs on
both alike. Prints the median CPU per request (time.process_time: the event loop and the
database threads together) and wall time, and the ratio, with the access log off. Both bodies are checked equal first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Query
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import SessionDep
from app.deps import CurrentUser
from app.main import create_app
from app.migrate import upgrade_to_head
from app.models import User, uuid7
from app.routers.users import decode_cursor, encode_cursor
from app.schemas import UserOut, UserPage
from tests.bench.asgi_driver import Headers, bearer_headers, call, cost_per_request_us


async def orm_list_users(
    _: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> UserPage:
    """GET /users as it was before issue 16 (commit 5c67f8e), for comparison."""
    after = decode_cursor(cursor) if cursor is not None else None
    query = select(User).order_by(User.id).limit(limit + 1)
    if after is not None:
        query = query.where(User.id > after)
    users = (await session.scalars(query)).all()
    await session.commit()
    next_after = users[limit - 1].id if len(users) > limit else None
    return UserPage(
        users=[UserOut.model_validate(user) for user in users[:limit]],
        next_cursor=encode_cursor(next_after) if next_after else None,
    )


async def cost(
    app: FastAPI, path: str, query: bytes, headers: Headers, count: int
) -> tuple[float, float]:
    """CPU and wall microseconds per request, one at a time."""
    return await cost_per_request_us(app, path, headers, count, query=query)


async def seed(url: str, users: int) -> list[Any]:
    """`users` accounts with names and addresses of varied length, a millisecond apart."""
    engine = create_async_engine(url)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    rows = []
    for index in range(users):
        at = start + dt.timedelta(milliseconds=index, microseconds=index % 1000)
        email = f"user-{index:05d}-{'x' * (index % 17)}@example.com"
        rows.append(
            {
                "id": uuid7(at, sequence=0),
                "name": f"Bench Usér {index} {'ñ' * (index % 11)}",
                "email": email,
                "email_normalized": email,
                "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$bench$bench",
                "is_active": True,
                "is_admin": index % 50 == 0,
                "created_at": at,
                "email_verified": index % 2 == 0,
            }
        )
    async with engine.begin() as connection:
        await connection.execute(insert(User), rows)
    await engine.dispose()
    return [row["id"] for row in rows]


async def main(users: int, count: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="passgate-user-list-bench-"))
    url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    await upgrade_to_head(url)
    ids = await seed(url, users)
    from tests.conftest import test_settings

    app = create_app(test_settings(database_url=url, audit_log="off"))
    app.add_api_route("/bench/orm-users", orm_list_users, methods=["GET"], response_model=UserPage)
    async with LifespanManager(app):
        headers = await bearer_headers(app)
        # The access log line costs both routes alike; left out, the difference stands clearer.
        logging.disable(logging.INFO)
        pages = {
            "first page": b"",
            f"page {int(users * 0.9) // 50}": f"cursor={encode_cursor(ids[int(users * 0.9)])}".encode(),
        }
        routes = {"before (ORM + UserOut)": "/bench/orm-users", "now (prepared + rows)": "/users"}
        for page, query in pages.items():
            bodies = set()
            for path in routes.values():  # warm up (compiled SQL, caches) and check the bodies
                status, body = await call(app, path, headers, query)
                assert status == 200, body
                bodies.add(body)
                await cost(app, path, query, headers, count // 5)
            assert len(bodies) == 1, "the two routes' bodies differ"
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in routes}
            for _ in range(rounds):
                for name, path in routes.items():
                    results[name].append(await cost(app, path, query, headers, count))
            medians = {
                name: (
                    statistics.median(cpu for cpu, _ in runs),
                    statistics.median(wall for _, wall in runs),
                )
                for name, runs in results.items()
            }
            for name, (cpu, wall) in medians.items():
                spread = [cpu for cpu, _ in results[name]]
                print(
                    f"{page:>10}, {name}: {cpu / 1000:.2f} ms CPU/request "
                    f"(rounds {min(spread) / 1000:.2f}-{max(spread) / 1000:.2f}), "
                    f"{wall / 1000:.2f} ms wall"
                )
            before, now = (cpu for cpu, _ in medians.values())
            print(f"{page:>10}: CPU before / now = {before / now:.2f}")
        # The floor under both: the ASGI stack and the bearer check, with no page to read.
        floor = statistics.median(
            [(await cost(app, "/users/me", b"", headers, count))[0] for _ in range(rounds)]
        )
        print(f"GET /users/me (the floor: stack + bearer check): {floor / 1000:.2f} ms CPU/request")


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:]]
    asyncio.run(main(*(arguments + [3000, 300, 7][len(arguments) :])))
