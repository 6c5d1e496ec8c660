"""gRPC health probe against real grpc.aio servers on loopback, plaintext and TLS (trustme)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from healthcheck.conditions import PLACEHOLDERS, parse_condition
from healthcheck.probes.grpc_health import (
    NOT_READY,
    RPC_STATUS,
    SERVICE_UNKNOWN,
    GrpcProbe,
    GrpcSettings,
)
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.schema import TlsOptions

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


class UnknownEverything(health_pb2_grpc.HealthServicer):
    """A health service that answers SERVICE_UNKNOWN instead of the NOT_FOUND status."""

    async def Check(self, request, context):
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)


class NeverAnswers(health_pb2_grpc.HealthServicer):
    async def Check(self, request, context):
        await asyncio.Event().wait()


Start = Callable[..., Awaitable[int]]


@pytest.fixture
async def grpc_server() -> AsyncIterator[Start]:
    """Start grpc.aio servers on a free loopback port with the given health servicer (the
    reference one by default, `None` for no health service at all); return their ports."""
    servers: list[grpc.aio.Server] = []

    async def start(servicer=HealthServicer, credentials=None) -> int:
        server = grpc.aio.server()
        if servicer is not None:
            health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        if credentials is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        servers.append(server)
        return port

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(None)


@pytest.fixture
async def health() -> HealthServicer:
    servicer = HealthServicer()
    await servicer.set("", SERVING)
    await servicer.set("shop.Cart", SERVING)
    await servicer.set("shop.Pay", NOT_SERVING)
    return servicer


@pytest.fixture
def grpc_target(endpoint):
    def make(port, *, service="", tls=None, conditions=(), timeout=5.0):
        target = endpoint("grpc", GrpcSettings(("127.0.0.1", port), service, tls), timeout=timeout)
        known = (*PLACEHOLDERS, "GRPC_STATUS")
        parsed = tuple(parse_condition(text, known) for text in conditions)
        return dataclasses.replace(target, conditions=parsed)

    return make


async def check(target) -> ProbeResult:
    probe = GrpcProbe()
    await probe.start()
    try:
        return await probe.run(target)
    finally:
        await probe.close()


@pytest.mark.parametrize(
    ("service", "ok", "error", "text"),
    [
        ("", True, None, None),
        ("shop.Cart", True, None, None),
        ("shop.Pay", False, NOT_READY, "service 'shop.Pay' is NOT_SERVING"),
        (
            "shop.Gone",
            False,
            SERVICE_UNKNOWN,
            "health service does not know service 'shop.Gone'",
        ),
    ],
)
async def test_the_health_service_answer_decides(
    grpc_server, grpc_target, health, service, ok, error, text
) -> None:
    port = await grpc_server(health)

    result = await check(grpc_target(port, service=service))

    assert (result.ok, result.error, result.error_text) == (ok, error, text)
    assert result.kind == "grpc"
    if ok:
        assert dict(result.details) == {"grpc_status": "SERVING"}


async def test_a_service_unknown_answer_is_its_own_error(grpc_server, grpc_target) -> None:
    port = await grpc_server(UnknownEverything())

    result = await check(grpc_target(port))

    assert result.error is SERVICE_UNKNOWN
    assert result.error_text == "health service does not know the server"


async def test_conditions_read_the_serving_status_and_then_decide(
    grpc_server, grpc_target, health
) -> None:
    port = await grpc_server(health)
    reachable = grpc_target(
        port, service="shop.Pay", conditions=("[GRPC_STATUS] == any(SERVING, NOT_SERVING)",)
    )
    serving = grpc_target(port, service="shop.Pay", conditions=("[GRPC_STATUS] == SERVING",))

    assert (await check(reachable)).ok
    failed = await check(serving)
    assert failed.error is ErrorClass.CONDITION_FAILED
    assert "NOT_SERVING" in (failed.error_text or "")


async def test_a_server_without_the_health_service_is_an_rpc_status(
    grpc_server, grpc_target
) -> None:
    port = await grpc_server(None)

    result = await check(grpc_target(port))

    assert result.error is RPC_STATUS
    assert result.error_text == "UNIMPLEMENTED: the server has no grpc.health.v1.Health/Check"


async def test_a_closed_port_is_connection_refused(grpc_target, closed_port) -> None:
    result = await check(grpc_target(closed_port))

    assert (result.error, result.error_text) == (
        ErrorClass.CONNECTION_REFUSED,
        "connection refused",
    )


async def test_no_answer_within_the_timeout_is_a_timeout(grpc_server, grpc_target) -> None:
    port = await grpc_server(NeverAnswers())

    result = await check(grpc_target(port, timeout=0.3))

    assert result.error is ErrorClass.TIMEOUT
    assert result.error_text == "no answer within 0.3s"


async def test_a_retry_comes_after_a_failed_attempt(grpc_target, endpoint, closed_port) -> None:
    target = dataclasses.replace(grpc_target(closed_port), retries=2)

    result = await check(target)

    assert result.error is ErrorClass.CONNECTION_REFUSED
    assert result.attempts == 3


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls_credentials(ca):
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key = cert.private_key_pem.bytes()
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    return grpc.ssl_server_credentials([(key, chain)])


@pytest.fixture
def ca_file(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_tls_with_the_servers_ca_is_serving(
    grpc_server, grpc_target, health, tls_credentials, ca_file
) -> None:
    port = await grpc_server(health, tls_credentials)

    result = await check(grpc_target(port, tls=TlsOptions(ca_file=ca_file)))

    assert result.ok, result.error_text


async def test_tls_server_name_is_checked_against_the_certificate(
    grpc_server, grpc_target, health, tls_credentials, ca_file
) -> None:
    port = await grpc_server(health, tls_credentials)
    named = TlsOptions(ca_file=ca_file, server_name="localhost")
    wrong = TlsOptions(ca_file=ca_file, server_name="other.example")

    assert (await check(grpc_target(port, tls=named))).ok
    result = await check(grpc_target(port, tls=wrong))
    assert (result.error, result.error_text) == (
        ErrorClass.TLS,
        "certificate does not match the server name",
    )


async def test_tls_from_an_untrusted_ca_fails_as_tls(
    grpc_server, grpc_target, health, tls_credentials
) -> None:
    port = await grpc_server(health, tls_credentials)

    result = await check(grpc_target(port, tls=TlsOptions()))  # the system roots only

    assert (result.error, result.error_text) == (ErrorClass.TLS, "certificate verify failed")


async def test_an_unreadable_ca_file_fails_as_tls(grpc_target, tmp_path, closed_port) -> None:
    missing = str(tmp_path / "gone.pem")

    result = await check(grpc_target(closed_port, tls=TlsOptions(ca_file=missing)))

    assert result.error is ErrorClass.TLS
    assert result.error_text == f"cannot load ca_file {missing!r}: No such file or directory"
