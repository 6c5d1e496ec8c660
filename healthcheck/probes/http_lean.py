"""The common HTTP check without aiohttp's client session: a fresh connection from
`loop.create_connection`, the request written in one piece, and aiohttp's own protocol
(`ResponseHandler`: its C parser, decompression, payload stream and exceptions) reading the
answer. A session request costs ~0.5 ms of CPU; this ~0.2 ms (bench/README.md).

What it does not do falls back to the session (HttpProbe decides): keep-alive, a URL with
user info, and redirects (the caller learns a redirect from `Exchange.redirect`).

Timed by the kernel, where it can be (plain HTTP to one address, on Linux): the socket is
`_TimedSocket`'s, read with recvmsg and SO_TIMESTAMPNS, so each read knows when its bytes
reached the socket, not when a busy loop got round to reading them; the connection's set-up
time is the kernel's own measure of the handshake (TCP_INFO's round trip, when no SYN was sent
twice), and the time between the connection being made and the request written is the
prober's, not the target's (`Exchange.held`). A loop that starts fifty checks in one turn no
longer reads its own turn as the targets' latency (bench/README.md, accuracy at 20,000).
HTTPS and several addresses use the loop's own transport, timed in its callbacks.
Errors are aiohttp's own exception types built as its connector and session build them, so
`classify_client_error` reads them exactly as it reads the session's.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import functools
import ipaddress
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aiohappyeyeballs
import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from aiohttp.http import HttpProcessingError
from aiohttp.http_parser import RawResponseMessage
from aiohttp.resolver import DefaultResolver
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from healthcheck.probes.http_client import USER_AGENT
from healthcheck.secrets import Secret

# As aiohttp: no retry on these, Content-Length: 0 for a body-less request of the others.
_GET_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_POST_METHODS = frozenset({"PATCH", "POST", "PUT"})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HAPPY_EYEBALLS_DELAY = 0.25  # aiohttp's TCPConnector default
DNS_TTL = 10.0  # aiohttp's TCPConnector ttl_dns_cache default

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a check's request needs that its settings fix: worked out once per settings."""

    url: str  # the settings' own string (a URL object with its caches: ~0.5 KB a plan)
    host: str  # as in the URL (raw, IDNA), an address or a name
    port: int
    is_ssl: bool
    server_name: str | None  # SNI and certificate name, for https
    method: str
    # The request head and body, a secret header's value kept a Secret until it is written;
    # the text around secrets in one string (most heads: one string, not one a line).
    head: tuple[str | Secret, ...]
    body: bytes
    literal: tuple[AddrInfo, ...]  # the address when the host is one: no lookup
    retry: bool  # aiohttp asks again once when the server hangs up before a response
    # The request's bytes, made once, when no header holds a secret (None: made per request,
    # the secret revealed only then; see _wire).
    raw: bytes | None = None


def plan(
    url: str,
    method: str,
    headers: tuple[tuple[str, str | Secret], ...],
    body: str | None,
    server_name: str | None,
) -> Plan | None:
    """The request for these settings, or None where the lean path does not apply."""
    parsed = URL(url)
    host, port = parsed.raw_host, parsed.port
    if not host or port is None or parsed.raw_user or parsed.raw_password:
        return None  # user info: aiohttp sends it as Basic auth
    if host.endswith(".."):
        host = host.rstrip(".") + "."  # as aiohttp's connector
    literal: tuple[AddrInfo, ...] = ()
    if ":" in host or host.replace(".", "").isdigit():  # an address, as aiohttp tells them
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None  # a legacy numeric form (127.1), a zone: aiohttp says what it makes of it
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        literal = _literal(family, host, port)
    is_ssl = parsed.scheme == "https"
    given = {name.lower() for name, _ in headers}
    # aiohttp's order: Host, the session's User-Agent, ours, then its defaults.
    lines: list[tuple[str, str | Secret]] = []
    if "host" not in given:
        lines.append(("Host", parsed.host_port_subcomponent or host))
    if "user-agent" not in given:
        lines.append(("User-Agent", USER_AGENT))
    lines.extend(headers)
    if "accept" not in given:
        lines.append(("Accept", "*/*"))
    if "accept-encoding" not in given:
        lines.append(("Accept-Encoding", "gzip, deflate"))
    payload = body.encode() if body is not None else b""
    if body is not None or method not in _GET_METHODS:
        if "content-length" not in given:
            lines.append(("Content-Length", str(len(payload))))
        if "content-type" not in given and (body is not None or method in _POST_METHODS):
            lines.append(("Content-Type", "application/octet-stream"))
    if "connection" not in given:
        lines.append(("Connection", "close"))
    head: list[str | Secret] = [f"{method} {parsed.raw_path_qs} HTTP/1.1\r\n"]
    for name, value in lines:
        head += (
            [f"{name}: ", value, "\r\n"] if isinstance(value, Secret) else [f"{name}: {value}\r\n"]
        )
    head.append("\r\n")
    plain = [part for part in head if not isinstance(part, Secret)]
    return Plan(
        url=url,
        host=sys.intern(host),  # one string for the plans of one host
        port=port,
        is_ssl=is_ssl,
        server_name=(server_name or host).rstrip(".") if is_ssl else None,
        method=method,
        head=_joined(head),
        body=payload,
        literal=literal,
        retry=method in _IDEMPOTENT,
        raw="".join(plain).encode("utf-8") + payload if len(plain) == len(head) else None,
    )


@functools.lru_cache(maxsize=1024)
def _literal(family: int, host: str, port: int) -> tuple[AddrInfo, ...]:
    """The address list of a literal address: one for all the plans that use it."""
    address = (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
    return ((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address),)


def _joined(parts: list[str | Secret]) -> tuple[str | Secret, ...]:
    """The parts with each run of plain text between secrets joined into one string."""
    joined: list[str | Secret] = []
    text: list[str] = []
    for part in parts:
        if isinstance(part, Secret):
            if text:
                joined.append("".join(text))
                text.clear()
            joined.append(part)
        else:
            text.append(part)
    if text:
        joined.append("".join(text))
    return tuple(joined)


def _wire(plan: Plan) -> bytes:
    """The request's bytes; a secret is revealed here and nowhere else."""
    if plan.raw is not None:
        return plan.raw  # no secret in it: the same bytes every time (~3 % of a check's CPU)
    text = "".join(part.reveal() if isinstance(part, Secret) else part for part in plan.head)
    return text.encode("utf-8") + plan.body


class _Handler(ResponseHandler):
    """aiohttp's protocol, noting when the connection was made (after the TLS handshake),
    when the first byte of the answer came and when the last did (or the server's end of the
    stream, for a body read until it): the times are taken in the transport's callbacks, as
    the bytes are read from the socket, so the wake-ups of the task that reads the answer
    afterwards are not the target's latency."""

    connected_at = 0.0
    first_byte_at = 0.0
    last_byte_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected_at = time.perf_counter()
        # BaseProtocol.connection_made without its tcp_nodelay(): asyncio's and uvloop's TCP
        # transports set TCP_NODELAY themselves as they are made, and aiohttp's second time
        # cost each check a socket object, a getsockname and a setsockopt (~3 % of its CPU).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.timed_data(data, time.perf_counter())

    def timed_data(self, data: bytes, arrived: float) -> None:
        """`data` that reached the socket at `arrived` (perf_counter)."""
        if data:  # aiohttp feeds b"" itself when the connection ends
            self.last_byte_at = arrived
            if not self.first_byte_at:
                self.first_byte_at = arrived
        super().data_received(data)

    def eof_received(self) -> None:
        # The end of the stream ends the answer only for a body read until it (no length):
        # after a whole answer it is the server closing at its own pace.
        payload: StreamReader | None = getattr(self, "_payload", None)
        if payload is not None and not payload.is_eof():
            self.last_byte_at = time.perf_counter()
        super().eof_received()


@dataclass(slots=True)
class Exchange:
    """One request's answer, its head read; the body is read from `payload`."""

    status: int
    headers: CIMultiDictProxy[str]
    payload: StreamReader
    transport: asyncio.BaseTransport
    dns: float | None  # seconds of a lookup made for it; None when none was
    connect: float  # seconds from the start of connecting to the connection (TLS included)
    first_byte: float  # perf_counter of the answer's first byte
    handler: _Handler  # its last_byte_at: when the answer read so far ended
    redirect: bool  # a 3xx with a Location: the session follows it
    # Seconds between the connection being made and the request written: the prober's own
    # delay (a busy loop), taken off the answer's times by the caller; 0 where not known.
    held: float = 0.0
    # Timed at the socket (_TimedSocket): the kernel's receive times, the request's delay known.
    at_socket: bool = False

    @property
    def content_length(self) -> int | None:
        length = self.headers.get("Content-Length")
        return None if length is None else int(length)

    def ssl_object(self) -> ssl.SSLObject | None:
        return cast("ssl.SSLObject | None", self.transport.get_extra_info("ssl_object"))

    @property
    def last_byte(self) -> float:
        """perf_counter of the last byte (or end of stream) read so far: once the body has been
        read, when the answer ended."""
        return self.handler.last_byte_at

    def close(self) -> None:
        # No other answer comes on this connection: its queue of answers ends here, and
        # aiohttp's connection_lost builds no ServerDisconnectedError for a reader that is
        # not there (3.3 -> 1.5 us a check). A body not read whole still fails its stream.
        self.handler.feed_eof()
        self.transport.close()


class LeanClient:
    """Requests by plan, with a cache of looked-up addresses as aiohttp's TCPConnector."""

    def __init__(self, ttl: float = DNS_TTL) -> None:
        self._ttl = ttl
        self._resolver: AbstractResolver | None = None
        self._hosts: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}
        self._lookups: dict[tuple[str, int], asyncio.Task[list[AddrInfo]]] = {}

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()

    async def request(
        self,
        plan: Plan,
        ssl_context: ssl.SSLContext,
        *,
        follow_redirects: bool,
        at_socket: bool = True,
    ) -> Exchange:
        """Connect, send and read the answer's head; raises aiohttp's ClientError subclasses
        as a session would. The caller closes the Exchange. `at_socket`: timed by the kernel
        where it can be (`_TimedSocket`); else by the loop's transport, in its callbacks."""
        key = ConnectionKey(
            plan.host, plan.port, plan.is_ssl, ssl_context, None, None, None, plan.server_name
        )
        retry = plan.retry
        while True:
            dns: float | None = None
            addresses: Sequence[AddrInfo] = plan.literal
            if not addresses:
                looked_up = time.perf_counter()
                addresses, fresh = await self._addresses(plan, key)
                dns = time.perf_counter() - looked_up if fresh else None
            connecting = time.perf_counter()
            timed = at_socket and not plan.is_ssl and len(addresses) == 1 and _can_stamp()
            transport: asyncio.Transport
            if timed:
                transport, handler, connected = await _open_timed(key, addresses[0])
            else:
                transport, handler = await self._connect(plan, key, addresses, ssl_context)
                connected = handler.connected_at
            try:
                handler.set_response_params(skip_payload=plan.method == "HEAD", read_until_eof=True)
                held = max(0.0, time.perf_counter() - connected) if timed else 0.0
                transport.write(_wire(plan))
                try:
                    message, payload = await self._head(handler, plan)
                except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                    if not retry:
                        raise
                    retry = False
                    transport.close()
                    continue
            except BaseException:
                transport.close()
                raise
            headers = message.headers
            redirect = (
                follow_redirects
                and message.code in _REDIRECTS
                and bool(headers.get("Location") or headers.get("URI"))  # as aiohttp reads them
            )
            return Exchange(
                status=message.code,
                headers=headers,
                payload=payload,
                transport=transport,
                dns=dns,
                connect=connected - connecting,
                first_byte=handler.first_byte_at,
                handler=handler,
                redirect=redirect,
                held=held,
                at_socket=timed,
            )

    async def _head(self, handler: _Handler, plan: Plan) -> tuple[RawResponseMessage, StreamReader]:
        """The final response's head, past any 1xx, as ClientResponse.start reads it."""
        while True:
            try:
                message, payload = await handler.read()
            except HttpProcessingError as exc:
                info = RequestInfo(URL(plan.url), plan.method, _NO_HEADERS)
                raise aiohttp.ClientResponseError(
                    info, (), status=exc.code, message=exc.message, headers=exc.headers
                ) from exc
            if message.code < 100 or message.code > 199 or message.code == 101:
                return message, payload

    async def _connect(
        self,
        plan: Plan,
        key: ConnectionKey,
        addresses: Sequence[AddrInfo],
        ssl_context: ssl.SSLContext,
    ) -> tuple[asyncio.Transport, _Handler]:
        """A connection to the first address that answers, tried as aiohttp's connector
        tries them: happy eyeballs over the list, then again without the first address."""
        loop = asyncio.get_running_loop()
        context = ssl_context if plan.is_ssl else None

        def factory() -> _Handler:
            return _Handler(loop)

        if len(addresses) == 1:
            # One address: straight to it (asyncio and uvloop take an IP without a lookup).
            # _wrapped written out: a coroutine less that the connecting check resumes through.
            _, _, _, _, address = addresses[0]
            try:
                return await loop.create_connection(
                    factory, address[0], address[1], ssl=context, server_hostname=plan.server_name
                )
            except OSError as exc:  # ssl's errors are OSErrors too
                if exc.errno is None and isinstance(exc, TimeoutError):
                    raise
                raise _connector_error(key, exc) from exc
        remaining = list(addresses)
        last: Exception | None = None
        while remaining:
            try:
                sock = await _wrapped(
                    key,
                    aiohappyeyeballs.start_connection(
                        remaining, happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY, loop=loop
                    ),
                )
                return await _wrapped(
                    key,
                    loop.create_connection(
                        factory, sock=sock, ssl=context, server_hostname=plan.server_name
                    ),
                )
            except aiohttp.ClientConnectorError as exc:
                last = exc
                aiohappyeyeballs.pop_addr_infos_interleave(remaining, None)
        assert last is not None
        raise last

    async def _addresses(self, plan: Plan, key: ConnectionKey) -> tuple[list[AddrInfo], bool]:
        """The host's addresses, from the cache while fresh (rotated one each use, as
        aiohttp's), and whether a lookup was made for them; ClientConnectorDNSError else."""
        loop = asyncio.get_running_loop()
        name = (plan.host, plan.port)
        cached = self._hosts.get(name)
        if cached is not None and loop.time() < cached[0]:
            return _next(cached[1]), False
        lookup = self._lookups.get(name)
        if lookup is None:
            lookup = self._lookups[name] = loop.create_task(self._look_up(plan.host, plan.port))
            lookup.add_done_callback(lambda task: self._looked_up(name, task))
        try:
            # Shielded: a check that times out leaves the lookup to the others waiting on it.
            found = await asyncio.shield(lookup)
        except OSError as exc:
            if exc.errno is None and isinstance(exc, TimeoutError):
                raise
            raise aiohttp.ClientConnectorDNSError(key, exc) from exc
        cached = self._hosts.get(name)
        if cached is None or cached[1] is not found:
            if len(self._hosts) >= _MAX_HOSTS:
                self._hosts.pop(next(iter(self._hosts)))
            cached = self._hosts[name] = (loop.time() + self._ttl, found)
        return _next(cached[1]), True

    def _looked_up(self, name: tuple[str, int], task: asyncio.Task[list[AddrInfo]]) -> None:
        self._lookups.pop(name, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have timed out

    async def _look_up(self, host: str, port: int) -> list[AddrInfo]:
        if self._resolver is None:
            self._resolver = DefaultResolver()
        found = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
        infos: list[AddrInfo] = []
        for item in found:
            address = item["host"]
            if ":" in address:
                infos.append(
                    (
                        socket.AF_INET6,
                        socket.SOCK_STREAM,
                        socket.IPPROTO_TCP,
                        "",
                        (address, item["port"], 0, 0),
                    )
                )
            else:
                infos.append(
                    (
                        socket.AF_INET,
                        socket.SOCK_STREAM,
                        socket.IPPROTO_TCP,
                        "",
                        (address, item["port"]),
                    )
                )
        return infos


_OWN_NUMBERS = ("alpha", "parisc", "sparc")
# SO_TIMESTAMPNS: Linux's generic value (Python names it from 3.14); the few architectures that
# number their socket options otherwise, and other systems, use the loop's transport.
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMED = (
    sys.platform == "linux"
    and hasattr(socket, "TCP_INFO")
    and (hasattr(socket, "SO_TIMESTAMPNS") or not os.uname().machine.startswith(_OWN_NUMBERS))
)
_TIMESPEC = struct.Struct("@qq")  # struct timespec: the kernel's receive time (CLOCK_REALTIME)
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) if _TIMED else 0
_TCP_INFO = struct.Struct("@68xI28xI")  # struct tcp_info: tcpi_rtt (us), tcpi_total_retrans
_READ_SIZE = 65536


async def _open_timed(
    key: ConnectionKey, address: AddrInfo
) -> tuple[_TimedSocket, _Handler, float]:
    """A plain TCP connection to `address` read by `_TimedSocket`, and when it was made
    (perf_counter): the connect call's time plus the kernel's round trip for the handshake,
    which a busy loop does not lengthen; when a SYN went twice (the round trip would leave out
    the wait for it), when the loop saw it ready."""
    family, _, _, _, where = address
    loop = asyncio.get_running_loop()
    # _socket's: socket.socket's Python layer (its __init__, close, io refs) is ~4 us a check
    sock = _socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    fd = sock.fileno()
    watching = False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        calling = time.perf_counter()
        failed = sock.connect_ex(where)
        if failed == errno.EINPROGRESS:
            ready = loop.create_future()
            loop.add_writer(fd, _resolve, ready)
            watching = True
            await ready
            failed = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        seen = time.perf_counter()
        if failed:
            # Worded as asyncio's and uvloop's sock_connect word it.
            raise _connector_error(key, OSError(failed, f"Connect call failed {where}"))
        rtt, resent = _TCP_INFO.unpack(
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
        )
        handshake = rtt / 1e6
        connected = calling + handshake if not resent and 0 < handshake < seen - calling else seen
        handler = _Handler(loop)
        # Its reader is added before the writer goes: uvloop keeps one poll handle for the
        # socket (a handle made and dropped costs ~5 epoll_ctl calls and an ioctl).
        transport = _TimedSocket(loop, sock, handler)
    except BaseException:
        if watching:
            loop.remove_writer(fd)
        sock.close()
        raise
    if watching:
        loop.remove_writer(fd)
    handler.connected_at = connected
    return transport, handler, connected


_stamping: _socket.socket | None = None


def _stamps_on() -> None:
    """Keep the kernel stamping received packets for as long as this process lives: one idle
    socket asking for SO_TIMESTAMPNS. Without it, the first connection to ask turns stamping
    on and the last one to close turns it off again, each time by patching the kernel's code
    from a work queue (IPIs to every CPU, billed to whatever they interrupt: ~85 us of the
    probe workers' CPU a check at 200 checks/s, bench/README.md), and the first answers after
    it went off came unstamped. Stamping costs the kernel a clock read per packet."""
    global _stamping
    if _stamping is None:
        keeper = _socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            keeper.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            keeper.close()
            raise
        _stamping = keeper


def _can_stamp() -> bool:
    """Whether this process can time at the socket: the first call keeps stamping on
    (`_stamps_on`); a kernel or sandbox that refuses the option leaves every check to the
    loop's transports, never failing one for it."""
    global _TIMED
    if _TIMED and _stamping is None:
        try:
            _stamps_on()
        except OSError:
            _TIMED = False
    return _TIMED


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _arrived(ancillary: list[tuple[int, int, bytes]], read_at: float, since: float) -> float:
    """When the bytes of one read reached the socket (perf_counter), from the kernel's receive
    time in `ancillary`: how long before the read (`read_at`) they came, by the wall clock.
    The read's own time where there is none, or where the two clocks disagree (before the
    request went, `since`, or after the read: a wall clock stepped in between, or faked)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds: int
            nanoseconds: int
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            waited = (time.time_ns() - seconds * 1_000_000_000 - nanoseconds) / 1e9
            if 0.0 <= waited <= read_at - since:
                return read_at - waited
    return read_at


class _TimedSocket(asyncio.Transport):
    """A plain TCP connection's transport for aiohttp's protocol (`_Handler`), read with
    recvmsg so that each read comes with the kernel's time for its bytes (SO_TIMESTAMPNS) and
    the protocol is told that time, not the time of the read. Only what the lean path and
    ResponseHandler use: write (the request, in one piece), reading paused and resumed, close.
    Written for both loops' public API (add_reader/add_writer): uvloop's C transports cannot
    hand over the ancillary data."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: _socket.socket, protocol: _Handler
    ) -> None:
        self._extra = {"socket": sock}
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._closing = False
        self._unsent = b""
        self._since = 0.0  # when the request was written (perf_counter)
        protocol.connection_made(self)
        self._reading = True
        loop.add_reader(self._fd, self._read_ready)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in ("peername", "sockname"):
            try:
                return self._sock.getpeername() if name == "peername" else self._sock.getsockname()
            except OSError:
                return default
        return super().get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._read_ready)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = cast(_Handler, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def get_write_buffer_size(self) -> int:
        return len(self._unsent)

    def can_write_eof(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._since = time.perf_counter()
        if self._unsent:
            self._unsent += bytes(data)
            return
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lose(exc)
            return
        if sent < len(data):
            self._unsent = bytes(data[sent:])
            self._loop.add_writer(self._fd, self._write_ready)

    def _write_ready(self) -> None:
        try:
            sent = self._sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        self._unsent = self._unsent[sent:]
        if not self._unsent:
            self._loop.remove_writer(self._fd)

    def _read_ready(self) -> None:
        try:
            data, ancillary, _, _ = self._sock.recvmsg(_READ_SIZE, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        if data:
            read_at = time.perf_counter()
            self._protocol.timed_data(data, _arrived(ancillary, read_at, self._since))
        else:
            self._protocol.eof_received()
            self._lose(None)

    def close(self) -> None:
        self._lose(None)

    def abort(self) -> None:
        self._lose(None)

    def _lose(self, exc: BaseException | None) -> None:
        """Close now (the socket and its watchers); the protocol hears of it on the next turn,
        as from the loops' own transports."""
        if self._closing:
            return
        self._closing = True
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
        if self._unsent:
            self._unsent = b""
            self._loop.remove_writer(self._fd)
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, exc)


_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
_MAX_HOSTS = 1000  # as aiohttp's DNS cache
_T = TypeVar("_T")


def _next(addresses: list[AddrInfo]) -> list[AddrInfo]:
    """The addresses in the order to try them now; the next use starts one further on
    (aiohttp's round robin over a name's addresses)."""
    order = list(addresses)
    if len(addresses) > 1:
        addresses.append(addresses.pop(0))
    return order


async def _wrapped(key: ConnectionKey, connecting: Awaitable[_T]) -> _T:
    """Await a connection attempt, its errors as aiohttp's connector words them."""
    try:
        return await connecting
    except OSError as exc:  # ssl's errors are OSErrors too
        if exc.errno is None and isinstance(exc, TimeoutError):
            raise
        raise _connector_error(key, exc) from exc


def _connector_error(key: ConnectionKey, exc: OSError) -> aiohttp.ClientConnectorError:
    """A failed connection attempt's error as aiohttp's connector words it."""
    if isinstance(exc, ssl.CertificateError):
        return aiohttp.ClientConnectorCertificateError(key, exc)
    if isinstance(exc, ssl.SSLError):
        return aiohttp.ClientConnectorSSLError(key, exc)
    return aiohttp.ClientConnectorError(key, exc)
