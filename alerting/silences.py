"""Silences: alerts that match are recorded but not sent.

From config: one-off windows (`starts`/`ends`) or weekly maintenance windows in a time zone
(`schedule: {days: [sat, sun], start: "02:00", end: "04:00", timezone: Europe/Berlin}`),
read by `healthcheck.alerting_section`. From the CLI: ad hoc ones stored in SQLite
(`healthcheck silence add --region eu-west --for 2h`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

# Re-exported: the types are core (a Config carries them), the readers are config.
from healthcheck.alert_settings import Silence, Weekly
from healthcheck.alerting_section import read_silence, read_silences

if TYPE_CHECKING:
    import sqlite_utils

    from healthcheck.result import EndpointId

__all__ = [
    "Silence",
    "Weekly",
    "add_stored",
    "read_silence",
    "read_silences",
    "remove_stored",
    "silenced",
    "stored",
]


def silenced(
    silences: Iterable[Silence], rule: str, endpoint: EndpointId | None, region: str, now: float
) -> bool:
    return any(s.active(now) and s.matches(rule, endpoint, region) for s in silences)


# -- stored (CLI) ------------------------------------------------------------------------------
def add_stored(db: sqlite_utils.Database, silence: Silence, now: float) -> int:
    row = {
        "created": now,
        "region": silence.region,
        "endpoint": silence.endpoint,
        "rule": silence.rule,
        "starts": silence.starts,
        "ends": silence.ends,
        "reason": silence.reason,
    }
    silence_id = db.table("silences").insert(row).last_pk
    assert isinstance(silence_id, int)  # the rowid sqlite gave the new row
    return silence_id


def stored(db: sqlite_utils.Database, now: float | None = None) -> list[Silence]:
    """Silences from the CLI; with `now`, only those not yet ended."""
    rows: Iterable[Mapping[str, Any]] = db["silences"].rows_where(
        "ends IS NULL OR ends > ?" if now is not None else None,
        [now] if now is not None else None,
        order_by="id",
    )
    return [
        Silence(
            r["reason"],
            r["region"],
            r["endpoint"],
            r["rule"],
            r["starts"],
            r["ends"],
            None,
            r["id"],
        )
        for r in rows
    ]


def remove_stored(db: sqlite_utils.Database, silence_id: int) -> bool:
    with db.conn:
        return db.execute("DELETE FROM silences WHERE id = ?", [silence_id]).rowcount > 0
