"""Deleting an account never deadlocks with the writers it races (app/services/users.py).

On PostgreSQL, two transactions that lock the same rows in opposite orders deadlock, and the
server ends one of them: the deletion's request failed with a 500 in CI while the mail sender
was minting the token of the user's verification mail. These tests hold the other writer's
first lock in a transaction of their own, start the deletion, and then take the writer's
second lock, with the statements the service runs: the deletion must wait for the writer,
never take a lock the writer needs next, and succeed once the writer commits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from sqlalchemy import text

from app.db import utcnow
from app.services import mail
from app.transactions import _CoreStatements
from tests.conftest import bearer, new_user

pytestmark = pytest.mark.usefixtures("pg_only")

# Long enough for the deletion to reach the lock it waits on; PostgreSQL's deadlock_timeout
# is 1 s, so a deadlock shows as an error once the writer takes its second lock.
WAIT_FOR_THE_DELETION = 0.5


async def deletion_waits(client, user) -> asyncio.Task:
    deletion = asyncio.create_task(client.delete("/users/me", headers=bearer(user["access_token"])))
    await asyncio.sleep(WAIT_FOR_THE_DELETION)
    assert not deletion.done(), "the deletion must wait for the writer's lock"
    return deletion


async def user_rows(app, user_id: uuid.UUID) -> dict[str, int]:
    counts = {}
    async with app.state.engine.connect() as reading:
        for table in ("users", "outbox", "one_time_tokens", "token_families"):
            column = "id" if table == "users" else "user_id"
            counts[table] = (
                await reading.execute(
                    text(f"SELECT count(*) FROM {table} WHERE {column} = :id"),  # noqa: S608
                    {"id": user_id},
                )
            ).scalar_one()
    return counts


GONE = {"users": 0, "outbox": 0, "one_time_tokens": 0, "token_families": 0}


async def test_a_deletion_waits_for_the_mail_sender_minting_a_token(client, app):
    user = await new_user(client)
    user_id = uuid.UUID(user["id"])
    now = utcnow()
    # A mail the running sender leaves alone (due tomorrow), for this test to claim itself.
    row = mail.mail_row(
        user_id=user_id, kind=mail.MailKind.PASSWORD_RESET, recipient=user["email"], now=now
    )
    row["due_at"] = now + dt.timedelta(days=1)
    await app.state.transactions.write(lambda statements: statements.execute(mail.INSERT_MAIL, row))

    async with app.state.engine.connect() as sender:
        # The sender's claim: the outbox row, locked by its UPDATE.
        await sender.execute(
            text("UPDATE outbox SET claimed_until = :until WHERE id = :id"),
            {"until": now + dt.timedelta(minutes=1), "id": row["id"]},
        )
        deletion = await deletion_waits(client, user)
        # Then the mail's token, whose foreign key takes KEY SHARE on the users row.
        token = {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "purpose": "password_reset",
            "email": user["email"],
            "token_hash": mail.hash_one_time_token(mail.new_one_time_token()),
            "created_at": now,
            "expires_at": now + dt.timedelta(hours=1),
            "used_at": None,
            "credentials_version": 0,
        }
        await sender.run_sync(lambda sync: _CoreStatements(sync).execute(mail.INSERT_TOKEN, token))
        await sender.commit()

    response = await deletion
    assert response.status_code == 204, response.text
    assert await user_rows(app, user_id) == GONE


async def test_a_deletion_waits_for_a_credential_change(client, app):
    user = await new_user(client)
    user_id = uuid.UUID(user["id"])

    async with app.state.engine.connect() as change:
        # change_credentials' two statements, in its order: the users row, then the families.
        await change.execute(
            text(
                "UPDATE users SET credentials_version = credentials_version + 1, "
                "is_active = false WHERE id = :id"
            ),
            {"id": user_id},
        )
        deletion = await deletion_waits(client, user)
        await change.execute(
            text("UPDATE token_families SET revoked_at = now() WHERE user_id = :id"),
            {"id": user_id},
        )
        await change.commit()

    response = await deletion
    # The bearer check ran before the change took its lock: the deletion goes ahead.
    assert response.status_code == 204, response.text
    assert await user_rows(app, user_id) == GONE
