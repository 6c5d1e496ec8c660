"""gRPC check: ask a server's standard health service (`grpc.health.v1.Health/Check`) whether a
service is SERVING, over a fresh connection, in plaintext or TLS.

grpcio is imported on the first check, not with this module: `check-config` of a grpc endpoint
does not pay its 0.18 s import (measured on the dev VM).
"""

from __future__ import annotations

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
    """Health/Check over a channel of its own per check (a fresh connection, as a new client)."""

    kind = "grpc"
    settings = GrpcSettings
    options = {
        "address": Option(schema.address, help="host:port of the gRPC server"),
        "service": Option(_service, "", help="service name to ask about; '' for the server"),
        "tls": Option(
            schema.optional(schema.tls_options), None, help="TLS (verify, ca_file, server_name)"
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
        # Its own subchannel pool: channels otherwise share connections process-wide.
        options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
        if settings.tls is None:
            channel = grpc.aio.insecure_channel(where, options=options)
        else:
            try:
                roots = self._root_certificates(settings.tls.ca_file)
            except OSError as exc:
                text = f"cannot load ca_file {settings.tls.ca_file!r}: {exc.strerror or exc}"
                return self.failed(target, ErrorClass.TLS, text, started, timestamp)
            if settings.tls.server_name:
                options.append(("grpc.ssl_target_name_override", settings.tls.server_name))
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            channel = grpc.aio.secure_channel(where, credentials, options=options)
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=settings.service)
            try:
                response = await stub.Check(request)
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
                error, text = classify_rpc_error(code, exc.details() or "", settings.service)
                return self.failed(target, error, text, started, timestamp)
        finally:
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
