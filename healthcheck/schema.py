"""Typed readers for configuration values; each raises ValueError saying what was expected."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from healthcheck.durations import format_duration, parse_duration
from healthcheck.secrets import Secret

REQUIRED: Any = object()

Reader = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Option:
    """One key a probe kind (or every kind) accepts: how to read it and its default."""

    read: Reader
    default: Any = REQUIRED
    help: str = ""


def _type_name(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def text(value: object) -> str:
    if isinstance(value, Secret):
        return value.reveal()
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_type_name(value)} {value!r}")
    return value


def secret(value: object) -> Secret:
    """Any text kept as a Secret, whether or not it came from the environment."""
    return value if isinstance(value, Secret) else Secret(text(value))


def ratio(value: object) -> float:
    """`99.9%`, `99.9` (taken as percent when above 1) or `0.999` to a ratio in (0, 1]."""
    raw = text(value).strip() if isinstance(value, str | Secret) else value
    percent = isinstance(raw, str) and raw.endswith("%")
    try:
        if not isinstance(raw, str | bytes | int | float):
            raise TypeError(raw)
        number = float(raw.rstrip("%") if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        raise ValueError(f"expected a ratio like 99.9% or 0.999, got {value!r}") from None
    if percent or number > 1:
        number /= 100
    if not 0 < number <= 1:
        raise ValueError(f"expected a ratio between 0 and 100%, got {value!r}")
    return number


DAY = 86400.0
LONGEST = 7 * DAY  # a duration key with no limit of its own: alert windows, holds, reminders


def duration(value: object) -> float:
    """`30s`, `5m`, `250ms`; a bare number is taken as seconds; at most a week."""
    return _duration(value, LONGEST)


def duration_up_to(maximum: float) -> Reader:
    """A duration reader that refuses more than `maximum` seconds."""
    return lambda value: _duration(value, maximum)


def _duration(value: object, maximum: float) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 5m or 250ms, got {value!r}")
    seconds = float(value) if isinstance(value, int | float) else parse_duration(text(value))
    if seconds != seconds:  # NaN compares false with everything, so would pass both checks
        raise ValueError(f"expected a duration like 30s, 5m or 250ms, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"must be greater than zero, got {value!r}")
    if seconds > maximum:
        raise ValueError(f"must be at most {format_duration(maximum)}, got {_shown(value)}")
    return seconds


def _shown(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else f"{shown[:37]}..."


def integer(minimum: int | None = None, maximum: int | None = None) -> Reader:
    def read(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {_type_name(value)} {value!r}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")
        return value

    return read


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_type_name(value)} {value!r}")
    return value


def choice(*allowed: str) -> Callable[[Any], str]:
    def read(value: object) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        chosen: str = value  # equal to one of `allowed`
        return chosen

    return read


_SIZE = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 10**6,
    "mib": 2**20,
    "gb": 10**9,
    "gib": 2**30,
}


def size(value: object) -> int:
    """Bytes: an integer, or `512KiB`, `1MiB`, `10MB`."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        match = _SIZE.fullmatch(text(value).strip())
        if not match:
            raise ValueError(f"expected a size like 1MiB, 512KiB or 1048576, got {value!r}")
        number = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    if number <= 0:
        raise ValueError(f"must be greater than zero, got {value!r}")
    return number


def http_url(value: object) -> str:
    url = text(value)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("not a valid URL: it must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("not a valid URL: it has no host name")
    if any(ch.isspace() for ch in url):
        raise ValueError("not a valid URL: it contains whitespace")
    return url


def listen_address(value: object) -> tuple[str, int]:
    """Like `address`, but port 0 (any free port) is allowed: the daemon logs the one it got."""
    return address(value, lowest_port=0)


def address(value: object, lowest_port: int = 1) -> tuple[str, int]:
    """`host:port` or `[v6addr]:port` to (host, port)."""
    raw = text(value).strip()
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^\s:/\[\]]+):(\d+)", raw)
    if not match:
        raise ValueError(f"expected host:port (IPv6 as [addr]:port), got {raw!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not lowest_port <= port <= 65535:
        raise ValueError(f"port must be between {lowest_port} and 65535, got {port}")
    return host, port


def hostname(value: object) -> str:
    name = text(value).strip()
    if not name or len(name) > 253 or not re.fullmatch(r"[A-Za-z0-9_.-]+|[0-9A-Fa-f:]+", name):
        raise ValueError(f"expected a host name like api.example.com, got {value!r}")
    return name


def headers(value: object) -> dict[str, str | Secret]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of header names to values, got {_type_name(value)}")
    result: dict[str, str | Secret] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if isinstance(item, bool) or not isinstance(item, str | int | float | Secret):
            raise ValueError(f"header {name!r} must be a string, got {_type_name(item)}")
        if not isinstance(item, Secret):
            item = str(item)
        if "\n" in reveal_text(item) or "\r" in reveal_text(item):
            raise ValueError(f"header {name!r} must not contain a line break")
        result[name] = item
    return result


def reveal_text(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


def status_codes(value: object) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    codes = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 100 <= item <= 599:
            raise ValueError(f"expected HTTP status codes between 100 and 599, got {item!r}")
        codes.append(item)
    if not codes:
        raise ValueError("expected at least one HTTP status code")
    return tuple(codes)


def optional(reader: Reader) -> Reader:
    def read(value: object) -> Any:
        return None if value is None else reader(value)

    return read


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How a probe checks the server's certificate."""

    verify: bool = True
    ca_file: str | None = None
    server_name: str | None = None


class FieldError(ValueError):
    """A problem with one key inside a nested mapping; `key` extends the key path."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def sub_mapping(value: object, keys: Mapping[str, Reader]) -> dict[str, Any]:
    """Read a nested mapping key by key; unknown keys are refused by name."""
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping with keys {', '.join(keys)}, got {_type_name(value)}")
    result = {}
    for key, item in value.items():
        reader = keys.get(key)
        if reader is None:
            raise FieldError(str(key), f"unknown key; expected one of {', '.join(keys)}")
        try:
            result[key] = reader(item)
        except FieldError as exc:
            separator = "" if exc.key.startswith("[") else "."
            raise FieldError(f"{key}{separator}{exc.key}", exc.message) from None
        except ValueError as exc:
            raise FieldError(key, str(exc)) from None
    return result


_TLS_KEYS: dict[str, Reader] = {
    "verify": boolean,
    "ca_file": optional(text),
    "server_name": optional(hostname),
}


def tls_options(value: object) -> TlsOptions:
    return TlsOptions(**sub_mapping(value, _TLS_KEYS))


LATENCY_KEYS: dict[str, Reader] = {
    "warning": optional(duration_up_to(DAY)),
    "critical": optional(duration_up_to(DAY)),
}
