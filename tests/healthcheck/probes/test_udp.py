"""UDP probe against real UDP servers on loopback (IPv4, and IPv6 where the host has it)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from healthcheck.probes.udp import UdpProbe, UdpSettings, payload
from healthcheck.result import ErrorClass
from healthcheck.secrets import Secret


class Echo(asyncio.DatagramProtocol):
    """Answers each datagram with `answer(data)`; None: stays silent."""

    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.reply = answer
        self.received: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.received.append(data)
        reply = self.reply(data)
        if reply is not None:
            self.transport.sendto(reply, addr)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


Serve = Callable[..., Awaitable[tuple[tuple[str, int], Echo]]]


@pytest.fixture
async def udp_server() -> AsyncIterator[Serve]:
    transports: list[asyncio.DatagramTransport] = []

    async def start(answer=lambda data: data, host: str = "127.0.0.1"):
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: Echo(answer), local_addr=(host, 0)
        )
        transports.append(transport)
        return transport.get_extra_info("sockname")[:2], protocol

    yield start
    for transport in transports:
        transport.close()


@pytest.fixture
def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        return held.getsockname()[1]


@pytest.fixture
def udp_target(endpoint):
    def make(address, send=b"ping", *, expect=None, conditions=(), timeout=5.0, retries=0):
        settings = UdpSettings(address=address, send=send, expect=expect)
        return endpoint("udp", settings, conditions=conditions, timeout=timeout, retries=retries)

    return make


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        pytest.param(
            "::1", marks=pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback here")
        ),
    ],
)
async def test_an_echo_answer_is_the_body(udp_server, udp_target, host) -> None:
    address, echo = await udp_server(host=host)
    target = udp_target(address, b"ping", conditions=("[BODY] == ping", f"[IP] == {host}"))

    result = await UdpProbe().run(target)

    assert result.ok, result.error_text
    assert echo.received == [b"ping"]
    assert dict(result.details) == {"answer_bytes": 4}


async def test_hex_bytes_are_sent_as_bytes(udp_server, udp_target) -> None:
    address, echo = await udp_server()

    result = await UdpProbe().run(udp_target(address, payload("hex:00ff 0a")))

    assert result.ok, result.error_text
    assert echo.received == [b"\x00\xff\x0a"]


async def test_a_secret_payload_is_sent_as_its_text(udp_server, udp_target) -> None:
    address, echo = await udp_server()

    result = await UdpProbe().run(udp_target(address, Secret("t0ken")))

    assert result.ok and echo.received == [b"t0ken"]


@pytest.mark.parametrize(
    ("expect", "ok", "text"),
    [
        (r"^PONG \d+$", True, None),
        (r"^pong", False, "answer 'PONG 42' does not match expect '^pong'"),
    ],
)
async def test_expect_is_a_regex_on_the_answer(udp_server, udp_target, expect, ok, text) -> None:
    address, _ = await udp_server(lambda data: b"PONG 42")

    result = await UdpProbe().run(udp_target(address, expect=expect))

    assert (result.ok, result.error_text) == (ok, text)
    if not ok:
        assert result.error is ErrorClass.INVALID_RESPONSE


async def test_conditions_read_a_json_answer(udp_server, udp_target) -> None:
    address, _ = await udp_server(lambda data: b'{"status": "UP", "load": 3}')
    target = udp_target(address, conditions=("[BODY].status == UP", "[BODY].load < 2"))

    result = await UdpProbe().run(target)

    assert result.error is ErrorClass.CONDITION_FAILED
    assert [c.passed for c in result.conditions] == [True, False]


async def test_no_answer_within_the_timeout_is_a_timeout(udp_server, udp_target) -> None:
    address, silent = await udp_server(lambda data: None)

    result = await UdpProbe().run(udp_target(address, timeout=0.3))

    assert (result.error, result.error_text) == (ErrorClass.TIMEOUT, "no answer within 0.3s")
    assert silent.received == [b"ping"]


async def test_port_unreachable_is_its_own_error(udp_target, closed_udp_port) -> None:
    result = await UdpProbe().run(udp_target(("127.0.0.1", closed_udp_port), retries=1))

    assert (result.error, result.error_text) == (
        ErrorClass.CONNECTION_REFUSED,
        "port unreachable (ICMP): nothing listens there",
    )
    assert result.attempts == 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("hex:zz", "expected hex digits after 'hex:', got 'zz'"),
        ("x" * 70000, "a datagram holds at most 65507 bytes, got 70000"),
    ],
)
def test_a_bad_payload_is_refused(value, message) -> None:
    with pytest.raises(ValueError, match=message):
        payload(value)
