"""ICMP probe against the kernel's own echo on loopback (no server of ours: the kernel answers).

Run as root these use raw sockets, or unprivileged ICMP sockets where the ping group range
allows this user; the other socket paths are run in a fresh network namespace through the real
CLI (tests/e2e/test_new_kinds.py), where the range can be set without touching the host.
"""

from __future__ import annotations

import socket

import pytest

from healthcheck.conditions import PLACEHOLDERS, parse_condition
from healthcheck.probes.icmp import IcmpProbe, IcmpSettings
from healthcheck.result import ErrorClass
from healthcheck.targets import Endpoint


def _may_ping() -> str | None:
    """Why this host cannot ping at all (then the tests skip), or None."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
            return None
        except PermissionError:
            continue
    return "neither unprivileged ICMP nor raw sockets are allowed to this user"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(_may_ping() is not None, reason=str(_may_ping()))

KNOWN = (*PLACEHOLDERS, "PACKET_LOSS")


def icmp(host: str, *conditions: str, count: int = 3, timeout: float = 5.0) -> Endpoint:
    return Endpoint(
        region="test",
        name="ping",
        kind="icmp",
        interval=60.0,
        timeout=timeout,
        retries=0,
        latency_warning=None,
        latency_critical=None,
        conditions=tuple(parse_condition(text, KNOWN) for text in conditions),
        settings=IcmpSettings(host, count),
    )


async def test_the_kernel_answers_on_ipv4_loopback() -> None:
    result = await IcmpProbe().run(
        icmp("127.0.0.1", "[PACKET_LOSS] == 0", "[CONNECTED] == true", "[IP] == 127.0.0.1")
    )

    assert result.ok, result.error_text
    details = dict(result.details)
    assert details["sent"] == 3 and details["received"] == 3
    assert details["packet_loss"] == 0
    assert 0 < result.latency < 5.0  # the mean round trip, in seconds
    assert [outcome.passed for outcome in result.conditions] == [True, True, True]
    assert result.conditions[0].detail == "[PACKET_LOSS] was 0"


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")
async def test_the_kernel_answers_on_ipv6_loopback() -> None:
    result = await IcmpProbe().run(icmp("::1", "[IP] == ::1", count=2))

    assert result.ok, result.error_text
    assert dict(result.details)["received"] == 2


async def test_a_name_is_resolved_first() -> None:
    result = await IcmpProbe().run(icmp("localhost", count=1))

    assert result.ok, result.error_text
    assert dict(result.details)["address"] in ("127.0.0.1", "::1")


async def test_a_loss_condition_judges_the_percentage() -> None:
    result = await IcmpProbe().run(icmp("127.0.0.1", "[PACKET_LOSS] > 50", count=2))

    assert not result.ok
    assert result.error is ErrorClass.CONDITION_FAILED
    assert "[PACKET_LOSS] was 0" in (result.error_text or "")


async def test_an_unknown_name_is_a_dns_error() -> None:
    result = await IcmpProbe().run(icmp("no-such-host.invalid", count=1))

    assert result.error is ErrorClass.DNS
    assert result.error_text == "could not resolve no-such-host.invalid: no such host"


async def test_many_requests_are_spaced_to_fit_in_the_timeout() -> None:
    # 20 requests 0.1 s apart would need 1.9 s; the gaps shrink so that all fit in 1 s.
    result = await IcmpProbe().run(icmp("127.0.0.1", count=20, timeout=1.0))

    assert result.ok, result.error_text  # ended inside the timeout, with replies counted
    assert dict(result.details)["sent"] == 20  # (a busy machine may be late with some)
