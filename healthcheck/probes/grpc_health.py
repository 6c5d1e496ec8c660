"""gRPC check: ask a server's standard health service (`grpc.health.v1.Health/Check`) whether a
service is SERVING, in plaintext or TLS: over a fresh connection per check (its latency is a new
client's: connect, HTTP/2 and TLS handshakes, the call), or with `keepalive: true` over one kept
from check to check (a long-lived client's: the call alone, but for the first check and the
first after a failure). A kept channel costs a third of a fresh one's CPU (bench/README.md).

grpcio is imported on the first check, not with this module: `check-config` of a grpc endpoint
does not pay its 0.18 s import (measured on the dev VM).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.probes.base import NETWORK_ERRORS, Probe
from healthcheck.probes.plugin import error_class
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.schema import FieldError, Option, TlsOptions
from healthcheck.targets import Endpoint, ProbeSettings

SERVING = "SERVING"
HEALTH_METHOD = "grpc.health.v1.Health/Check"


@dataclass(frozen=True, slots=True)
class GrpcSettings(ProbeSettings):
    address: tuple[str, int]
    service: str = ""  # "": the server as a whole
    tls: TlsOptions | None = None  # None: plaintext (h2c)
    keepalive: bool = False  # False: a channel (and connection) of its own per check


# A kept channel no check has used for this many of its endpoints' longest interval is closed:
# its endpoints were removed by a reload (or the daemon stopped checking them).
IDLE_INTERVALS = 2.0
SWEEP_EVERY = 30.0  # seconds between looks for idle kept channels


@dataclass(eq=False)
class _Kept:
    """A channel kept for the keepalive checks of one (address, TLS options)."""

    channel: Any  # grpc.aio.Channel
    stub: Any  # its HealthStub
    used: float  # when a check last took it (the probe's clock)
    interval: float  # the longest interval of the endpoints that use it
    users: int = 0  # checks in flight on it
    retired: bool = False  # closed once its last check in flight is done


def _service(value: Any) -> str:
    name = schema.text(value)
    if any(ch.isspace() for ch in name):
        raise ValueError(f"expected a service name like package.Service, got {name!r}")
    return name


# The kind's own error classes (the inference canary over gRPC answers with them too).
NOT_READY = error_class(
    "not_ready", "the service or model says it is not ready (NOT_SERVING, not ready)", "grpc"
)
SERVICE_UNKNOWN = error_class(
    "service_unknown", "the gRPC health service does not know the service name", "grpc"
)
RPC_STATUS = error_class("rpc_status", "a gRPC call answered with an error status", "grpc")

# The transport's failure, which grpc gives only as the text of an UNAVAILABLE status: the words
# of its resolver, TCP and TLS layers (grpc core 1.6x-1.8x) to our classes.
_TRANSPORT_WORDS = (
    ("connection refused", ErrorClass.CONNECTION_REFUSED, "connection refused"),
    ("hostname verification", ErrorClass.TLS, "certificate does not match the server name"),
    ("certificate_verify_failed", ErrorClass.TLS, "certificate verify failed"),
    ("verification check failed", ErrorClass.TLS, "certificate verify failed"),
    ("handshake", ErrorClass.TLS, "TLS handshake failed"),
    ("ssl", ErrorClass.TLS, "TLS handshake failed"),
    ("dns resolution failed", ErrorClass.DNS, "could not resolve the host"),
    ("connection reset", ErrorClass.CONNECTION_RESET, "connection reset by peer"),
    ("socket closed", ErrorClass.CONNECTION_RESET, "connection closed by the server"),
)


def classify_rpc_error(code: str, details: str, service: str) -> tuple[ErrorClass, str]:
    """A failed Health/Check call (its status code name and details) to an error class."""
    shown = details.strip()[:200]
    if code == "UNAVAILABLE":
        lowered = details.lower()
        for words, error, text in _TRANSPORT_WORDS:
            if words in lowered:
                return error, text
        return ErrorClass.NETWORK, f"unavailable: {shown}"
    if code == "DEADLINE_EXCEEDED":
        return ErrorClass.TIMEOUT, "deadline exceeded"
    if code == "NOT_FOUND":  # what the reference health servicer answers for an unknown name
        return SERVICE_UNKNOWN, f"health service does not know service {service!r}"
    if code == "UNIMPLEMENTED":
        return RPC_STATUS, f"UNIMPLEMENTED: the server has no {HEALTH_METHOD}"
    return RPC_STATUS, f"{code}: {shown}" if shown else code


class GrpcProbe(Probe):
    """Health/Check over a channel of its own per check (a fresh connection, as a new client),
    or over one kept per (address, TLS options) with `keepalive`."""

    kind = "grpc"
    settings = GrpcSettings
    options = {
        "address": Option(schema.address, help="host:port of the gRPC server"),
        "service": Option(_service, "", help="service name to ask about; '' for the server"),
        "tls": Option(
            schema.optional(schema.tls_options), None, help="TLS (verify, ca_file, server_name)"
        ),
        "keepalive": Option(
            schema.boolean,
            False,
            help="keep the connection from check to check; false: a fresh one per check",
        ),
    }
    placeholders = frozenset({"CONNECTED", "RESPONSE_TIME", "GRPC_STATUS"})
    errors = (
        *NETWORK_ERRORS,
        NOT_READY,
        SERVICE_UNKNOWN,
        RPC_STATUS,
        ErrorClass.CONDITION_FAILED,
    )

    @classmethod
    def resolve(cls, settings: ProbeSettings, base_dir: Path) -> ProbeSettings:
        tls = settings.narrow(GrpcSettings).tls
        if tls is not None and not tls.verify:
            raise FieldError(
                "tls.verify",
                "grpc endpoints always verify the server's certificate (grpcio cannot skip "
                "it); trust a private CA with tls.ca_file instead",
            )
        return settings

    async def start(self) -> None:
        self._roots: dict[str, bytes] = {}
        self._kept: dict[tuple[str, TlsOptions | None], _Kept] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Future[None]] = set()  # retired channels being closed

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        kept, self._kept = list(self._kept.values()), {}
        for one in kept:
            await one.channel.close()
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _channel(self, where: str, tls: TlsOptions | None) -> Any:
        """A new channel to `where` (grpc.aio.Channel); OSError: the ca_file cannot be read."""
        import grpc

        # Its own subchannel pool: channels otherwise share connections process-wide.
        options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
        if tls is None:
            return grpc.aio.insecure_channel(where, options=options)
        roots = self._root_certificates(tls.ca_file)
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        return grpc.aio.secure_channel(where, credentials, options=options)

    def _take(self, where: str, target: Endpoint, tls: TlsOptions | None) -> _Kept:
        """The kept channel for (where, tls), made on its first check; taken by one more check."""
        from grpc_health.v1 import health_pb2_grpc

        kept = self._kept.get((where, tls))
        if kept is None:
            channel = self._channel(where, tls)
            kept = _Kept(channel, health_pb2_grpc.HealthStub(channel), 0.0, 0.0)
            self._kept[where, tls] = kept
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.create_task(self._sweep_every(), name="grpc-kept-sweep")
        kept.users += 1
        kept.used = self.clock()
        kept.interval = max(kept.interval, target.interval)
        return kept

    def _give_back(self, kept: _Kept, failed: bool) -> None:
        """After a failed check the next connects afresh: a server gone and back is never
        judged through grpc's reconnect backoff, nor a hung connection kept."""
        kept.users -= 1
        if failed and not kept.retired:
            kept.retired = True
            for key, one in list(self._kept.items()):
                if one is kept:
                    del self._kept[key]
        if kept.retired and kept.users == 0:
            self._close_apart(kept)

    def _close_apart(self, kept: _Kept) -> None:
        """Close a retired channel apart from the check that gave it back (which may be being
        cancelled by its timeout)."""
        closing = asyncio.ensure_future(kept.channel.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def sweep(self) -> int:
        """Close the kept channels no check has taken for IDLE_INTERVALS of their endpoints'
        longest interval (the endpoints of a reload's removals); how many were closed."""
        now = self.clock()
        idle = [
            (key, kept)
            for key, kept in self._kept.items()
            if kept.users == 0 and now - kept.used > IDLE_INTERVALS * kept.interval
        ]
        for key, kept in idle:
            del self._kept[key]
            kept.retired = True
            self._close_apart(kept)
        return len(idle)

    async def _sweep_every(self) -> None:
        while self._kept:
            await asyncio.sleep(SWEEP_EVERY)
            self.sweep()

    async def attempt(self, target: Endpoint) -> ProbeResult:
        # grpc core logs each failed connection to stderr itself; the result says it already.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        import grpc  # here, not at the top: see the module's docstring
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        settings = target.settings.narrow(GrpcSettings)
        started = time.perf_counter()
        timestamp = self.clock()
        host, port = settings.address
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        request = health_pb2.HealthCheckRequest(service=settings.service)
        kept = channel = None
        try:
            if settings.keepalive:
                kept = self._take(where, target, settings.tls)
                stub = kept.stub
            else:
                channel = self._channel(where, settings.tls)
                stub = health_pb2_grpc.HealthStub(channel)
        except OSError as exc:
            ca_file = settings.tls.ca_file if settings.tls else None
            text = f"cannot load ca_file {ca_file!r}: {exc.strerror or exc}"
            return self.failed(target, ErrorClass.TLS, text, started, timestamp)
        failed = True
        try:
            try:
                response = await stub.Check(request)
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
                error, text = classify_rpc_error(code, exc.details() or "", settings.service)
                return self.failed(target, error, text, started, timestamp)
            failed = False
        finally:
            if kept is not None:
                self._give_back(kept, failed)
            elif channel is not None:
                await channel.close()
        status = str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
        return self.judged(
            target,
            ConditionContext(connected=True, values={"GRPC_STATUS": status}),
            started,
            timestamp,
            verdict=_verdict(status, settings.service, target),
            details=(("grpc_status", status),),
        )

    def _root_certificates(self, ca_file: str | None) -> bytes | None:
        """The PEM CAs to trust (None: grpc's bundled roots), read once per probe instance."""
        if ca_file is None:
            return None
        if ca_file not in self._roots:
            self._roots[ca_file] = Path(ca_file).read_bytes()
        return self._roots[ca_file]


def _verdict(status: str, service: str, target: Endpoint) -> tuple[ErrorClass, str] | None:
    """What the answer itself says, unless the conditions read [GRPC_STATUS] and so decide."""
    if status == SERVING or any("GRPC_STATUS" in c.placeholders for c in target.conditions):
        return None
    named = f"service {service!r}" if service else "the server"
    if status == "SERVICE_UNKNOWN":
        return SERVICE_UNKNOWN, f"health service does not know {named}"
    return NOT_READY, f"{named} is {status}"
