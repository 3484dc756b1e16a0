"""Credential stamps: no session opens, and no password changes, on a state that has moved on.

A login reads the user, verifies the password for tens of milliseconds with no connection held,
and only then opens its session; a password change verifies the current password, then writes
the new one. Anything can happen in between: the password changes, the account is deactivated
(and perhaps reactivated), a second factor is enrolled. So every decision is taken on a
snapshot, and the write that acts on it is conditional, in the same SQL statement, on the
snapshot still being current. The snapshot is `users.credentials_version` (the "stamp"):

- Every event that must end the user's sessions and void decisions taken before it moves the
  stamp on and revokes every token family of the user in ONE transaction, the users row
  first: `change_credentials(...)`. Password change, password reset, deactivation and
  second-factor enrolment are such events. (Logout and revocation end sessions but change no
  credential; a login racing them is simply a login after them, so they leave the stamp.)
- A session opens only through `open_family(...)`: an INSERT ... SELECT from the users row
  WHERE the stamp is still the one verified AND the account is active. No row, no session.
- A rehash of the same password (stronger parameters, a normalised form) is not such an
  event: `store_rehash(...)` writes it only if the stamp is unchanged, and leaves it as is.

The contract, for whoever adds a way to open a session or to change a credential:

    To open a session, call `open_family(statements, family=..., verified_version=...)`
    (or `tokens.NewLogin.open`, which adds the first refresh token) inside a `db.write` unit, with the `credentials_version` of the snapshot you verified
    (the `Account` you checked the password against; for a second step, the version the
    first step saw, carried along with it). False means the state moved on: answer as for
    wrong credentials. Never insert into token_families yourself.

    To change a password, or anything else a session was granted on, call
    `change_credentials(statements, user_id=..., verified_version=..., values={...})` inside
    a `db.write` unit, with the version you verified (the snapshot the current password was
    checked against; a reset link should carry the version it was issued at, so it dies with
    any later change). False means someone else changed it first: answer as if the proof
    were wrong. Pass `verified_version=None` only for an administrator's decision that
    depends on no proof (deactivation).

Why this is serialisable, database by database:

- SQLite: every unit of work runs in a `BEGIN IMMEDIATE` transaction on one writer connection
  per process, and SQLite holds one write lock per database, so write transactions run one at
  a time, each on the latest committed state. Any interleaving is a serial order outright.
- PostgreSQL (READ COMMITTED): `change_credentials` updates the users row first, which locks
  it, then revokes the families with a second statement, which sees every family committed
  before it began. `open_family`'s SELECT takes `FOR SHARE` on the users row, so it waits for
  a concurrent change to commit and then re-evaluates its WHERE on the row's new version
  (EvalPlanQual), finding the stamp moved: no session. If instead the login took its lock
  first, the change's UPDATE waits for the login to commit, and its revoking statement then
  sees, and revokes, the new family. Without FOR SHARE the INSERT's SELECT would read the row
  as of its snapshot and insert a family that the change's revoke, already past, never sees.
  Two conditional UPDATEs of one stamp: the second waits, re-evaluates, and changes nothing.
- Refresh rotation (app/services/tokens.py) extends the family only WHERE it is not revoked,
  which locks the family row: a rotation and a revocation of one family are serial as well.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from app.models import TokenFamily, User
from app.transactions import Prepared, Statements

# INSERT INTO token_families (every column) SELECT :new_id, users.id, :new_... FROM users
# WHERE the user is active with the verified stamp. Bind names differ from the columns':
# SQLAlchemy reserves those for an INSERT's own values.
_FAMILY_COLUMNS = tuple(TokenFamily.__table__.columns)
_OPEN_FAMILY = Prepared(
    insert(TokenFamily).from_select(
        [column.key for column in _FAMILY_COLUMNS],
        select(
            *[
                User.id
                if column.key == "user_id"
                else bindparam(f"new_{column.key}", type_=column.type)
                for column in _FAMILY_COLUMNS
            ]
        )
        .where(
            User.id == bindparam("of_user_id"),
            User.credentials_version == bindparam("verified_version"),
            User.is_active.is_(True),
        )
        # PostgreSQL: wait for, and re-check against, a concurrent change of the users row.
        # SQLite has no row locks and needs none (one writer at a time); the clause is dropped.
        .with_for_update(read=True),
    )
)

_REVOKE_USER_FAMILIES = Prepared(
    update(TokenFamily)
    .where(TokenFamily.user_id == bindparam("of_user_id"), TokenFamily.revoked_at.is_(None))
    .values(revoked_at=bindparam("now"))
)

# The same, sparing the session that asked for the change (enrolling a second factor).
_REVOKE_OTHER_FAMILIES = Prepared(
    update(TokenFamily)
    .where(
        TokenFamily.user_id == bindparam("of_user_id"),
        TokenFamily.revoked_at.is_(None),
        TokenFamily.id != bindparam("keep_family_id"),
    )
    .values(revoked_at=bindparam("now"))
)

_STORE_REHASH = Prepared(
    update(User)
    .where(
        User.id == bindparam("user_id"),
        User.credentials_version == bindparam("verified_version"),
    )
    .values(password_hash=bindparam("new_hash"))
)

# The columns a credential change may set, besides the stamp itself.
CHANGEABLE = ("password_hash", "is_active")
_changes: dict[tuple[tuple[str, ...], bool], Prepared] = {}


def open_family(statements: Statements, *, family: dict[str, Any], verified_version: int) -> bool:
    """Insert the login's token family (a row with every column, `user_id` included) if its
    user is active with the stamp that was verified. False, and nothing written, otherwise."""
    params = {f"new_{key}": value for key, value in family.items() if key != "user_id"}
    opened = statements.execute(
        _OPEN_FAMILY,
        {**params, "of_user_id": family["user_id"], "verified_version": verified_version},
    )
    return opened.rowcount == 1


def change_credentials(
    statements: Statements,
    *,
    user_id: uuid.UUID,
    verified_version: int | None,
    values: dict[str, Any],
    now: dt.datetime,
    keep_family: uuid.UUID | None = None,
) -> bool:
    """Set `values`, move the stamp on and end every login of the user, if the stamp is still
    `verified_version` (None: whatever it is). False, and nothing written, otherwise.

    `keep_family`: a login that goes on, the one that made the change (second-factor
    enrolment ends every *other* session)."""
    if not set(values) <= set(CHANGEABLE):
        raise ValueError(f"not a credential: {sorted(set(values) - set(CHANGEABLE))}")
    changed = statements.execute(
        _change_statement(tuple(sorted(values)), verified_version is not None),
        {
            **{f"new_{name}": value for name, value in values.items()},
            "user_id": user_id,
            "verified_version": verified_version,
        },
    )
    if changed.rowcount != 1:
        return False
    # After the users row is locked by the UPDATE above: see the module docstring.
    if keep_family is None:
        statements.execute(_REVOKE_USER_FAMILIES, {"of_user_id": user_id, "now": now})
    else:
        statements.execute(
            _REVOKE_OTHER_FAMILIES,
            {"of_user_id": user_id, "keep_family_id": keep_family, "now": now},
        )
    return True


def store_rehash(
    statements: Statements, *, user_id: uuid.UUID, verified_version: int, new_hash: str
) -> bool:
    """Replace the hash by a new hash of the same password, unless the password changed since."""
    stored = statements.execute(
        _STORE_REHASH,
        {"user_id": user_id, "verified_version": verified_version, "new_hash": new_hash},
    )
    return stored.rowcount == 1


def _change_statement(columns: tuple[str, ...], conditional: bool) -> Prepared:
    prepared = _changes.get((columns, conditional))
    if prepared is None:
        condition = [User.id == bindparam("user_id")]
        if conditional:
            condition.append(User.credentials_version == bindparam("verified_version"))
        prepared = _changes[(columns, conditional)] = Prepared(
            update(User)
            .where(*condition)
            .values(
                {
                    **{name: bindparam(f"new_{name}") for name in columns},
                    "credentials_version": User.credentials_version + 1,
                }
            )
        )
    return prepared
