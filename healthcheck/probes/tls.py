"""TLS check: does the handshake succeed, who signed the certificate, and when does it expire."""

from __future__ import annotations

import asyncio
import ssl
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.probes import rdap
from healthcheck.probes.base import Clock, Probe
from healthcheck.probes.rdap import RdapOptions
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.schema import TlsOptions
from healthcheck.targets import Endpoint, ProbeSettings

_DAY = 86400.0


class TlsContexts:
    """Client SSL contexts cached per (verify, ca_file): building one reads CA files (ms each).

    A changed ca_file is read again only by a new instance (a config reload).
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[bool, str | None], ssl.SSLContext] = {}

    def get(self, verify: bool, ca_file: str | None) -> ssl.SSLContext | bool:
        """The value for aiohttp's `ssl=`: a verifying context, or False when verify is off."""
        return self.context(verify, ca_file) if verify else False

    def context(self, verify: bool, ca_file: str | None) -> ssl.SSLContext:
        """Always a context; with verify off it accepts any certificate for any name.

        Raises OSError (FileNotFoundError, ssl.SSLError) when ca_file cannot be loaded.
        """
        if verify and not ca_file:
            return system_context()
        key = (verify, ca_file if verify else None)
        context = self._cache.get(key)
        if context is None:
            context = self._cache[key] = _client_context(*key)
        return context


# The HTTP probe sets this to a list to learn each handshake's SSLObject: aiohttp releases a
# fresh connection as soon as a small body is read, before the caller can ask it for the cert.
PEER_TLS: ContextVar[list[ssl.SSLObject] | None] = ContextVar("healthcheck_peer_tls", default=None)


class _RecordingContext(ssl.SSLContext):
    """An SSLContext that hands each new SSLObject to whoever set PEER_TLS in this task."""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        ssl_object = super().wrap_bio(*args, **kwargs)
        sink = PEER_TLS.get()
        if sink is not None:
            sink.append(ssl_object)
        return ssl_object


_SYSTEM: list[ssl.SSLContext] = []


def system_context() -> ssl.SSLContext:
    """The verifying context on the system's CA store, one per process: loading the store
    costs ~55 ms of CPU, which the zygote pays once before it forks the workers (a worker
    that paid it on its first check held its loop that long, and its first checks timed
    out on a busy host)."""
    if not _SYSTEM:
        _SYSTEM.append(_client_context(True, None))
    return _SYSTEM[0]


def _client_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    context = _RecordingContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname check + CERT_REQUIRED
    if verify:
        # With a ca_file only that file is trusted (pinning), not the system store.
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return context
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def peer_expiry(ssl_object: ssl.SSLObject) -> float | None:
    """When the peer's certificate expires (epoch s), verified or not; None if unknown."""
    return _expiry(ssl_object.getpeercert() or {}, ssl_object.getpeercert(binary_form=True))


@dataclass(frozen=True, slots=True)
class TlsSettings(ProbeSettings):
    address: tuple[str, int]
    tls: TlsOptions = field(default_factory=TlsOptions)
    rdap: RdapOptions = field(default_factory=RdapOptions)  # for [DOMAIN_EXPIRATION]


class TlsProbe(Probe):
    """Handshake with host:port and report the peer certificate's expiry.

    With `tls.verify: false` the stdlib gives no parsed certificate, so the expiry is read
    from the DER bytes (`der_not_after`); subject and issuer are then left out of `details`.
    """

    kind = "tls"
    settings = TlsSettings
    options = {
        "address": schema.Option(schema.address, help="host:port to handshake with"),
        "tls": schema.Option(
            schema.tls_options, TlsOptions(), help="verify, ca_file, server_name (SNI)"
        ),
        "rdap": rdap.OPTION,
    }
    placeholders = frozenset(
        {"CONNECTED", "RESPONSE_TIME", "CERTIFICATE_EXPIRATION", "IP", rdap.PLACEHOLDER}
    )

    def __init__(self, clock: Clock = time.time, database: str | None = None) -> None:
        super().__init__(clock, database)
        self.contexts = TlsContexts()

    async def attempt(self, target: Endpoint) -> ProbeResult:
        settings = target.settings.narrow(TlsSettings)
        host, port = settings.address
        started = time.perf_counter()
        timestamp = self.clock()
        context = self.context_for(target, settings.tls, started, timestamp)
        if isinstance(context, ProbeResult):
            return context
        _, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=settings.tls.server_name or host
        )
        try:
            return self.judge_certificate(target, writer, started, timestamp)
        finally:
            writer.close()

    def context_for(
        self, target: Endpoint, tls: TlsOptions, started: float, timestamp: float
    ) -> ssl.SSLContext | ProbeResult:
        """The client context for `tls`, or the failed result when its ca_file cannot load."""
        try:
            return self.contexts.context(tls.verify, tls.ca_file)
        except OSError as exc:
            reason = exc.strerror or getattr(exc, "reason", None) or str(exc)
            text = f"cannot load ca_file {tls.ca_file!r}: {reason}"
            return self.failed(target, ErrorClass.TLS, text, started, timestamp)

    def judge_certificate(
        self, target: Endpoint, writer: asyncio.StreamWriter, started: float, timestamp: float
    ) -> ProbeResult:
        """The result of a finished handshake on `writer`: the peer certificate's expiry and
        details, judged by the target's conditions (kind: starttls shares it)."""
        ssl_object: ssl.SSLObject = writer.get_extra_info("ssl_object")
        peer = writer.get_extra_info("peername")
        cert = ssl_object.getpeercert() or {}  # {} when the certificate was not verified
        expiry = _expiry(cert, ssl_object.getpeercert(binary_form=True))
        left = None if expiry is None else expiry - timestamp
        details = _details(ssl_object, cert, left)
        context_seen = ConditionContext(
            connected=True, certificate_expiration_s=left, ip=peer[0] if peer else None
        )
        return self.judged(
            target, context_seen, started, timestamp, cert_expiry=expiry, details=details
        )


def _expiry(cert: dict[str, Any], der: bytes | None) -> float | None:
    not_after = cert.get("notAfter")
    if not_after:
        return float(ssl.cert_time_to_seconds(not_after))
    return der_not_after(der) if der else None


def _details(
    ssl_object: ssl.SSLObject, cert: dict[str, Any], left: float | None
) -> tuple[tuple[str, str | float | None], ...]:
    cipher = ssl_object.cipher()
    facts: list[tuple[str, str | float | None]] = [
        ("tls_version", ssl_object.version()),
        ("cipher", cipher[0] if cipher else None),
    ]
    if cert:
        facts.append(("cert_subject", _name(cert.get("subject", ()))))
        facts.append(("cert_issuer", _name(cert.get("issuer", ()))))
    if left is not None:
        facts.append(("days_left", round(left / _DAY, 1)))
    return tuple(facts)


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}


def _name(rdns: tuple[tuple[tuple[str, str], ...], ...]) -> str:
    """The CN of a parsed X.509 name, or all its attributes when it has no CN."""
    pairs = [pair for rdn in rdns for pair in rdn]
    common = [value for key, value in pairs if key == "commonName"]
    if common:
        return common[0]
    return ", ".join(f"{_SHORT.get(key, key)}={value}" for key, value in pairs)


def der_not_after(der: bytes) -> float | None:
    """The notAfter of a DER X.509 certificate in epoch seconds; None if it cannot be read.

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... } (RFC 5280).
    """
    try:
        _, cert_start, _ = _element(der, 0)
        _, tbs_start, tbs_end = _element(der, cert_start)
        fields = _children(der, tbs_start, tbs_end)
        if fields[0][0] == 0xA0:  # the explicit [0] version tag
            fields = fields[1:]
        _, validity_start, validity_end = fields[3]
        tag, start, end = _children(der, validity_start, validity_end)[1]
        return _asn1_time(tag, der[start:end].decode("ascii"))
    except (IndexError, ValueError):
        return None


def _element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at `offset`."""
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    if start + length > len(data):
        raise ValueError("truncated DER element")
    return tag, start, start + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    items = []
    while start < end:
        items.append(_element(data, start))
        start = items[-1][2]
    return items


def _asn1_time(tag: int, text: str) -> float:
    if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ; RFC 5280: YY >= 50 is 19YY
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    elif tag != 0x18:  # GeneralizedTime, YYYYMMDDHHMMSSZ
        raise ValueError(f"not an ASN.1 time (tag {tag:#x})")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC).timestamp()
