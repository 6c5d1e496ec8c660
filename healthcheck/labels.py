"""Operator labels (`labels: {team: payments, tier: "1"}`): their names and values, checked.

A label goes on every alert (Alertmanager labels, the message bodies) and may be matched by a
route; only those named in `exporter.metric_labels` go on metrics. Names follow Prometheus's
label name syntax and never take a name this daemon sets itself.
"""

from __future__ import annotations

import re
from typing import Any

from healthcheck.schema import FieldError
from healthcheck.secrets import Secret

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Labels the daemon sets on its own alerts and series, and those Prometheus gives meaning to:
# an operator label of one of these names would be overwritten or would overwrite ours.
RESERVED = frozenset(
    {
        "alertname",
        "severity",
        "region",
        "endpoint",
        "kind",
        "vantage",
        "rule",
        "job",
        "instance",
        "le",
        "quantile",
        "window",
        "result",
        "error",
        "phase",
        "status",
        "channel",
    }
)
MAX_VALUE = 256  # characters: a label is a name for people, not a document

Labels = tuple[tuple[str, str], ...]  # sorted by name


def label_name(value: Any) -> str:
    """A Prometheus label name that is none of ours."""
    if not isinstance(value, str) or not LABEL_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a label name: letters, digits and '_', not starting with a digit"
        )
    if value.startswith("__"):
        raise ValueError(f"{value!r}: names starting with '__' are reserved by Prometheus")
    if value in RESERVED:
        raise ValueError(
            f"{value!r} is a label healthcheck sets itself "
            f"(reserved: {', '.join(sorted(RESERVED))})"
        )
    return value


def label_value(value: Any) -> str:
    """Text, or a number written without quotes (`tier: 1` is the text "1")."""
    if isinstance(value, Secret):
        raise ValueError("a label is shown in every alert: it cannot come from ${ENV}")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a text value, got {value!r}")
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_VALUE:
        raise ValueError(f"at most {MAX_VALUE} characters, got {len(text)}")
    return text


def read_labels(value: Any) -> dict[str, str]:
    """A `labels:` mapping; errors name the label (`labels.Team-x`)."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of label names to values, got {value!r}")
    found = {}
    for name, item in value.items():
        try:
            found[label_name(name)] = label_value(item)
        except ValueError as exc:
            raise FieldError(str(name), str(exc)) from None
    return found


def frozen(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))
