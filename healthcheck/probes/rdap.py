"""`[DOMAIN_EXPIRATION]`: how long until a checked name's registration expires, read over RDAP
(RFC 9083) from the registry IANA's bootstrap data names for its TLD (RFC 9224), or from the
endpoint's `rdap.server`.

Registries rate-limit RDAP, so an answer is kept for hours (a failure for minutes) in this
process, and endpoints asking about one domain at once share one request. Without a
`rdap.domain`, the registered name is found by asking for the name's last two labels, then
three, and so on, while the registry answers 404 (no public-suffix list is shipped).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from healthcheck import schema
from healthcheck.secrets import Secret

PLACEHOLDER = "DOMAIN_EXPIRATION"
BOOTSTRAP = Path(__file__).with_name("data") / "rdap_dns.json"
KEEP_ANSWER = 6 * 3600.0  # seconds an expiry date is reused
KEEP_FAILURE = 15 * 60.0  # seconds a failed lookup is reused before asking again
MAX_ANSWER = 1 << 20  # an RDAP domain answer is a few kB


class RdapError(Exception):
    """Why a name's registration expiry could not be read; the text names the name."""


@dataclass(frozen=True, slots=True)
class RdapOptions:
    """An endpoint's `rdap:` overrides: the RDAP base URL, the registered name to ask for."""

    server: str | None = None
    domain: str | None = None


_KEYS: dict[str, schema.Reader] = {
    "server": schema.optional(schema.http_url),
    "domain": schema.optional(schema.hostname),
}


def rdap_options(value: object) -> RdapOptions:
    """`rdap: https://rdap.example/` (the server) or `rdap: {server: ..., domain: ...}`."""
    if isinstance(value, str | Secret):
        return RdapOptions(server=schema.http_url(value))
    return RdapOptions(**schema.sub_mapping(value, _KEYS))


# The key each kind that can fill [DOMAIN_EXPIRATION] adds to its options.
OPTION = schema.Option(
    rdap_options, RdapOptions(), help="RDAP server URL, or {server, domain} for [DOMAIN_EXPIRATION]"
)


def host_of(settings: object) -> str | None:
    """The name a check is about: a URL's host; else a TLS server_name, an address's host, or
    a DNS check's host name."""
    if url := getattr(settings, "url", None):
        return urlsplit(str(url)).hostname
    tls = getattr(settings, "tls", None)
    if server_name := getattr(tls, "server_name", None):
        return str(server_name)
    address = getattr(settings, "address", None)
    if address:
        return str(address[0])
    hostname = getattr(settings, "hostname", None)
    return str(hostname) if hostname else None


@cache
def bootstrap() -> dict[str, str]:
    """TLD → RDAP base URL, from the shipped IANA bootstrap file (https URLs preferred)."""
    data = json.loads(BOOTSTRAP.read_text())
    servers: dict[str, str] = {}
    for tlds, urls in data["services"]:
        chosen = next((u for u in urls if u.startswith("https://")), urls[0] if urls else None)
        for tld in tlds:
            if chosen:
                servers[tld.lower()] = chosen
    return servers


_answers: dict[tuple[str, str], tuple[float, float | RdapError]] = {}
_asking: dict[tuple[str, str], asyncio.Future[float]] = {}


def forget() -> None:
    """Drop every kept answer (tests; a config reload keeps them: registrations do not move)."""
    _answers.clear()


async def registration_expiry(host: str, options: RdapOptions, timeout: float) -> float:
    """When `host`'s domain registration expires (epoch s); RdapError says why not."""
    name = (options.domain or host).lower().rstrip(".")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise RdapError(f"{name} is an address, not a registered domain name (set rdap.domain)")
    labels = name.split(".")
    if len(labels) < 2:
        raise RdapError(f"{name} is not a registered domain name (set rdap.domain)")
    server = options.server or bootstrap().get(labels[-1])
    if server is None:
        raise RdapError(f"no RDAP server known for .{labels[-1]} (set rdap.server)")
    key = (server, name if options.domain else ".".join(labels))
    now = time.monotonic()
    kept = _answers.get(key)
    if kept and kept[0] > now:
        if isinstance(kept[1], RdapError):
            raise kept[1]
        return kept[1]
    asking = _asking.get(key)
    if asking is None:
        asking = _asking[key] = asyncio.ensure_future(
            _ask(server, labels, bool(options.domain), timeout)
        )
        asking.add_done_callback(lambda done: _keep(key, done))
    return await asyncio.shield(asking)


def _keep(key: tuple[str, str], done: asyncio.Future[float]) -> None:
    _asking.pop(key, None)
    if done.cancelled():
        return
    error = done.exception()
    if isinstance(error, RdapError):
        _answers[key] = (time.monotonic() + KEEP_FAILURE, error)
    elif error is None:
        _answers[key] = (time.monotonic() + KEEP_ANSWER, done.result())


async def _ask(server: str, labels: list[str], exact: bool, timeout: float) -> float:
    import aiohttp  # only here: tls and dns checks import this module without needing it

    parts = urlsplit(server)  # named by host and port alone: never a user:password in it
    shown = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    names = (
        [".".join(labels)] if exact else [".".join(labels[-n:]) for n in range(2, len(labels) + 1)]
    )
    try:
        async with (
            asyncio.timeout(timeout),
            aiohttp.ClientSession(headers={"Accept": "application/rdap+json"}) as session,
        ):
            for name in names:
                url = f"{server.rstrip('/')}/domain/{quote(name)}"
                async with session.get(url, allow_redirects=True) as answer:
                    if answer.status == 404:
                        continue
                    if answer.status != 200:
                        raise RdapError(f"RDAP {shown} answered HTTP {answer.status} for {name}")
                    body = await answer.content.read(MAX_ANSWER)
                return _expiration(name, body, shown)
    except TimeoutError:
        raise RdapError(f"RDAP {shown} did not answer within {timeout:.3g}s") from None
    except aiohttp.ClientError as exc:
        raise RdapError(f"RDAP {shown} could not be reached: {type(exc).__name__}") from None
    except OSError as exc:
        raise RdapError(f"RDAP {shown} could not be reached: {exc.strerror or exc}") from None
    raise RdapError(f"RDAP {shown} knows no registration of {names[-1]} (HTTP 404)")


def _expiration(name: str, body: bytes, shown: str) -> float:
    """The `expiration` event's date in an RFC 9083 domain object."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        raise RdapError(f"RDAP {shown} sent no JSON for {name}") from None
    events = data.get("events") if isinstance(data, dict) else None
    for event in events if isinstance(events, list) else ():
        if isinstance(event, dict) and event.get("eventAction") == "expiration":
            try:
                when = datetime.fromisoformat(str(event.get("eventDate")).replace("Z", "+00:00"))
            except ValueError:
                raise RdapError(f"RDAP {shown}: bad expiration date for {name}") from None
            if when.tzinfo is None:
                raise RdapError(f"RDAP {shown}: expiration date for {name} has no time zone")
            return when.timestamp()
    raise RdapError(f"RDAP {shown} gives no expiration event for {name}")
