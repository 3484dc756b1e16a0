"""Passgate's SQLite writers on one machine take turns on a lock that the kernel hands over at once.

SQLite lets one connection write at a time. A writer that finds the lock held by another
process waits in SQLite's busy handler, which sleeps between tries (1, 2, 5, 10, ... 100 ms)
and so keeps a write waiting long after the lock came free: with two workers on one SQLite
file, `make bench`'s refresh rotations (W6) had a p99 of 0.5-1.2 s against a p50 of 8 ms.
Each process already writes its hot paths through one connection on one thread
(app/transactions.py); here those threads from every process queue for one flock() on a file
beside the database. The wait blocks the writer's thread, never the event loop, and the
kernel wakes the next writer the moment the last one lets go.

Only turns: SQLite's lock still decides who writes. Writers that take no turn (the ORM's
connections, migrations, the command line) wait in the busy handler as before, and so does a
writer holding its turn that meets one of them, for at most the busy timeout: a turn lasts no
longer than a write could. flock() locks are the open file's, independent of the POSIX record
locks SQLite takes on its own files, and a process that dies gives its turn back with its
descriptors (exec closes them, so a hashing process never holds one).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator

from app.files import PRIVATE_FILE_MODE, WRITER_TURNS_SUFFIX

logger = logging.getLogger("passgate.db")


class WriterTurns:
    """Turns at writing one SQLite database, shared by every process that opens it this way."""

    def __init__(self, database: str) -> None:
        # Named as SQLite names its -wal and -shm files.
        self._path = f"{database}{WRITER_TURNS_SUFFIX}"
        self._fd: int | None = None
        self._unavailable = False

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Wait (blocking this thread) until no other writer holds a turn; hold it inside."""
        fd = self._open()
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:  # a file system without flock() (ENOLCK): as below
                self._give_up(exc)
                fd = None
        if fd is None:  # no turns: SQLite's own lock alone decides, as before they existed
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self) -> int | None:
        if self._fd is None and not self._unavailable:
            try:
                # Read-only is enough for flock(), and works whatever mode an older file has.
                fd = os.open(self._path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
            except OSError as exc:  # the database's own folder refuses a file
                self._give_up(exc)
                return None
            with contextlib.suppress(OSError):  # the umask only removes bits; another owner's
                os.fchmod(fd, PRIVATE_FILE_MODE)
            self._fd = fd
        return self._fd

    def _give_up(self, exc: OSError) -> None:
        # Writes still work without turns, only slower when several processes write at once.
        self._unavailable = True
        logger.warning("no writer turns for %s: %s", self._path, exc.strerror or exc)
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
