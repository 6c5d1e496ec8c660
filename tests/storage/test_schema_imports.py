"""storage.schema imports sqlite_utils without numpy (installed, for the inference canary): the
daemon and its render helper never load numpy through it, and numpy still imports after."""

from __future__ import annotations

import subprocess
import sys

# In a fresh interpreter: the daemon's modules and the render helper's, a database opened
# (and migrated) through sqlite_utils, then numpy imported as a canary kind would.
PROGRAM = """
import sys
import healthcheck.daemon, healthcheck.front, storage.uptime
from storage.schema import connect

db = connect(sys.argv[1])
tables = db.table_names()
print("numpy" in sys.modules, "pandas" in sys.modules, "results" in tables)
import numpy
print(int(numpy.int8(3)) + 1)
"""


def test_the_database_opens_without_numpy_and_numpy_imports_after(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path / "healthcheck.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["False False True", "4"]
