"""How long a failed login waits while imported password hashes remain in the database.

An imported hash (bcrypt, PBKDF2, scrypt...: every format but our own Argon2) costs what its
format costs, often several times our Argon2id. Were a failed login to answer as soon as its
hash is checked, a wrong password for an imported account would answer later than one for a
native account or an unknown email, and tell an attacker which emails are registered and came
from the old system. So a failed login waits, on a timer that costs no CPU, until the slowest
recent imported verification would have finished.

That wait is bounded and it ends:

- only while imported hashes remain: their number is counted from the database at start and
  every IMPORTED_HASH_RECOUNT_SECONDS (another replica may have rehashed some, an import may
  have added some), one is taken off at once when this process stores a rehash of one, and any
  verification of an imported hash counts as proof that some remain. Once every imported user
  has logged in (or none was ever imported), a failed login costs what a native one costs;
- never longer than IMPORTED_HASH_PADDING_MAX_SECONDS: a hash verified on a busy moment, or a
  format slower than the ceiling, does not make every failed login slow until a restart;
- while imports remain but none was verified since the process started, a failed login waits
  the whole ceiling: the first probe must not tell the slow accounts from the others either.
"""

from __future__ import annotations

from collections import deque

from sqlalchemy import func, select

from app.models import User
from app.transactions import Prepared, Statements, Transactions

# Our own hashes, and Argon2 imported in the standard PHC form, are verified by the native
# context within our own cost bounds: every other stored hash is an imported one.
NATIVE_PREFIX = "$argon2"
# How many recent imported verifications the wait is the slowest of.
TIMINGS_KEPT = 64

COUNT_IMPORTED = Prepared(
    select(func.count())
    .select_from(User)
    .where(~User.password_hash.startswith(NATIVE_PREFIX, autoescape=True))
)


def is_imported(password_hash: str | None) -> bool:
    """Whether a stored hash is one that an import brought (not verified as native Argon2)."""
    return password_hash is not None and not password_hash.startswith(NATIVE_PREFIX)


class ImportedHashPadding:
    """The wait of a failed login (`seconds`), from what this process knows of imports."""

    def __init__(self, ceiling_seconds: float) -> None:
        self.ceiling_seconds = ceiling_seconds
        self._timings: deque[float] = deque(maxlen=TIMINGS_KEPT)
        # Imported hashes in the database as last counted (None: not counted yet).
        self._remaining: int | None = None
        # Failed logins that waited: what tests and the docs' measurements read.
        self.padded_failures = 0

    @property
    def remaining(self) -> int | None:
        return self._remaining

    def counted(self, remaining: int) -> None:
        """The database's count of imported hashes (COUNT_IMPORTED)."""
        self._remaining = remaining
        if remaining == 0:
            self._timings.clear()  # a later import starts from the ceiling again

    def verified_imported(self, seconds: float) -> None:
        """An imported hash was verified in `seconds` (told on the event loop; deque appends are
        atomic). It was in the database a moment ago, so at least one remains."""
        self._timings.append(seconds)
        if not self._remaining:
            self._remaining = 1

    def rehashed_imported(self) -> None:
        """This process replaced an imported hash by Argon2id."""
        if self._remaining:
            self._remaining -= 1
            if self._remaining == 0:
                self._timings.clear()

    def seconds(self) -> float:
        """How long, from its start, a failed login lasts at least; 0 for no wait."""
        if not self._remaining:  # none remain, or not counted yet and none seen
            return 0.0
        slowest = max(self._timings, default=self.ceiling_seconds)
        return min(slowest, self.ceiling_seconds)

    async def recount(self, db: Transactions) -> int:
        def count(statements: Statements) -> int:
            row = statements.execute(COUNT_IMPORTED).one_or_none()
            return int(row[0]) if row is not None else 0

        remaining = await db.read(count)
        self.counted(remaining)
        return remaining
