"""Logging set-up: JSON lines under systemd, readable text on a terminal, secrets scrubbed."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from healthcheck.secrets import Redactor

# Attributes every LogRecord has; anything else was passed in `extra=` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class RedactingFilter(logging.Filter):
    """Scrubs known secret values from the final message of every record."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self.redactor(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, self.redactor(value))
        return True


class RepeatFilter(logging.Filter):
    """The same warning or error at most `burst` times a window; then one line says how many
    were held back. A flood of one failure once wrote 331k traceback lines (134 MB) in 80 s."""

    def __init__(self, burst: int = 5, window: float = 60.0, keys: int = 10_000) -> None:
        super().__init__()
        self.burst, self.window, self.keys = burst, window, keys
        self._seen: dict[tuple[str, int, str, str], list[float]] = {}  # [since, count, held]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # status changes and the like: one line per event, never held back
        kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, record.getMessage(), kind)
        entry = self._seen.get(key)
        now = record.created
        if entry is None or not 0 <= now - entry[0] < self.window:
            if len(self._seen) >= self.keys:
                self._seen.clear()  # many distinct messages: no repeats to hold back
            held = int(entry[2]) if entry else 0
            self._seen[key] = [now, 1, 0]
            if held:
                record.msg = f"{record.getMessage()} (and {held} more like this, not logged)"
                record.args = None
            return True
        entry[1] += 1
        if entry[1] <= self.burst:
            return True
        entry[2] += 1
        return False


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the structured fields given in `extra=`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")


def under_systemd() -> bool:
    return "INVOCATION_ID" in os.environ or "JOURNAL_STREAM" in os.environ


def setup_logging(
    level: str = "INFO", fmt: str = "auto", redactor: Redactor | None = None
) -> logging.Handler:
    """Route the `healthcheck` loggers to stderr; `fmt` is auto, json or text."""
    if fmt == "auto":
        fmt = "json" if under_systemd() else "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RepeatFilter())
    handler.addFilter(RedactingFilter(redactor or Redactor()))
    for name in ("healthcheck", "alerting", "storage", "inference_probe"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    # Libraries' own warnings (asyncio's accept errors, aiohttp's request errors) go through
    # the same filters: bounded, and scrubbed of secrets.
    for name in ("asyncio", "aiohttp"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
        logger.propagate = False
    return handler
