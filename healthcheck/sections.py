"""The daemon's own configuration sections: one key table each, read straight into settings.

A section's table is the only list of its keys: validation refuses what it does not name and
the settings are built from what it returns, and a table that names a field its settings class
lacks (or misses one it has) fails when this module is imported. A second list drifted once:
the README's `storage.max_queue` was refused while `StorageSettings` had the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from healthcheck import schema
from healthcheck.durations import parse_duration
from healthcheck.labels import label_name
from healthcheck.targets import ExporterSettings, SchedulerSettings, SlaSettings, StorageSettings

DAY = schema.DAY


@dataclass(frozen=True, slots=True)
class Key:
    """One key: how to read its value and the settings field it fills (a tuple when the
    reader returns one value per field, as `listen` gives host and port)."""

    read: schema.Reader
    fills: str | tuple[str, ...]


Table = Mapping[str, "Key | Table"]  # a nested mapping is a sub-table: `retention: {raw: ...}`


@dataclass(frozen=True, slots=True)
class Section:
    """A top-level key whose table of keys builds one frozen settings object."""

    settings: type
    keys: Table

    def __post_init__(self) -> None:
        filled = [name for key in _leaves(self.keys) for name in _names(key)]
        declared = [field.name for field in fields(self.settings)]
        if sorted(filled) != sorted(declared):
            raise TypeError(
                f"{self.settings.__name__}: the key table fills {sorted(filled)}, "
                f"the class has {sorted(declared)}"
            )

    def read(self, value: Any) -> dict[str, Any]:
        """The settings fields the given mapping sets; raise FieldError naming the sub-key."""
        values: dict[str, Any] = {}
        _fill(self.keys, schema.sub_mapping(value, _readers(self.keys)), values)
        return values

    def build(self, value: Any) -> Any:
        return self.settings() if value is None else self.settings(**self.read(value))


def _readers(table: Table) -> dict[str, schema.Reader]:
    return {
        key: entry.read if isinstance(entry, Key) else _sub_reader(entry)
        for key, entry in table.items()
    }


def _sub_reader(table: Table) -> schema.Reader:
    return lambda value: schema.sub_mapping(value, _readers(table))


def _fill(table: Table, read: Mapping[str, Any], into: dict[str, Any]) -> None:
    for key, value in read.items():
        entry = table[key]
        if not isinstance(entry, Key):
            _fill(entry, value, into)
        elif isinstance(entry.fills, str):
            into[entry.fills] = value
        else:
            into.update(zip(entry.fills, value, strict=True))


def _leaves(table: Table) -> list[Key]:
    found: list[Key] = []
    for entry in table.values():
        found.extend([entry] if isinstance(entry, Key) else _leaves(entry))
    return found


def _names(key: Key) -> tuple[str, ...]:
    return (key.fills,) if isinstance(key.fills, str) else key.fills


def _tick(value: Any) -> float:
    """A duration from 0s (each check on its exact due time) to 1s."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 50ms, got {value!r}")
    seconds = float(value) if isinstance(value, int | float) else parse_duration(schema.text(value))
    if not 0 <= seconds <= 1:
        raise ValueError(f"expected a duration from 0s to 1s, got {seconds:g}s")
    return seconds


def _workers(value: Any) -> int | None:
    """A number of probe worker processes from 1 to 1024, or `auto` (one per core)."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise ValueError(f"expected a number of workers from 1 to 1024, or auto; got {value!r}")
    return value


def _wedged_after(value: Any) -> float:
    """A duration from 3s (three heartbeats a worker sends) to 25s (inside WatchdogSec=30s)."""
    seconds: float = schema.duration_up_to(25.0)(value)
    if seconds < 3:
        raise ValueError(f"must be at least 3s (a worker wakes every 1s), got {value!r}")
    return seconds


def _metric_labels(value: Any) -> tuple[str, ...]:
    """Label names (of `labels:`) to put on the per-endpoint series, each once."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list of label names, like [team, tier]; got {value!r}")
    names: list[str] = []
    for index, item in enumerate(value):
        try:
            name = label_name(item)
        except ValueError as exc:
            raise schema.FieldError(f"[{index}]", str(exc)) from None
        if name in names:
            raise schema.FieldError(f"[{index}]", f"{name!r} is listed twice")
        names.append(name)
    return tuple(names)


def _fraction(maximum: float) -> schema.Reader:
    def read(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number from 0 to {maximum}, got {value!r}")
        if not 0 <= value <= maximum:
            raise ValueError(f"expected a number from 0 to {maximum}, got {value!r}")
        return float(value)

    return read


SECTIONS: dict[str, Section] = {
    "scheduler": Section(
        SchedulerSettings,
        {
            "max_concurrency": Key(schema.integer(1, 100_000), "max_concurrency"),
            "rate_limit": Key(schema.integer(1, 1_000_000), "rate_limit"),
            "jitter": Key(_fraction(0.5), "jitter"),
            "tick": Key(_tick, "tick"),
            "workers": Key(_workers, "workers"),
            "wedged_after": Key(_wedged_after, "wedged_after"),
            "stop_grace": Key(schema.duration_up_to(10.0), "stop_grace"),
            "control_plane_nice": Key(schema.integer(0, 19), "control_plane_nice"),
        },
    ),
    "storage": Section(
        StorageSettings,
        {
            "path": Key(schema.optional(schema.text), "path"),
            "retention": {
                "raw": Key(schema.duration_up_to(366 * DAY), "retention_raw"),
                "raw_rows": Key(schema.optional(schema.integer(1)), "retention_raw_rows"),
                "rollups": Key(schema.duration_up_to(10 * 366 * DAY), "retention_rollups"),
            },
            "max_queue": Key(schema.integer(1, 10_000_000), "max_queue"),
            "busy_timeout": Key(schema.duration_up_to(60.0), "busy_timeout"),
        },
    ),
    "exporter": Section(
        ExporterSettings,
        {
            "listen": Key(schema.listen_address, ("host", "port")),
            "auth": {
                "bearer_token": Key(schema.secret, "bearer_token"),
                "username": Key(schema.text, "username"),
                "password": Key(schema.secret, "password"),
            },
            "protect_metrics": Key(schema.boolean, "protect_metrics"),
            "max_connections": Key(schema.integer(1, 65_536), "max_connections"),
            "read_timeout": Key(schema.duration_up_to(300.0), "read_timeout"),
            "blackbox_names": Key(schema.boolean, "blackbox_names"),
            "metric_labels": Key(_metric_labels, "metric_labels"),
            "public_url": Key(schema.http_url, "public_url"),
            "public_badges": Key(schema.boolean, "public_badges"),
        },
    ),
    "sla": Section(SlaSettings, {"target": Key(schema.ratio, "target")}),
}
