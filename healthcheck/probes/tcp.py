"""TCP connect check: can a connection be opened to host:port, and how fast."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.probes.base import Probe
from healthcheck.result import ProbeResult
from healthcheck.targets import Endpoint, ProbeSettings


@dataclass(frozen=True, slots=True)
class TcpSettings(ProbeSettings):
    address: tuple[str, int]


class TcpProbe(Probe):
    kind = "tcp"
    settings = TcpSettings
    options = {"address": schema.Option(schema.address, help="host:port to connect to")}
    placeholders = frozenset({"CONNECTED", "RESPONSE_TIME", "IP"})

    async def attempt(self, target: Endpoint) -> ProbeResult:
        host, port = target.settings.narrow(TcpSettings).address
        started = time.perf_counter()
        timestamp = self.clock()
        _, writer = await asyncio.open_connection(host, port)
        try:
            peer = writer.get_extra_info("peername")
            context = ConditionContext(connected=True, ip=peer[0] if peer else None)
            return self.judged(target, context, started, timestamp)
        finally:
            writer.close()
