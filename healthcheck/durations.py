"""Duration strings as users write them (`30s`, `5m`, `250ms`, `1h30m`) to seconds and back."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")


def parse_duration(text: str) -> float:
    """Return the duration in seconds; raise ValueError naming the accepted forms."""
    cleaned = text.strip().replace(" ", "") if isinstance(text, str) else ""
    if not cleaned or not _WHOLE.fullmatch(cleaned):
        raise ValueError(f"expected a duration like 30s, 5m, 250ms or 1h30m, got {text!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(cleaned))


def format_duration(seconds: float) -> str:
    """Render seconds compactly for people: 0.25 -> '250ms', 90 -> '1m30s'."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    parts = []
    remaining = seconds
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if remaining >= size:
            count, remaining = divmod(remaining, size)
            parts.append(f"{int(count)}{unit}")
    if remaining or not parts:
        parts.append(f"{remaining:g}s")
    return "".join(parts)
