"""A real database file per test, written through the writer's own batch code."""

from __future__ import annotations

import pytest

from storage.schema import connect
from storage.writer import write_batch


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "healthcheck.db")


@pytest.fixture
def store(db_path):
    """write(*checks): one committed batch, exactly as the writer thread commits it."""
    db = connect(db_path)
    ids: dict = {}

    def write(*checks) -> None:
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            write_batch(db, checks, ids)

    yield write
    db.conn.close()
