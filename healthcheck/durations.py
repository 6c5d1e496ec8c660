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
    """Render seconds compactly for people, to the precision that means something: whole
    milliseconds under a second (0.25 -> '250ms'), at most two decimals under 10 s
    (2.345 -> '2.35s'), whole seconds above (30.0652 -> '30s', 90.4 -> '1m30s')."""
    milliseconds = seconds * 1000
    if round(milliseconds) < 1000:
        if 0 < abs(milliseconds) < 1:
            return f"{milliseconds:.2g}ms"
        return f"{round(milliseconds)}ms"
    if round(seconds, 2) < 10:
        return f"{round(seconds, 2):g}s"
    parts = []
    remaining = round(seconds)
    for unit in ("d", "h", "m"):
        size = int(_UNITS[unit])
        if remaining >= size:
            count, remaining = divmod(remaining, size)
            parts.append(f"{count}{unit}")
    if remaining or not parts:
        parts.append(f"{remaining}s")
    return "".join(parts)
