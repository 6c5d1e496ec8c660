"""The one result type every probe returns and everything downstream consumes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True, order=True)
class EndpointId:
    """Which endpoint: its region and its name, unique within the region. Outside the code
    (API JSON, metric and alert labels, CLI output, stored data) it is written `region/name`."""

    region: str
    name: str

    def __str__(self) -> str:
        return f"{self.region}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> EndpointId:
        """`region/name` from outside (an API query, stored alert state) back into an id: the
        region is what comes before the first `/`. ValueError when there is no `/` (a region
        alone, the daemon's own alert target)."""
        region, slash, name = text.partition("/")
        if not slash:
            raise ValueError(f"not region/endpoint: {text!r}")
        return cls(region, name)


class ErrorClass(StrEnum):
    """Why a check failed, as a small closed set users can alert and graph on."""

    TIMEOUT = "timeout"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    DNS = "dns"
    TLS = "tls"
    HTTP_STATUS = "http_status"
    BODY_TOO_LARGE = "body_too_large"
    INVALID_RESPONSE = "invalid_response"
    CONDITION_FAILED = "condition_failed"
    GPU_UNAVAILABLE = "gpu_unavailable"
    WRONG_OUTPUT = "wrong_output"
    GPU_ERROR = "gpu_error"  # the GPU itself reports a fault (uncorrected ECC errors)
    NOT_READY = "not_ready"  # an inference server or model that says it is not ready
    SERVICE_UNKNOWN = "service_unknown"  # a gRPC health service that does not know the name
    RPC_STATUS = "rpc_status"  # a gRPC call answered with an error status (as http_status)
    NO_HEARTBEAT = "no_heartbeat"  # a push endpoint's job did not ping in time
    REPORTED_DOWN = "reported_down"  # a push endpoint's job pinged with status=down
    NETWORK = "network"
    INTERNAL = "internal"
    # The prober's own trouble (out of file descriptors, buffers or memory, a canary worker it
    # stopped itself): no verdict about the target, which keeps its status, uptime and alerts.
    PROBER = "prober"


class Status(StrEnum):
    """How an endpoint or region is doing, worst last so max() picks the worst."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def rank(self) -> int:
        return _STATUS_RANK[self]


_STATUS_RANK = {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.UNHEALTHY: 2}


@dataclass(frozen=True, slots=True)
class Phases:
    """Where the time of one HTTP attempt went, in seconds; None where not measured."""

    dns: float | None = None
    connect: float | None = None
    tls: float | None = None
    first_byte: float | None = None
    total: float | None = None


@dataclass(frozen=True, slots=True)
class ConditionOutcome:
    """One condition's verdict for one check, with what was actually seen."""

    condition: str
    passed: bool
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one check of one endpoint found. Immutable; latency in seconds, time in epoch s."""

    region: str
    endpoint: str
    kind: str
    ok: bool
    latency: float
    timestamp: float
    error: ErrorClass | None = None
    error_text: str | None = None
    http_status: int | None = None
    phases: Phases | None = None
    conditions: tuple[ConditionOutcome, ...] = ()
    attempts: int = 1
    cert_expiry: float | None = None
    details: tuple[tuple[str, str | float | int | bool | None], ...] = field(default=())
    # A successful check that is still not healthy, and why (a canary on CPU, a throttling
    # GPU); latency thresholds are judged separately.
    degraded: str | None = None

    @property
    def target_id(self) -> EndpointId:
        return EndpointId(self.region, self.endpoint)


def regional_failure(oks: Iterable[bool]) -> bool:
    """Every endpoint of a region failing its last check (`oks`: one per endpoint checked): the
    one definition the status board and the regional alert rule share."""
    checked = down = 0
    for ok in oks:
        checked += 1
        down += not ok
    return checked > 0 and down == checked
