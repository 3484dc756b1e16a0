"""The bearer check's query: the code every authenticated request runs.

Revocation is checked in the database on every request (a logout, password change or
deactivation is seen by the very next request, in any process), so this query's cost is the
floor of every protected endpoint. Through an AsyncSession on aiosqlite it cost five hops to
the connection's thread and about a millisecond of CPU (measured with `make bench` and
py-spy); as a prepared statement on app.transactions' reading connection it was one hop, and
as a point read on SQLite (Transactions.point_read_row) it makes none: it runs on the event
loop. On PostgreSQL the same call is one asyncpg fetch, with no greenlet around it.
"""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, select

from app.models import USER_COLUMNS, Account, TokenFamily, User
from app.transactions import Prepared, Transactions

# The active user behind a user id and login (family) id, if that login was not ended.
TOKEN_USER = Prepared(
    select(*USER_COLUMNS)
    .join(TokenFamily, TokenFamily.user_id == User.id)
    .where(
        User.id == bindparam("user_id"),
        User.is_active.is_(True),
        TokenFamily.id == bindparam("family_id"),
        TokenFamily.revoked_at.is_(None),
    ),
    row_type=Account,
)


class TokenUserLookup:
    """Finds the active user behind a verified access token whose login still stands."""

    def __init__(self, db: Transactions) -> None:
        self._db = db

    async def find(self, *, user_id: uuid.UUID, family_id: uuid.UUID) -> Account | None:
        account: Account | None = await self._db.point_read_row(
            TOKEN_USER, {"user_id": user_id, "family_id": family_id}
        )
        return account
