"""The validated, frozen shape of a configuration: regions, endpoints and daemon settings."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from healthcheck.alert_settings import AlertingSettings, AlertOverrides
from healthcheck.errors import ConfigError
from healthcheck.labels import Labels
from healthcheck.result import EndpointId
from healthcheck.secrets import Secret, UnsetVariable

if TYPE_CHECKING:
    from healthcheck.conditions import Condition


S = TypeVar("S", bound="ProbeSettings")


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """What every probe kind's own frozen settings dataclass derives from (HttpSettings,
    TcpSettings, ...): the keys of its kind, already validated."""

    def narrow(self, kind: type[S]) -> S:
        """These settings as `kind`, the probe kind's own type; TypeError for another's."""
        if not isinstance(self, kind):
            raise TypeError(f"{type(self).__name__} settings, not {kind.__name__}")
        return self


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One thing to check in one region, with every default already merged in."""

    region: str
    name: str
    kind: str
    interval: float
    timeout: float
    retries: int
    latency_warning: float | None
    latency_critical: float | None
    conditions: tuple[Condition, ...]
    settings: ProbeSettings  # the kind's own: narrow() to its type
    alerts: AlertOverrides = field(default_factory=AlertOverrides)
    labels: Labels = ()  # the operator's (`labels:`), merged down; sorted by name
    # What this endpoint needs to work: `region/endpoint` (that endpoint's down alert) or a
    # bare `region` (that region's regional failure). While one fires, this endpoint's
    # alerts are held behind it.
    depends_on: tuple[str, ...] = ()
    # How often it is checked, where its kind looks more often than its interval (push: the
    # interval is how often a ping is due, and a missing one is noticed within this); None:
    # every interval.
    cadence: float | None = None
    # Its key, made once: the board, the exporter, the scheduler and the alert engine each key
    # a dict on it (a new one per `.id` was 5 objects an endpoint, 4.8 MB at 20,000).
    _id: EndpointId = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_id", EndpointId(self.region, self.name))

    @property
    def id(self) -> EndpointId:
        return self._id

    @property
    def every(self) -> float:
        """Seconds between two checks."""
        return self.cadence or self.interval

    @property
    def budget(self) -> float:
        """The most one check may take, retries and backoff included; never past the interval."""
        return min(self.interval, self.timeout * (self.retries + 1))


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    max_concurrency: int = 500
    rate_limit: int = 2000  # probe starts per second, across all endpoints
    jitter: float = 0.1  # fraction of the interval each run may move by, so probes never align
    tick: float = 0.05  # checks due within half of this of each other start in one loop wake
    workers: int | None = None  # probe worker processes; None: one per core (1: in-process)
    # A worker whose dispatcher has not woken for this long is wedged: killed, restarted. Well
    # inside systemd's WatchdogSec=30s, which would otherwise restart the whole daemon.
    wedged_after: float = 10.0
    stop_grace: float = 5.0  # how long checks in flight at a stop get to finish
    # With probe workers, the daemon's own process (API, /metrics, storage, alerting) runs this
    # much nicer than its workers, so its load yields the CPU to the probes (0: the same).
    control_plane_nice: int = 5


@dataclass(frozen=True, slots=True)
class StorageSettings:
    path: str | None = None  # None: $STATE_DIRECTORY/healthcheck.db under systemd, else ./
    retention_raw: float = 48 * 3600.0
    retention_raw_rows: int | None = None  # most raw rows per endpoint, besides the age limit
    retention_rollups: float = 400 * 86400.0
    max_queue: int = 50_000  # results held in memory while the database cannot be written
    busy_timeout: float = 5.0  # how long a write waits on another process's lock on the file


@dataclass(frozen=True, slots=True)
class SlaSettings:
    target: float = 0.999  # the uptime ratio regions are held to in the SLA API


@dataclass(frozen=True, slots=True)
class ExporterSettings:
    """The daemon's HTTP server: /metrics, the JSON API and the status page."""

    host: str = "127.0.0.1"  # loopback unless configured: never all interfaces by default
    port: int = 9115
    bearer_token: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    protect_metrics: bool = False  # with auth set: whether /metrics needs it too
    max_connections: int = 256  # at most; less when the open-file limit is low (connections.py)
    read_timeout: float = 10.0  # a request's headers, and a body, must arrive within this
    # Also expose probe_success, probe_duration_seconds, probe_http_status_code and
    # probe_ssl_earliest_cert_expiry as blackbox_exporter does, for dashboards and alerts made
    # for it.
    blackbox_names: bool = False
    # Operator labels added to the per-endpoint series: each one multiplies nothing (one value
    # per endpoint) but is a column on every series, so the operator picks them.
    metric_labels: tuple[str, ...] = ()
    # Where people reach this daemon's pages (behind a proxy): alerts link
    # {public_url}/endpoints/{region}/{name}.
    public_url: str | None = None
    public_badges: bool = False  # /badges/ without auth (README embeds cannot send it)

    @property
    def auth_required(self) -> bool:
        return self.bearer_token is not None or self.username is not None


def shard_hash(endpoint_id: EndpointId) -> int:
    """A stable 64-bit hash of an endpoint id (of its `region/name`, so the split is the one
    every release made): `--shard` splits by it, and the probe workers by its upper half (see
    healthcheck.workers.owner)."""
    text = str(endpoint_id).encode()
    digest = hashlib.blake2b(text, digest_size=8, person=b"shard").digest()
    return int.from_bytes(digest)


def shard_slot(endpoint_id: EndpointId, count: int) -> int:
    """Which of `count` shards (0-based) an endpoint id falls in."""
    return shard_hash(endpoint_id) % count


@dataclass(frozen=True, slots=True)
class Shard:
    """`--shard K/N`: this daemon checks the endpoints whose id hashes to K of N (1-based).
    The hash is of the id alone, so every daemon given the same file agrees on the split."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, slash, count = text.partition("/")
        try:
            shard = cls(int(index), int(count)) if slash else None
        except ValueError:
            shard = None
        if shard is None or not 1 <= shard.index <= shard.count:
            raise ValueError(f"--shard takes K/N with 1 <= K <= N (e.g. 2/4), got {text!r}")
        return shard

    def owns(self, endpoint_id: EndpointId) -> bool:
        return shard_slot(endpoint_id, self.count) == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, slots=True)
class Config:
    """A whole validated configuration; `source` is the file it came from."""

    source: str
    regions: tuple[Region, ...]
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    exporter: ExporterSettings = field(default_factory=ExporterSettings)
    alerting: AlertingSettings = field(default_factory=AlertingSettings)
    sla_target: float = 0.999  # the uptime ratio regions are held to in the SLA API
    secrets: frozenset[str] = frozenset()
    # `${VAR}`s not set, in a configuration loaded for a command that never uses secrets.
    unset: tuple[UnsetVariable, ...] = ()

    def require_environment(self) -> None:
        """Refuse to probe or send with a configuration whose `${VAR}`s are not all set."""
        if self.unset:
            first = self.unset[0]
            raise ConfigError(first.describe(), file=self.source, path=first.path)

    def endpoints(self) -> Iterator[Endpoint]:
        for region in self.regions:
            yield from region.endpoints

    def only_regions(self, names: set[str]) -> Config:
        """The same configuration limited to the named regions."""
        kept = tuple(region for region in self.regions if region.name in names)
        return replace(self, regions=kept)

    def only_shard(self, shard: Shard) -> Config:
        """This shard's endpoints (regions left empty are dropped), and, when there is more
        than one shard, its own database file and exporter port so N daemons can share a
        host and one configuration file: `x.db` -> `x.shard-2-of-4.db`, port + (K - 1)."""
        regions = []
        for region in self.regions:
            mine = tuple(e for e in region.endpoints if shard.owns(e.id))
            if mine:
                regions.append(replace(region, endpoints=mine))
        if shard.count == 1:
            return replace(self, regions=tuple(regions))
        storage = self.storage
        if storage.path:
            stem, dot, suffix = storage.path.rpartition(".")
            base, ext = (stem, f".{suffix}") if dot and "/" not in suffix else (storage.path, "")
            storage = replace(storage, path=f"{base}.shard-{shard.index}-of-{shard.count}{ext}")
        exporter = self.exporter
        if exporter.port:
            exporter = replace(exporter, port=exporter.port + shard.index - 1)
        return replace(self, regions=tuple(regions), storage=storage, exporter=exporter)
