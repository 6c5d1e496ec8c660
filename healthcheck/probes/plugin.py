"""What a probe kind adds beyond its check: its error classes, metric families and alert rules.

A kind declares its metric families and alert rules on its class (`Probe.metrics`,
`Probe.alert_rules`, `Probe.down_alertname`); the exporter and the alert evaluator ask the
registry for the kinds a configuration uses and iterate over what they declare, so nothing of
one kind lives in the core. Its own error classes (beyond the core's, which every kind shares)
it declares in its module with `error_class`, and lists in `Probe.errors` with the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from healthcheck.result import ErrorClass, ProbeResult, declare_error

ENDPOINT_LABELS = ("region", "endpoint", "kind")

# One endpoint of the kind at a scrape: its (region, endpoint, kind) labels, when its last
# check started, and what `KindMetrics.reading` kept of that check.
Reading = tuple[tuple[str, str, str], float, Any]


def error_class(name: str, meaning: str, kind: str) -> ErrorClass:
    """Declare an error class of the kind's own, at the top of its module:
    `SERVICE_UNKNOWN = error_class("service_unknown", "the server does not know ...", "grpc")`.
    `meaning` is one line for people (the README's error-class table shows it); `kind` names
    who declares it. The instance is the one of its name in the process, compared with `is`.
    A name the core or another kind declared with another meaning is an error when the kind is
    loaded (healthcheck.result.ErrorClassConflict); with the same meaning it is shared."""
    return declare_error(name, meaning, kind)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A histogram per endpoint of the kind (labels region, endpoint, kind), fed one number of
    each result in base units; `value` gives None for a result with nothing to observe."""

    name: str
    help: str
    buckets: tuple[float, ...]
    value: Callable[[ProbeResult], float | None]


@dataclass(slots=True)
class Gauges:
    """One gauge family a kind renders, as plain data: its samples by label values."""

    name: str
    help: str
    labels: tuple[str, ...] = ENDPOINT_LABELS
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, labels: Sequence[str], value: float) -> None:
        self.samples.append((tuple(labels), value))


@dataclass(frozen=True, slots=True)
class KindMetrics:
    """A kind's own families in /metrics. The functions are module-level: a scrape may be
    rendered in the daemon's helper process, which finds them by name.

    - `histograms`: counted per result, on the event loop (a few integer updates);
    - `reading`: what a scrape keeps of each endpoint's last result (plain data);
    - `gauges`: at render time, every endpoint's reading of the kind to its gauge families.
      Families of one name from several kinds are rendered as one: they share its meaning.
    """

    histograms: tuple[Histogram, ...] = ()
    reading: Callable[[ProbeResult], Any] | None = None
    gauges: Callable[[list[Reading]], Iterable[Gauges]] | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """What a kind's alert rule makes of one result: whether the alert holds, how bad (the
    alerting severities: critical, warning, info) and the text people read."""

    active: bool
    severity: str
    text: str


@dataclass(frozen=True, slots=True)
class AlertRule:
    """An alert rule of the kind's own, judged on each of its results at once (no streak).

    `name` keys the alert's state and silences (`--rule`); `alertname` is its name at
    Alertmanager, the Prometheus alert for the same condition; `judge` takes the result and
    whether its status is degraded, and gives None where the rule has nothing to say."""

    name: str
    alertname: str
    judge: Callable[[ProbeResult, bool], Finding | None]
