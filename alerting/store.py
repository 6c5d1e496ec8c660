"""Alert state and history in SQLite, so a restart neither re-pages nor forgets a firing alert."""

from __future__ import annotations

import json
from collections.abc import Iterable

import sqlite_utils

from alerting.state import AlertState, Event, Phase, Severity


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


def save_changes(
    db: sqlite_utils.Database,
    changes: Iterable[tuple[AlertState, Event | None, bool, str]],
    now: float,
) -> None:
    """Upsert each alert's state; record events in the history (one transaction)."""
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        for state, event, notified, region in changes:
            labels = json.dumps({"region": region, "notified": notified})
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
