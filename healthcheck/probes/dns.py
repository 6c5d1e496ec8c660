"""DNS check: does a host name resolve through the system resolver, and to which addresses."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.probes import rdap
from healthcheck.probes.base import Probe, resolve_failure
from healthcheck.probes.rdap import RdapOptions
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.targets import Endpoint, ProbeSettings

FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


@dataclass(frozen=True, slots=True)
class DnsSettings(ProbeSettings):
    hostname: str
    family: str = "any"
    rdap: RdapOptions = field(default_factory=RdapOptions)  # for [DOMAIN_EXPIRATION]


class DnsProbe(Probe):
    """Resolve a name the way a client on this host would (getaddrinfo: hosts file, then DNS)."""

    kind = "dns"
    settings = DnsSettings
    options = {
        "hostname": schema.Option(schema.hostname, help="host name to resolve"),
        "family": schema.Option(
            schema.choice(*FAMILIES), "any", help="address family to ask for: any, ipv4, ipv6"
        ),
        "rdap": rdap.OPTION,
    }
    placeholders = frozenset(
        {"CONNECTED", "RESPONSE_TIME", "IP", "BODY", "DNS_RCODE", rdap.PLACEHOLDER}
    )

    async def attempt(self, target: Endpoint) -> ProbeResult:
        settings = target.settings.narrow(DnsSettings)
        started = time.perf_counter()
        timestamp = self.clock()
        loop = asyncio.get_running_loop()
        try:
            answers = await loop.getaddrinfo(
                settings.hostname,
                None,
                family=FAMILIES[settings.family],
                type=socket.SOCK_STREAM,
            )
        except socket.gaierror as exc:
            text = resolve_failure(settings.hostname, exc)
            return self.failed(target, ErrorClass.DNS, text, started, timestamp)
        addresses = list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in answers))
        if not addresses:
            text = f"could not resolve {settings.hostname}: no address"
            return self.failed(target, ErrorClass.DNS, text, started, timestamp)
        joined = ",".join(addresses)
        context = ConditionContext(
            connected=True, ip=addresses[0], body=joined.encode(), dns_rcode="NOERROR"
        )
        return self.judged(target, context, started, timestamp, details=(("addresses", joined),))
