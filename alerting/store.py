"""Alert state and history in SQLite, so a restart neither re-pages nor forgets a firing alert."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from alerting.state import AlertState, Event, Phase, Severity
from healthcheck.labels import Labels

if TYPE_CHECKING:
    import sqlite_utils  # its types; storage.schema imports it (without numpy)


def load_states(db: sqlite_utils.Database) -> dict[tuple[str, str], tuple[AlertState, bool]]:
    """Every stored alert that is pending or firing, with whether people were told it fired."""
    rows = db.execute(
        "SELECT rule, target, state, severity, since, last_change, last_sent, summary, labels "
        "FROM alert_state WHERE state != ?",
        [Phase.RESOLVED.value],
    ).fetchall()
    states = {}
    for rule, target, phase, severity, since, changed, sent, summary, labels in rows:
        extra = json.loads(labels or "{}")
        state = AlertState(
            rule, target, Phase(phase), Severity(severity), since, changed, summary or "", sent
        )
        states[(rule, target)] = (state, bool(extra.get("notified", False)))
    return states


def load_windows(db: sqlite_utils.Database) -> dict[str, tuple[str, bool]]:
    """Each endpoint's stored down window: (outcomes, down) per target."""
    rows = db.execute("SELECT target, outcomes, down FROM alert_window").fetchall()
    return {target: (outcomes or "", bool(down)) for target, outcomes, down in rows}


def save_windows(
    db: sqlite_utils.Database, windows: Mapping[str, tuple[str, bool] | None], now: float
) -> None:
    """Store changed down windows; None forgets one (one transaction)."""
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.conn.executemany(
            "INSERT INTO alert_window (target, outcomes, down, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (target) DO UPDATE SET outcomes = excluded.outcomes, "
            "down = excluded.down, updated = excluded.updated",
            [(t, w[0], int(w[1]), now) for t, w in windows.items() if w is not None],
        )
        db.conn.executemany(
            "DELETE FROM alert_window WHERE target = ?",
            [(t,) for t, w in windows.items() if w is None],
        )


# One stored alert's facts (state, event, whether people were told it fired, region, the alert
# holding it back, the operator's labels of its endpoint or region).
SavedChange = tuple[AlertState, Event | None, bool, str, str | None, Labels]


def save_changes(db: sqlite_utils.Database, changes: Iterable[SavedChange], now: float) -> None:
    """Upsert each alert's state; record events in the history (one transaction).

    The `labels` column holds a JSON object of the alert's facts: `region`, `notified`,
    `suppressed_by` (when held) and `labels`, the operator's labels the API shows as such."""
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        for state, event, notified, region, held_by, operator in changes:
            extra: dict[str, object] = {
                "region": region,
                "notified": notified,
                "labels": dict(operator),
            }
            if held_by is not None:
                extra["suppressed_by"] = held_by
            labels = json.dumps(extra)
            db.execute(
                "INSERT INTO alert_state (rule, target, state, severity, since, last_change, "
                "last_sent, summary, labels) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (rule, target) DO UPDATE SET state = excluded.state, "
                "severity = excluded.severity, since = excluded.since, "
                "last_change = excluded.last_change, last_sent = excluded.last_sent, "
                "summary = excluded.summary, labels = excluded.labels",
                [
                    state.rule,
                    state.target,
                    state.phase.value,
                    state.severity.value,
                    state.since,
                    state.last_change,
                    state.last_sent,
                    state.summary,
                    labels,
                ],
            )
            if event is not None:
                db.execute(
                    "INSERT INTO alert_history (rule, target, ts, from_state, to_state, severity,"
                    " summary) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        state.rule,
                        state.target,
                        now,
                        event.value,
                        state.phase.value,
                        state.severity.value,
                        state.summary,
                    ],
                )


def forget(db: sqlite_utils.Database, keys: Iterable[tuple[str, str]]) -> None:
    """Drop pending alerts that never fired."""
    with db.conn:
        db.conn.executemany("DELETE FROM alert_state WHERE rule = ? AND target = ?", list(keys))
