"""ICMP echo check: does the host answer pings, how fast on average, and how many were lost.

Unprivileged ICMP sockets (SOCK_DGRAM, the kernel keeps the echo id) are tried first: Linux
allows them to groups in `net.ipv4.ping_group_range`. Where that refuses, raw sockets, which
need root or CAP_NET_RAW. icmplib does the sending; it is imported on the kind's first check.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.probes.base import NETWORK_ERRORS, Clock, Probe, resolve_failure
from healthcheck.probes.plugin import Gauges, KindMetrics, Reading
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.targets import Endpoint, ProbeSettings

if TYPE_CHECKING:
    from icmplib import Host

# Pause between two echo requests of one check (less when many must fit in the timeout), and
# the share of the attempt's timeout the pings may use (the rest: resolving, judging).
GAP = 0.1
SHARE = 0.9
PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")


@dataclass(frozen=True, slots=True)
class IcmpSettings(ProbeSettings):
    host: str
    count: int = 3


def packet_loss(result: ProbeResult) -> float | None:
    """The last check's lost share of echo requests (0 to 1), for /metrics."""
    loss = dict(result.details).get("packet_loss")
    return loss / 100 if isinstance(loss, int | float) else None


def loss_gauges(rows: list[Reading]) -> Iterator[Gauges]:
    gauge = Gauges(
        "healthcheck_icmp_packet_loss_ratio", "Share of the last check's echo requests lost"
    )
    for labels, _, value in rows:
        if value is not None:
            gauge.add(labels, value)
    yield gauge


class IcmpProbe(Probe):
    """Send `count` echo requests to `host`; latency is the mean round trip of the replies."""

    kind = "icmp"
    settings = IcmpSettings
    options = {
        "host": schema.Option(schema.hostname, help="host name or IPv4/IPv6 address to ping"),
        "count": schema.Option(schema.integer(1, 100), 3, help="echo requests per check"),
    }
    placeholders = frozenset({"CONNECTED", "RESPONSE_TIME", "IP", "PACKET_LOSS"})
    errors = (*NETWORK_ERRORS, ErrorClass.CONDITION_FAILED)
    metrics = KindMetrics(reading=packet_loss, gauges=loss_gauges)

    def __init__(self, clock: Clock = time.time, database: str | None = None) -> None:
        super().__init__(clock, database)
        # Which socket works here, learnt on the first check: False unprivileged, True raw.
        self.privileged: bool | None = None

    async def attempt(self, target: Endpoint) -> ProbeResult:
        settings = target.settings.narrow(IcmpSettings)
        started = time.perf_counter()
        timestamp = self.clock()
        try:
            address = await _resolve(settings.host)
        except socket.gaierror as exc:
            text = resolve_failure(settings.host, exc)
            return self.failed(target, ErrorClass.DNS, text, started, timestamp)
        # The gaps take at most half the time; each request waits for its reply its share of
        # the rest, so that a check with every reply lost still ends inside the timeout.
        usable = target.timeout * SHARE
        gap = min(GAP, usable / (2 * settings.count))
        wait = (usable - gap * (settings.count - 1)) / settings.count
        try:
            host = await self._ping(address, settings.count, gap, wait)
        except PermissionError as exc:
            return self.failed(target, ErrorClass.PROBER, str(exc), started, timestamp)
        loss = round(host.packet_loss * 100, 1)
        details: tuple[tuple[str, str | float | int | None], ...] = (
            ("address", address),
            ("sent", host.packets_sent),
            ("received", host.packets_received),
            ("packet_loss", loss),
        )
        if host.packets_received == 0:
            text = f"no reply to {settings.count} echo requests to {address} (100% packet loss)"
            return self.failed(
                target, ErrorClass.TIMEOUT, text, started, timestamp, details=details
            )
        context = ConditionContext(connected=True, ip=address, values={"PACKET_LOSS": loss})
        return self.judged(
            target, context, started, timestamp, latency=host.avg_rtt / 1000, details=details
        )

    async def _ping(self, address: str, count: int, gap: float, wait: float) -> Host:
        from icmplib import SocketPermissionError, async_ping

        tries = (False, True) if self.privileged is None else (self.privileged,)
        for privileged in tries:
            try:
                host = await async_ping(
                    address, count=count, interval=gap, timeout=wait, privileged=privileged
                )
            except SocketPermissionError:
                continue
            self.privileged = privileged
            return host
        raise PermissionError(_not_permitted())


async def _resolve(host: str) -> str:
    """`host` as an address: itself when it is one, else its first (v4 or v6) address."""
    loop = asyncio.get_running_loop()
    answers = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    if not answers:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    return str(answers[0][4][0])


def _not_permitted() -> str:
    """Why neither socket could be opened, and the two ways to allow one."""
    try:
        low, high = PING_GROUP_RANGE.read_text().split()
        groups = f'net.ipv4.ping_group_range is "{low} {high}"'
    except (OSError, ValueError):
        groups = "net.ipv4.ping_group_range is unreadable"
    return (
        f"ICMP not permitted: no unprivileged ICMP socket ({groups}, gid {os.getgid()} not in "
        "it) and no raw socket (needs root or CAP_NET_RAW); widen the range or grant the "
        "capability (README, kind: icmp)"
    )
