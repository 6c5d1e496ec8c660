"""Healthy / degraded / unhealthy: per endpoint from a result, per region from its endpoints."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from healthcheck.loop_lag import lag_of
from healthcheck.result import EndpointId, ProbeResult, Status, regional_failure
from healthcheck.targets import Endpoint

log = logging.getLogger("healthcheck.status")


def classify(result: ProbeResult, endpoint: Endpoint) -> Status:
    """Failure or latency over critical is unhealthy; success over warning is degraded. The
    latency judged is the target's: the time our own loop ran late, or our thread waited for a
    CPU, is not its (loop_lag)."""
    if not result.ok:
        return Status.UNHEALTHY
    latency = _target_latency(result)
    if endpoint.latency_critical is not None and latency > endpoint.latency_critical:
        return Status.UNHEALTHY
    if endpoint.latency_warning is not None and latency > endpoint.latency_warning:
        return Status.DEGRADED
    if result.degraded is not None:
        return Status.DEGRADED
    return Status.HEALTHY


def latency_note(result: ProbeResult, endpoint: Endpoint) -> str | None:
    """Why a successful check is not healthy, for people reading output."""
    limit = None
    latency = _target_latency(result)
    if endpoint.latency_critical is not None and latency > endpoint.latency_critical:
        limit = ("critical", endpoint.latency_critical)
    elif endpoint.latency_warning is not None and latency > endpoint.latency_warning:
        limit = ("warning", endpoint.latency_warning)
    if not result.ok:
        return None
    if limit is None:
        return result.degraded
    lagged = f" (less {(result.latency - latency) * 1000:.0f}ms our prober could not run)"
    return (
        f"latency {latency * 1000:.0f}ms{lagged if latency < result.latency else ''} "
        f"over {limit[0]} {limit[1] * 1000:g}ms"
    )


def _target_latency(result: ProbeResult) -> float:
    """The check's latency less the time the prober could not run as it ended (its loop's
    lateness: a wait for a CPU while the target still had the request delayed no answer)."""
    if not result.details:  # the common case: nothing noted
        return result.latency
    return max(0.0, result.latency - lag_of(result))


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """A region's aggregate: worst is not enough, so the counts come along."""

    name: str
    status: Status
    regional_failure: bool
    healthy: int
    degraded: int
    unhealthy: int

    @property
    def total(self) -> int:
        return self.healthy + self.degraded + self.unhealthy


def summarize_region(name: str, checks: Iterable[tuple[bool, Status]]) -> RegionStatus:
    """From (ok, status) per endpoint: every endpoint down is a regional failure (unhealthy);
    anything short of all-healthy is degraded, so one bad endpoint does not read as all down."""
    counts = {Status.HEALTHY: 0, Status.DEGRADED: 0, Status.UNHEALTHY: 0}
    checked = list(checks)
    for _ok, status in checked:
        counts[status] += 1
    total = len(checked)
    all_down = regional_failure(ok for ok, _status in checked)
    if all_down or (total and counts[Status.UNHEALTHY] == total):
        status = Status.UNHEALTHY
    elif counts[Status.HEALTHY] == total:
        status = Status.HEALTHY
    else:
        status = Status.DEGRADED
    return RegionStatus(
        name,
        status,
        all_down,
        counts[Status.HEALTHY],
        counts[Status.DEGRADED],
        counts[Status.UNHEALTHY],
    )


EXIT_CODES = {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.UNHEALTHY: 2}


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=lambda status: status.rank, default=Status.HEALTHY)


class StatusBoard:
    """The latest result and status of each endpoint; logs one line per change of status."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self.endpoints = {endpoint.id: endpoint for endpoint in endpoints}
        self.latest: dict[EndpointId, tuple[ProbeResult, Status]] = {}

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """A reloaded configuration: removed endpoints are forgotten, the rest keep state."""
        self.endpoints = {endpoint.id: endpoint for endpoint in endpoints}
        for endpoint_id in list(self.latest):
            if endpoint_id not in self.endpoints:
                del self.latest[endpoint_id]

    def snapshot(self) -> dict[EndpointId, tuple[ProbeResult, Status]]:
        """The latest of each endpoint as of now, for a reader in another thread: a copy of
        the mapping (cheap: ~1 ms at 10,000), whose values are immutable."""
        return dict(self.latest)

    def summary(self) -> str:
        """One line for systemd's STATUS=: how many endpoints are in each status."""
        counts = {status: 0 for status in Status}
        for _, status in list(self.latest.values()):
            counts[status] += 1
        unknown = len(self.endpoints) - sum(counts.values())
        parts = [f"{counts[s]} {s.value}" for s in Status if counts[s]]
        if unknown:
            parts.append(f"{unknown} not yet checked")
        return f"{len(self.endpoints)} endpoints: {', '.join(parts) or 'none'}"

    def record(self, result: ProbeResult) -> Status | None:
        """Note a result; its status, or None for an endpoint no longer configured."""
        endpoint_id = result.target_id  # one id made per result, not three
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:  # removed by a reload while its check was in flight
            return None
        status = classify(result, endpoint)
        previous = self.latest.get(endpoint_id)
        self.latest[endpoint_id] = (result, status)
        if previous is None or previous[1] is not status:
            was = previous[1].value if previous else "unknown"
            reason = result.error_text or latency_note(result, endpoint) or ""
            log.info(
                "%s %s -> %s%s",
                endpoint.id,
                was,
                status.value,
                f" ({reason})" if reason else "",
                extra={
                    "event": "status_change",
                    "region": endpoint.region,
                    "endpoint": endpoint.name,
                    "kind": endpoint.kind,
                    "status": status.value,
                    "previous": was,
                    "error": result.error.value if result.error else None,
                    "latency_ms": round(result.latency * 1000, 1),
                },
            )
        return status
