"""Files only the service may read: its data folder 0700, the files in it 0600, whatever the umask.

The data folder holds the SQLite database (every account's password hash, every login), the
generated signing secret and, as they come, other state such as the mail outbox. Whatever
creates a folder or file in it goes through here, so that no umask (a 022 leaves files 0644,
world-readable) and no library's default decides who can read them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# What SQLite keeps beside a database: its write-ahead log, its shared-memory index, and the
# rollback journal of a database not (yet) in WAL mode.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
# And the lock file on which the service's writers take turns (app/writer_turns.py).
WRITER_TURNS_SUFFIX = "-writers"


def make_private_dir(path: Path) -> Path:
    """Create the folder, and any missing parent, 0700; an existing folder is left as it is.

    mkdir's mode is filtered by the umask and does not apply to parents, hence the chmod of
    each folder made here. A folder that exists already was set up by someone (a volume, an
    operator) who may have meant its mode.
    """
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:  # another worker made it a moment ago
            continue
        os.chmod(folder, PRIVATE_DIR_MODE)
    return path


def create_private_file(path: Path) -> int | None:
    """Create the file 0600 and return an open, writable descriptor; None when it exists.

    O_EXCL: of several processes creating the same file, exactly one does, and no process ever
    opens a file someone else made in its place. fchmod, because the umask only removes bits:
    a 0277 umask would otherwise leave the service a file it cannot write.
    """
    make_private_dir(path.parent)
    return open_private_file(path)


def open_private_file(path: str | Path) -> int | None:
    """`create_private_file` in a folder known to exist (made by `make_private_dir`): two
    system calls, for a caller that writes many files into one folder."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        return None
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd


def prepare_sqlite_database(database: Path) -> None:
    """Make the database's folder private and the database file 0600 before SQLite opens it.

    SQLite creates a missing database 0644 less the umask, and gives its -wal and -shm files
    the mode of the database: an empty file made here first makes all three 0600 (SQLite takes
    an empty file for a new database).
    """
    fd = create_private_file(database)
    if fd is not None:
        os.close(fd)


def readable_by_others(database: Path) -> list[Path]:
    """The database's files that users other than the owner may read or write."""
    found = []
    suffixes = (*SQLITE_COMPANIONS, WRITER_TURNS_SUFFIX)
    candidates = [database, *(Path(f"{database}{suffix}") for suffix in suffixes)]
    for path in candidates:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            continue
        if stat.S_IMODE(mode) & 0o077:
            found.append(path)
    return found
