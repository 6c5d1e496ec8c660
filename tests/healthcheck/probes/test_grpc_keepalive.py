"""`keepalive: true` gRPC checks share one kept connection per (address, TLS options), start
afresh after a failure, and close a channel no check has used for two intervals (an endpoint a
reload removed); without it every check has a connection of its own. Real grpc.aio servers on
loopback tell which connection each check came on by the peer's port."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthcheck.probes.grpc_health import IDLE_INTERVALS, GrpcProbe, GrpcSettings
from healthcheck.result import ErrorClass
from tests.support.clock import ManualClock

SERVING = health_pb2.HealthCheckResponse.SERVING


class Peers(health_pb2_grpc.HealthServicer):
    """SERVING, noting the client address (host:port) each call came from."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def Check(self, request, context):
        self.seen.append(context.peer())
        return health_pb2.HealthCheckResponse(status=SERVING)


@pytest.fixture
async def serve():
    """Start a grpc.aio server with `servicer` on `port` (0: a free one); returns (server, port)."""
    servers: list[grpc.aio.Server] = []

    async def start(servicer, port=0):
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        servers.append(server)
        return server, port

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(None)


@pytest.fixture
def target(endpoint):
    def make(port, *, keepalive=True, name="grpc-check", interval=60.0):
        settings = GrpcSettings(("127.0.0.1", port), keepalive=keepalive)
        return dataclasses.replace(endpoint("grpc", settings), name=name, interval=interval)

    return make


@pytest.fixture
async def probe():
    clock = ManualClock()
    probe = GrpcProbe(clock)
    await probe.start()
    try:
        yield probe, clock
    finally:
        await probe.close()


async def test_keepalive_checks_share_one_connection_and_fresh_ones_do_not(
    serve, target, probe
) -> None:
    probe, _ = probe
    peers = Peers()
    _, port = await serve(peers)

    kept = [await probe.run(target(port, name=f"k{i}")) for i in range(3)]
    fresh = [await probe.run(target(port, keepalive=False)) for _ in range(2)]

    assert all(result.ok for result in kept + fresh), kept + fresh
    assert len(set(peers.seen[:3])) == 1, peers.seen  # one kept connection for three checks
    assert len(set(peers.seen)) == 3, peers.seen  # and one of its own for each fresh check


async def test_after_a_failure_the_next_keepalive_check_connects_afresh(
    serve, target, probe
) -> None:
    probe, _ = probe
    peers = Peers()
    server, port = await serve(peers)
    assert (await probe.run(target(port))).ok

    await server.stop(None)
    down = await probe.run(target(port))
    await serve(peers, port)  # back on the same port
    up = await probe.run(target(port))

    assert not down.ok and down.error in (
        ErrorClass.CONNECTION_REFUSED,
        ErrorClass.CONNECTION_RESET,
        ErrorClass.NETWORK,
    ), down
    assert up.ok, up  # not failed through grpc's reconnect backoff on the old channel
    assert len(set(peers.seen)) == 2, peers.seen


async def test_a_kept_channel_unused_for_two_intervals_is_closed(serve, target, probe) -> None:
    probe, clock = probe
    peers = Peers()
    _, port = await serve(peers)
    _, other = await serve(peers)
    assert (await probe.run(target(port, interval=10.0))).ok
    assert (await probe.run(target(other, interval=10.0))).ok

    await clock.advance(IDLE_INTERVALS * 10.0 - 1)
    assert (await probe.run(target(other, interval=10.0))).ok  # still checked: kept
    await clock.advance(2)  # `port`'s endpoint has not been checked for two intervals
    closed = probe.sweep()
    assert (await probe.run(target(port, interval=10.0))).ok
    assert (await probe.run(target(other, interval=10.0))).ok

    assert closed == 1
    on_port = [peer for i, peer in enumerate(peers.seen) if i in (0, 3)]
    on_other = [peer for i, peer in enumerate(peers.seen) if i in (1, 2, 4)]
    assert len(set(on_port)) == 2, peers.seen  # reconnected after its channel was closed
    assert len(set(on_other)) == 1, peers.seen  # the one in use was kept
