"""users.email_normalized: recomputed as the Unicode caseless key of the validated address

Revision ID: 0006_email_keys
Revises: 0005_mail
Create Date: 2026-12-01

Keys were `email.strip().lower()`; they become the key of app/email_addresses.py (the address
as email-validator normalises it, under Unicode compatibility caseless matching), so that
`straße`/`STRASSE` or `οδοσ`/`ΟΔΟΣ` are one account from now on. The function is copied here,
not imported: a migration must keep doing what it did when the service changes.

Accounts that were two under the old key and are one under the new one are neither merged
nor dropped. Of each such group, the row that already holds the new key keeps it (else the
oldest row takes it); the others keep their previous key, so every row and the unique
constraint survive, and each group is reported (logged as a warning, by user id) for an
administrator to resolve: logins with any spelling of the address now reach the row holding
the new key. A row whose address no longer validates keeps its key too, and is reported.
Downgrade recomputes the old keys the same way, so no row is lost in either direction.
"""

import logging
import unicodedata
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from alembic import op

revision: str = "0006_email_keys"
down_revision: str | None = "0005_mail"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("passgate.migrations")

KEY_MAX_LENGTH = 320  # the column's length

users = sa.table(
    "users",
    sa.column("id", sa.Uuid()),
    sa.column("email", sa.String()),
    sa.column("email_normalized", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def caseless_key(email: str) -> str | None:
    """app.email_addresses.email_key as of this revision; None where it would refuse."""
    try:
        canonical = validate_email(email.strip(), check_deliverability=False).normalized
    except (EmailNotValidError, UnicodeError):
        return None
    folded = unicodedata.normalize("NFD", canonical).casefold()
    folded = unicodedata.normalize("NFKD", folded).casefold()
    key = unicodedata.normalize("NFC", unicodedata.normalize("NFKD", folded))
    return key if len(key) <= KEY_MAX_LENGTH else None


def lower_key(email: str) -> str | None:
    """The key before this revision."""
    return email.strip().lower()


def rekey(compute: Callable[[str], str | None], what: str) -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(users.c.id, users.c.email, users.c.email_normalized).order_by(
            users.c.created_at, users.c.id
        )
    ).all()
    final: dict[object, str] = {}
    kept: list[object] = []  # rows that keep their current key instead of the computed one
    groups: dict[str, list[sa.Row]] = {}
    for row in rows:
        key = compute(row.email)
        if key is None:
            logger.warning(
                "user %s: its address does not validate; it keeps its key (%s)", row.id, what
            )
            final[row.id] = row.email_normalized
            kept.append(row.id)
        else:
            groups.setdefault(key, []).append(row)
    for key, group in groups.items():
        holder = next((row for row in group if row.email_normalized == key), group[0])
        final[holder.id] = key
        others = [row for row in group if row is not holder]
        for row in others:
            final[row.id] = row.email_normalized
            kept.append(row.id)
        if others:
            logger.warning(
                "users %s share one address key (%s): %s takes it and is the account logins "
                "reach; %s keep their previous key, for an administrator to resolve",
                ", ".join(str(row.id) for row in group),
                what,
                holder.id,
                ", ".join(str(row.id) for row in others),
            )
    # A kept key may, rarely, be another row's new key: that row keeps the key, the kept one
    # takes a key no address can have (it starts with its id), still unique and reported.
    taken = {final[row_id] for row_id in final if row_id not in set(kept)}
    for row_id in kept:
        if final[row_id] in taken:
            final[row_id] = f"#{row_id}:{final[row_id]}"[:KEY_MAX_LENGTH]
            logger.warning(
                "user %s: its previous key is taken; it now has %r", row_id, final[row_id]
            )
    changed = [
        {"row_id": row.id, "key": final[row.id]}
        for row in rows
        if final[row.id] != row.email_normalized
    ]
    if not changed:
        return
    update = (
        sa.update(users)
        .where(users.c.id == sa.bindparam("row_id"))
        .values(email_normalized=sa.bindparam("key"))
    )
    # Through keys no address has first: a row may take the key another row is leaving, and
    # the unique constraint is checked row by row.
    connection.execute(update, [{"row_id": c["row_id"], "key": f"#{c['row_id']}"} for c in changed])
    connection.execute(update, changed)


def upgrade() -> None:
    rekey(caseless_key, "upgrade to caseless keys")


def downgrade() -> None:
    rekey(lower_key, "downgrade to lower-case keys")
