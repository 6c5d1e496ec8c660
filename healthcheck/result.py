"""The one result type every probe returns and everything downstream consumes."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar


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


class ErrorClassConflict(ValueError):
    """An error class declared again with another meaning than it already has."""


@dataclass(frozen=True, slots=True)
class Declaration:
    """What an error class means (one line, for people) and who declared it first (the core,
    or a kind's module)."""

    meaning: str
    owner: str


# name -> its one instance in this process; name -> its declaration, where one was made.
_INTERNED: dict[str, ErrorClass] = {}
_DECLARED: dict[str, Declaration] = {}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
CORE = "the core"


class ErrorClass(str):
    """Why a check failed: a short name users alert and graph on, the same string in storage,
    the `error` metric label, the API, alert texts and `--once` output.

    The set is open: the core declares the classes every kind shares (below), and a probe kind
    declares its own in its module with `declare_error` (healthcheck.probes.plugin.error_class).
    There is one instance per name in a process, so `result.error is ErrorClass.TIMEOUT` holds,
    and a name that arrives from elsewhere (a probe worker's result, a pickle) is the same one.
    A name nobody in this process declared (a kind it has not imported) is still an error
    class, `declared` False and `meaning` None; a later declaration fills in that instance.
    Storage readers keep a stored name as the plain string it is, whichever kind wrote it."""

    __slots__ = ()

    TIMEOUT: ClassVar[ErrorClass]
    CONNECTION_REFUSED: ClassVar[ErrorClass]
    CONNECTION_RESET: ClassVar[ErrorClass]
    DNS: ClassVar[ErrorClass]
    TLS: ClassVar[ErrorClass]
    HTTP_STATUS: ClassVar[ErrorClass]
    BODY_TOO_LARGE: ClassVar[ErrorClass]
    INVALID_RESPONSE: ClassVar[ErrorClass]
    CONDITION_FAILED: ClassVar[ErrorClass]
    NETWORK: ClassVar[ErrorClass]
    INTERNAL: ClassVar[ErrorClass]
    PROBER: ClassVar[ErrorClass]

    def __new__(cls, name: str) -> ErrorClass:
        found = _INTERNED.get(name)
        if found is None:
            plain = str.__str__(name)  # never keep a subclass's instance as the name
            # setdefault: two threads meeting a new name at once still share one instance
            found = _INTERNED.setdefault(plain, super().__new__(cls, plain))
        return found

    def __reduce__(self) -> tuple[type[ErrorClass], tuple[str]]:
        # Unpickled as the receiving process's own instance of the name.
        return ErrorClass, (self.value,)

    def __copy__(self) -> ErrorClass:
        return self

    def __deepcopy__(self, memo: object) -> ErrorClass:
        return self

    def __repr__(self) -> str:
        return f"ErrorClass({self.value!r})"

    @property
    def value(self) -> str:
        """The name as a plain str (what storage, labels and JSON carry)."""
        return str.__str__(self)

    @property
    def declaration(self) -> Declaration | None:
        return _DECLARED.get(self.value)

    @property
    def declared(self) -> bool:
        return self.value in _DECLARED

    @property
    def meaning(self) -> str | None:
        found = _DECLARED.get(self.value)
        return found.meaning if found else None

    @property
    def core(self) -> bool:
        """Declared by the core: a class every kind shares."""
        found = _DECLARED.get(self.value)
        return found is not None and found.owner == CORE


def declare_error(name: str, meaning: str, owner: str) -> ErrorClass:
    """Declare the error class `name` with its one-line `meaning`, by `owner` (a kind's name or
    module), and give its instance. Declaring it again with the same meaning is fine (two
    kinds sharing one); with another meaning it is an ErrorClassConflict naming both."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"error class {name!r} of {owner}: use lower-case letters, digits and '_' (max 63)"
        )
    if not meaning or meaning != meaning.strip() or "\n" in meaning:
        raise ValueError(f"error class {name!r} of {owner}: give its meaning as one line of text")
    known = _DECLARED.setdefault(name, Declaration(meaning, owner))
    if known.meaning != meaning:
        raise ErrorClassConflict(
            f"error class {name!r} of {owner} means {meaning!r}, but {known.owner} already "
            f"declared it as {known.meaning!r}; give the kind's class a name of its own"
        )
    return ErrorClass(name)


def declared_errors() -> dict[ErrorClass, Declaration]:
    """Every error class declared in this process so far (the core's, and those of the kinds
    imported), by name."""
    return {ErrorClass(name): declaration for name, declaration in sorted(_DECLARED.items())}


def _core(name: str, meaning: str) -> ErrorClass:
    return declare_error(name, meaning, CORE)


ErrorClass.TIMEOUT = _core("timeout", "no answer within the timeout")
ErrorClass.CONNECTION_REFUSED = _core("connection_refused", "the target refused the connection")
ErrorClass.CONNECTION_RESET = _core(
    "connection_reset", "the connection was reset or closed before a full answer"
)
ErrorClass.DNS = _core("dns", "the name did not resolve")
ErrorClass.TLS = _core("tls", "the TLS handshake or certificate check failed")
ErrorClass.HTTP_STATUS = _core("http_status", "an answer with an unexpected status")
ErrorClass.BODY_TOO_LARGE = _core("body_too_large", "the answer was over the max_body cap")
ErrorClass.INVALID_RESPONSE = _core(
    "invalid_response", "an answer that does not follow the protocol"
)
ErrorClass.CONDITION_FAILED = _core("condition_failed", "a condition of the endpoint failed")
ErrorClass.NETWORK = _core("network", "another network error (unreachable, no route)")
ErrorClass.INTERNAL = _core("internal", "an unexpected error in the check itself")
# The prober's own trouble (out of file descriptors, buffers or memory, a canary worker it
# stopped itself): no verdict about the target, which keeps its status, uptime and alerts.
ErrorClass.PROBER = _core("prober", "the prober's own trouble, no verdict about the target")


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
