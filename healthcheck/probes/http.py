"""HTTP(S) check with aiohttp: status, body conditions, phases, certificate expiry, body cap."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import aiohttp

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.probes import rdap
from healthcheck.probes.base import AT_SOCKET, NETWORK_ERRORS, PROGRESS, Probe, timed_at_socket
from healthcheck.probes.http_client import (
    BodyTooLarge,
    classify_client_error,
    client_session,
    read_capped,
    read_stream_capped,
    tls_context,
)
from healthcheck.probes.http_lean import LeanClient, Plan, plan
from healthcheck.probes.rdap import RdapOptions
from healthcheck.probes.tls import PEER_TLS, TlsContexts, peer_expiry, system_context
from healthcheck.result import ErrorClass, Phases, ProbeResult
from healthcheck.schema import Option, TlsOptions
from healthcheck.secrets import Secret, reveal
from healthcheck.targets import Endpoint, ProbeSettings

DEFAULT_MAX_BODY = 1024 * 1024
_MAX_PLANS = 100_000
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True, slots=True)
class HttpSettings(ProbeSettings):
    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str | Secret], ...] = ()
    body: str | None = None
    expected_status: tuple[int, ...] | None = None  # None: any 2xx, unless conditions decide
    follow_redirects: bool = True
    max_redirects: int = 10
    tls: TlsOptions = field(default_factory=TlsOptions)
    keepalive: bool = False  # False: a fresh connection per check, as a user's first visit
    max_body: int = DEFAULT_MAX_BODY
    phases: bool = False  # DNS and connect times (the session: aiohttp's tracing, ~10% more CPU)
    rdap: RdapOptions = field(default_factory=RdapOptions)  # for [DOMAIN_EXPIRATION]


def _header_pairs(value: Any) -> tuple[tuple[str, str | Secret], ...]:
    return tuple(schema.headers(value).items())


def _method(value: Any) -> str:
    return schema.choice(*_METHODS)(schema.text(value).upper())


@dataclass(slots=True)
class _PhaseClock:
    """Per-request marks filled in by aiohttp's trace hooks (perf_counter seconds)."""

    dns: float = 0.0
    connect: float = 0.0
    _mark: float = 0.0
    _dns_mark: float = 0.0


async def _connect_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    ctx.trace_request_ctx._mark = time.perf_counter()


async def _connect_end(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    clock = ctx.trace_request_ctx
    clock.connect += time.perf_counter() - clock._mark


async def _dns_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    ctx.trace_request_ctx._dns_mark = time.perf_counter()


async def _dns_end(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    clock = ctx.trace_request_ctx
    clock.dns += time.perf_counter() - clock._dns_mark


def _trace_config() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_start.append(_connect_start)
    trace.on_connection_create_end.append(_connect_end)
    trace.on_dns_resolvehost_start.append(_dns_start)
    trace.on_dns_resolvehost_end.append(_dns_end)
    return trace


class HttpProbe(Probe):
    kind = "http"
    settings = HttpSettings
    options = {
        "url": Option(schema.http_url, help="http:// or https:// URL to request"),
        "method": Option(_method, "GET"),
        "headers": Option(_header_pairs, ()),
        "body": Option(schema.optional(schema.text), None),
        "expected_status": Option(schema.optional(schema.status_codes), None),
        "follow_redirects": Option(schema.boolean, True),
        "max_redirects": Option(schema.integer(0, 50), 10),
        "tls": Option(schema.tls_options, TlsOptions()),
        "keepalive": Option(schema.boolean, False),
        "max_body": Option(schema.size, DEFAULT_MAX_BODY),
        "phases": Option(schema.boolean, False, help="record DNS and connect times"),
        "rdap": rdap.OPTION,
    }
    placeholders = frozenset(
        {"STATUS", "BODY", "RESPONSE_TIME", "CONNECTED", "CERTIFICATE_EXPIRATION", rdap.PLACEHOLDER}
    )
    errors = (
        *NETWORK_ERRORS,
        ErrorClass.HTTP_STATUS,
        ErrorClass.BODY_TOO_LARGE,
        ErrorClass.INVALID_RESPONSE,
        ErrorClass.CONDITION_FAILED,
    )

    # Checks with a fresh connection (keepalive: false) go the lean way (http_lean.py) unless
    # they need the session (redirects followed, user info in the URL); False: all through
    # the session, as the parity tests compare the two.
    lean = True

    async def start(self) -> None:
        self._tls = TlsContexts()
        system_context()  # before the first check, not inside it (free after the zygote)
        self._sessions: dict[tuple[bool, bool], aiohttp.ClientSession] = {}
        self._lean = LeanClient()
        self._plans: dict[HttpSettings, Plan | None] = {}
        # URLs that answered with a redirect to follow: their checks go to the session.
        self._redirecting: set[str] = set()

    def _session(self, keepalive: bool, phases: bool) -> aiohttp.ClientSession:
        """One session per (keepalive, phases): tracing costs every request that has it."""
        session = self._sessions.get((keepalive, phases))
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=0, force_close=not keepalive, enable_cleanup_closed=True
            )
            session = client_session(connector, [_trace_config()] if phases else None)
            self._sessions[keepalive, phases] = session
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        await self._lean.close()

    def _plan(self, settings: HttpSettings) -> Plan | None:
        """The lean request for these settings, or None where it takes the session."""
        if not self.lean or settings.keepalive or settings.url in self._redirecting:
            return None
        try:
            return self._plans[settings]
        except KeyError:
            lean = plan(
                settings.url,
                settings.method,
                settings.headers,
                settings.body,
                settings.tls.server_name,
            )
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()  # settings a reload left behind
            self._plans[settings] = lean
            return lean

    async def attempt(self, target: Endpoint) -> ProbeResult:
        settings = target.settings.narrow(HttpSettings)
        timestamp = self.clock()
        clock = _PhaseClock() if settings.phases else None
        ssl_context = tls_context(self._tls, settings.tls)
        if isinstance(ssl_context, str):
            started = time.perf_counter()
            return self.failed(target, ErrorClass.TLS, ssl_context, started, timestamp)
        lean = self._plan(settings)
        if lean is not None:
            result = await self._lean_attempt(target, settings, lean, ssl_context, timestamp)
            if result is not None:
                return result
            # A redirect to follow: this check and the URL's later ones ask the session.
            self._redirecting.add(settings.url)
        # The common check (a GET, no headers of its own, no body) builds nothing per request.
        headers = (
            {name: reveal(value) for name, value in settings.headers} if settings.headers else None
        )
        session = self._session(settings.keepalive, settings.phases)
        handshakes: list[ssl.SSLObject] = []
        recording = PEER_TLS.set(handshakes)
        # The clock starts with the request: what came before is ours, not the target's.
        started = time.perf_counter()
        try:
            async with session.request(
                settings.method,
                settings.url,
                headers=headers,
                data=settings.body.encode() if settings.body is not None else None,
                allow_redirects=settings.follow_redirects,
                max_redirects=settings.max_redirects,
                ssl=ssl_context,
                server_hostname=settings.tls.server_name,
                trace_request_ctx=clock,
                middlewares=_secret_headers_stay_home(settings) if headers else (),
            ) as response:
                first_byte = time.perf_counter() - started
                if (progress := PROGRESS.get()) is not None:
                    progress.http_status = response.status  # a body that never ends says so
                try:
                    body = await read_capped(response, settings.max_body)
                except BodyTooLarge as exc:
                    return self.failed(
                        target,
                        ErrorClass.BODY_TOO_LARGE,
                        str(exc),
                        started,
                        timestamp,
                        http_status=response.status,
                    )
                status = response.status
        except aiohttp.ClientError as exc:
            error, message = classify_client_error(exc)
            return self.failed(target, error, message, started, timestamp)
        finally:
            PEER_TLS.reset(recording)

        cert_expiry = peer_expiry(handshakes[-1]) if handshakes else None
        total = time.perf_counter() - started
        phases = Phases(
            dns=(clock.dns or None) if clock else None,
            connect=(clock.connect - clock.dns) if clock and clock.connect else None,
            first_byte=first_byte,
            total=total,
        )
        return self._judge(target, settings, status, body, cert_expiry, phases, started, timestamp)

    async def _lean_attempt(
        self,
        target: Endpoint,
        settings: HttpSettings,
        lean: Plan,
        ssl_context: ssl.SSLContext,
        timestamp: float,
    ) -> ProbeResult | None:
        """The check by the lean path; None when the answer is a redirect to follow."""
        started = time.perf_counter()
        try:
            exchange = await self._lean.request(
                lean,
                ssl_context,
                follow_redirects=settings.follow_redirects,
                at_socket=timed_at_socket(),
            )
            try:
                if exchange.redirect:
                    return None
                status = exchange.status
                if (progress := PROGRESS.get()) is not None:
                    progress.http_status = status  # a body that never ends says so
                try:
                    body = await read_stream_capped(
                        exchange.payload, settings.max_body, exchange.content_length
                    )
                except BodyTooLarge as exc:
                    return self.failed(
                        target,
                        ErrorClass.BODY_TOO_LARGE,
                        str(exc),
                        started,
                        timestamp,
                        http_status=status,
                    )
                # The answer ended when its last byte reached the socket (or was read from it),
                # not when this task next ran; and a request written late because the loop was
                # busy (`held`) was late by the prober: both are ours, not the target's.
                total = (exchange.last_byte or time.perf_counter()) - started - exchange.held
                ssl_object = exchange.ssl_object()
                cert_expiry = peer_expiry(ssl_object) if ssl_object is not None else None
            finally:
                exchange.close()  # also when the attempt's budget cancels it
        except aiohttp.ClientError as exc:
            error, message = classify_client_error(exc)
            return self.failed(target, error, message, started, timestamp)
        phases = Phases(
            dns=exchange.dns if settings.phases else None,
            connect=exchange.connect if settings.phases else None,
            first_byte=exchange.first_byte - started - exchange.held,
            total=total,
        )
        if exchange.at_socket and exchange.dns is None:
            AT_SOCKET.set(True)  # a name looked up now was timed through the loop: not all of it
        return self._judge(target, settings, status, body, cert_expiry, phases, started, timestamp)

    def _judge(
        self,
        target: Endpoint,
        settings: HttpSettings,
        status: int,
        body: bytes,
        cert_expiry: float | None,
        phases: Phases,
        started: float,
        timestamp: float,
    ) -> ProbeResult:
        """The result of a response read whole, either path's, timed by `phases.total`."""
        latency = phases.total if phases.total is not None else time.perf_counter() - started
        now = self.clock()
        context = ConditionContext(
            status=status,
            body=body,
            connected=True,
            certificate_expiration_s=None if cert_expiry is None else cert_expiry - now,
        )
        result = self.judged(
            target,
            context,
            started,
            timestamp,
            latency=latency,  # measured where the answer ended, not from here
            http_status=status,
            phases=phases,
            cert_expiry=cert_expiry,
        )
        if not _status_accepted(status, settings, has_conditions=bool(target.conditions)):
            expected = (
                " or ".join(map(str, settings.expected_status))
                if settings.expected_status
                else "2xx"
            )
            failed = self.failed(
                target,
                ErrorClass.HTTP_STATUS,
                f"HTTP {status}, expected {expected}",
                started,
                timestamp,
                http_status=status,
                phases=phases,
                conditions=result.conditions,
                cert_expiry=cert_expiry,
            )
            return replace(failed, latency=latency)
        return result


def _secret_headers_stay_home(settings: HttpSettings) -> tuple[aiohttp.ClientMiddlewareType, ...]:
    """A middleware that drops the headers holding a secret (`${ENV}`) from every request of a
    redirect chain once it has left the first URL's origin (scheme, host, port). aiohttp drops
    only its own Authorization and Cookie there; an X-Api-Key would go to whoever redirects."""
    secret = [name for name, value in settings.headers if isinstance(value, Secret)]
    if not secret or not settings.follow_redirects:
        return ()
    origins: list[object] = []  # of each request in the chain, the first one's first

    async def stay_home(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        origins.append(request.url.origin())
        if any(origin != origins[0] for origin in origins):
            for name in secret:
                request.headers.popall(name, None)
        return await handler(request)

    return (stay_home,)


def _status_accepted(status: int, settings: HttpSettings, *, has_conditions: bool) -> bool:
    """Explicit expected_status wins; else conditions decide; with neither, any 2xx passes."""
    if settings.expected_status is not None:
        return status in settings.expected_status
    return has_conditions or 200 <= status < 300
