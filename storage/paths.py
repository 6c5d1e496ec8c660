"""Where the database lives by default: importable without SQLite's libraries, for `--once`,
which only reads it (push endpoints' last pings)."""

from __future__ import annotations

import os
from pathlib import Path

SERVICE_DB = "/var/lib/healthcheck/healthcheck.db"  # where the systemd unit keeps it


def default_path() -> str:
    """$STATE_DIRECTORY/healthcheck.db under systemd; else the service's database when there is
    one (so `healthcheck status` and `silence add` on that host see what the daemon writes);
    else ./healthcheck.db."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return str(Path(state) / "healthcheck.db")
    return SERVICE_DB if os.path.exists(SERVICE_DB) else "healthcheck.db"
