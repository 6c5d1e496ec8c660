"""Is the database file at the path still the one we have open? And clearing the way for a new one.

A file removed (`rm`) or replaced (`mv`) while open keeps taking writes into its old inode,
which nothing will read again; random bytes written over it make the next start refuse it.
The writer and the outbox compare the file at the path with the one they opened, by
`os.stat` alone: opening the file on another descriptor and closing it would drop the POSIX
locks SQLite holds on it in this process. Bytes written over it show as SQLite's own error.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.schema import connect

if TYPE_CHECKING:
    import sqlite_utils  # its types; storage.schema imports it (without numpy)

Identity = tuple[int, int]  # (st_dev, st_ino)


def identity(path: str) -> Identity | None:
    """The file now at `path`, or None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return (found.st_dev, found.st_ino)


@dataclass(frozen=True, slots=True)
class DatabaseFile:
    """The database at `path` as the alert outbox uses it: opened (created, migrated) here,
    and told apart from a file put in its place."""

    path: str
    busy_timeout: float = 5.0  # s a write waits on another connection's lock

    def open(self, *, create: bool = True) -> sqlite_utils.Database:
        return connect(self.path, create=create, busy_timeout=self.busy_timeout)

    def identity(self) -> Identity | None:
        return identity(self.path)


def gone(path: str, opened: Identity | None) -> str | None:
    """Why the file opened as `opened` is no longer the database at `path`; None if it is."""
    now = identity(path)
    if now is None:
        return "the database file was removed"
    if opened is not None and now != opened:
        return "the database file was replaced by another file"
    return None


def overwritten(exc: BaseException) -> str | None:
    """Why an error from a file that was a database says it no longer is one; None if not."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, sqlite3.DatabaseError) and cause.sqlite_errorcode in NOT_A_DATABASE:
            return f"the database file was overwritten: {cause}"
        cause = cause.__cause__
    return None


NOT_A_DATABASE = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


def clear_the_way(path: str, stamp: float, broken: bool) -> str | None:
    """Before creating the database anew: move a `broken` file aside (kept for a look,
    returned), and remove the old file's -wal and -shm, which connections still open on
    the old file use: a new file sharing them would read the old file's pages as its own."""
    moved = None
    if broken and identity(path) is not None:
        moved = f"{path}.broken-{int(stamp)}"
        os.replace(path, moved)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
    return moved
