"""Is the database file at the path still the one we have open? And clearing the way for a new one.

A file removed (`rm`) or replaced (`mv`) while open keeps taking writes into its old inode,
which nothing will read again; random bytes written over it make the next start refuse it.
The writer and the outbox compare the file at the path with the one they opened.
"""

from __future__ import annotations

import contextlib
import os

SQLITE_MAGIC = b"SQLite format 3\x00"

Identity = tuple[int, int]  # (st_dev, st_ino)


def identity(path: str) -> Identity | None:
    """The file now at `path`, or None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return (found.st_dev, found.st_ino)


def is_database(path: str) -> bool:
    """False when the file starts with something other than SQLite's header. An empty file
    passes: a new database may not have its first page written yet."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return True
    return head == b"" or head == SQLITE_MAGIC


def gone(path: str, opened: Identity | None) -> str | None:
    """Why the file opened as `opened` is no longer the database at `path`; None if it is."""
    now = identity(path)
    if now is None:
        return "the database file was removed"
    if opened is not None and now != opened:
        return "the database file was replaced by another file"
    if not is_database(path):
        return "the database file was overwritten: it is not a database"
    return None


def clear_the_way(path: str, stamp: float) -> str | None:
    """Before creating the database anew: move a file that is not a database aside (kept for a
    look, returned), and remove the old file's -wal and -shm, which connections still open on
    the old file use: a new file sharing them would read the old file's pages as its own."""
    moved = None
    if identity(path) is not None and not is_database(path):
        moved = f"{path}.broken-{int(stamp)}"
        os.replace(path, moved)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
    return moved
