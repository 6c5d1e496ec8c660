"""Silences: alerts that match are recorded but not sent.

From config: one-off windows (`starts`/`ends`) or weekly maintenance windows in a time zone
(`schedule: {days: [sat, sun], start: "02:00", end: "04:00", timezone: Europe/Berlin}`).
From the CLI: ad hoc ones stored in SQLite (`healthcheck silence add --region eu-west --for 2h`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from healthcheck import schema

if TYPE_CHECKING:
    import sqlite_utils

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Weekly:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time  # may be before start: the window runs past midnight
    zone: str

    def covers(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, ZoneInfo(self.zone))
        clock = local.time()
        if self.start <= self.end:
            return local.weekday() in self.days and self.start <= clock < self.end
        if clock >= self.start:  # the evening part, on a listed day
            return local.weekday() in self.days
        return (local.weekday() - 1) % 7 in self.days and clock < self.end  # after midnight


@dataclass(frozen=True, slots=True)
class Silence:
    reason: str
    region: str | None = None
    endpoint: str | None = None
    rule: str | None = None
    starts: float | None = None
    ends: float | None = None
    weekly: Weekly | None = None
    id: int | None = None  # set for silences stored by the CLI

    def active(self, now: float) -> bool:
        if self.starts is not None and now < self.starts:
            return False
        if self.ends is not None and now >= self.ends:
            return False
        return self.weekly is None or self.weekly.covers(now)

    def matches(self, rule: str, target: str, region: str) -> bool:
        endpoint = target.split("/", 1)[1] if "/" in target else None
        return (
            (self.region is None or self.region == region)
            and (self.endpoint is None or self.endpoint == endpoint)
            and (self.rule is None or self.rule == rule)
        )

    def describe(self) -> str:
        scope = "/".join(p for p in (self.region or "*", self.endpoint or "*") if p)
        return f"{scope} rule={self.rule or '*'}: {self.reason}"


def silenced(silences: Iterable[Silence], rule: str, target: str, region: str, now: float) -> bool:
    return any(s.active(now) and s.matches(rule, target, region) for s in silences)


# -- config ------------------------------------------------------------------------------------
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _clock(value: Any) -> time:
    match = _CLOCK.fullmatch(schema.text(value).strip())
    if not match:
        raise ValueError(f"expected a time of day like 02:00, got {value!r}")
    return time(int(match.group(1)), int(match.group(2)))


def _days(value: Any) -> frozenset[int]:
    items = value if isinstance(value, list) else [value]
    days = set()
    for item in items:
        name = schema.text(item).strip().lower()[:3]
        if name not in DAYS:
            raise ValueError(f"expected days like [mon, tue, sat], got {item!r}")
        days.add(DAYS.index(name))
    return frozenset(days)


def _zone(value: Any) -> str:
    name = schema.text(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)"
        ) from None
    return name


def _moment(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        moment = datetime.fromisoformat(schema.text(value))
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 time like 2026-12-24T22:00:00+01:00, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} needs a UTC offset or Z, so it means one moment")
    return moment.timestamp()


def _weekly(value: Any) -> Weekly:
    fields = schema.sub_mapping(
        value, {"days": _days, "start": _clock, "end": _clock, "timezone": _zone}
    )
    missing = [key for key in ("start", "end", "timezone") if key not in fields]
    if missing:
        raise schema.FieldError(missing[0], "missing: a weekly window needs start, end, timezone")
    return Weekly(
        fields.get("days", frozenset(range(7))), fields["start"], fields["end"], fields["timezone"]
    )


def read_silence(value: Any) -> Silence:
    fields = schema.sub_mapping(
        value,
        {
            "reason": schema.text,
            "region": schema.text,
            "endpoint": schema.text,
            "rule": schema.text,
            "starts": _moment,
            "ends": _moment,
            "schedule": _weekly,
        },
    )
    if "reason" not in fields:
        raise schema.FieldError("reason", "missing: say why, so the next person knows")
    if "starts" in fields and "ends" in fields and fields["ends"] <= fields["starts"]:
        raise schema.FieldError("ends", "must be after starts")
    return Silence(
        reason=fields["reason"],
        region=fields.get("region"),
        endpoint=fields.get("endpoint"),
        rule=fields.get("rule"),
        starts=fields.get("starts"),
        ends=fields.get("ends"),
        weekly=fields.get("schedule"),
    )


def read_silences(value: Any) -> tuple[Silence, ...]:
    if not isinstance(value, list):
        raise ValueError("expected a list of silences")
    found = []
    for index, item in enumerate(value):
        try:
            found.append(read_silence(item))
        except schema.FieldError as exc:
            raise schema.FieldError(
                f"[{index}].{exc.key}".replace(".[", "["), exc.message
            ) from None
        except ValueError as exc:
            raise schema.FieldError(f"[{index}]", str(exc)) from None
    return tuple(found)


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
