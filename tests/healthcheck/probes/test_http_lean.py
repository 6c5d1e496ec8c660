"""The lean HTTP path (http_lean.py) against the session path: the same loopback servers
checked both ways must give the same result, bar the times."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from healthcheck.event_loop import _uvloop_loop
from healthcheck.loop_lag import lag_of
from healthcheck.prober import Prober
from healthcheck.probes.http import HttpProbe, HttpSettings
from healthcheck.probes.http_lean import _SO_TIMESTAMPNS, LeanClient, _arrived, plan
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.schema import TlsOptions
from healthcheck.secrets import Secret
from healthcheck.status import _target_latency
from tests.support.polling import until

BIG = 2 * 1024 * 1024
UP = b'{"status": "UP", "items": [1, 2]}'


async def ok(_r: web.Request) -> web.Response:
    return web.Response(body=UP, content_type="application/json")


async def fail(_r: web.Request) -> web.Response:
    return web.Response(status=500, text="boom")


async def gzipped(_r: web.Request) -> web.Response:
    response = web.Response(body=UP, content_type="application/json")
    response.enable_compression(web.ContentCoding.gzip)
    return response


async def deflated(_r: web.Request) -> web.Response:
    return web.Response(
        body=zlib.compress(UP), headers={"Content-Encoding": "deflate"}, content_type="text/plain"
    )


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for part in (UP[:10], UP[10:]):
        await response.write(part)
    await response.write_eof()
    return response


async def huge(_r: web.Request) -> web.Response:
    return web.Response(body=b"x" * BIG)


async def huge_chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(BIG // 65536 + 1):
        await response.write(b"x" * 65536)
    await response.write_eof()
    return response


async def hang(_r: web.Request) -> web.Response:
    await asyncio.Event().wait()
    return web.Response()


async def redirect(_r: web.Request) -> web.Response:
    raise web.HTTPFound("/ok")


async def echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "method": request.method,
            "auth": request.headers.get("Authorization"),
            "body": await request.text(),
        }
    )


def app() -> web.Application:
    application = web.Application()
    routes = {
        "/ok": ok,
        "/fail": fail,
        "/gzip": gzipped,
        "/deflate": deflated,
        "/chunked": chunked,
        "/huge": huge,
        "/huge-chunked": huge_chunked,
        "/hang": hang,
        "/redirect": redirect,
    }
    for path, handler in routes.items():
        application.router.add_get(path, handler)  # HEAD too
    application.router.add_route("*", "/echo", echo)
    return application


async def start(application: web.Application, tls: ssl.SSLContext | None = None) -> Any:
    runner = web.AppRunner(application, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    runner, port = await start(app())
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def probes() -> AsyncIterator[tuple[HttpProbe, HttpProbe]]:
    """(lean, session): the same probe kind, the second with the lean path off."""
    lean, session = HttpProbe(), HttpProbe()
    session.lean = False
    for probe in (lean, session):
        await probe.start()
    yield lean, session
    for probe in (lean, session):
        await probe.close()


def verdict(result: ProbeResult) -> tuple[object, ...]:
    """All of a result but its times (which phases were measured, not how long they took)."""
    phases = result.phases
    measured = (
        None
        if phases is None
        else tuple(
            getattr(phases, name) is not None
            for name in ("dns", "connect", "tls", "first_byte", "total")
        )
    )
    return (
        result.ok,
        result.error,
        result.error_text,
        result.http_status,
        tuple((c.condition, c.passed, c.detail) for c in result.conditions),
        result.cert_expiry,
        measured,
        result.attempts,
    )


Check = Callable[..., Awaitable[tuple[ProbeResult, ProbeResult]]]


@pytest.fixture
def both(probes, endpoint) -> Check:
    """Check one endpoint with the lean probe and with the session probe."""

    async def check(
        settings: HttpSettings, conditions: tuple[str, ...] = (), **extra: Any
    ) -> tuple[ProbeResult, ProbeResult]:
        target = endpoint("http", settings, conditions=conditions, **extra)
        lean, session = probes
        return await lean.run(target), await session.run(target)

    return check


BODY_UP = ("[BODY].status == UP", "len([BODY].items) == 2")


@pytest.mark.parametrize(
    ("path", "extra", "conditions", "error"),
    [
        ("/ok", {}, BODY_UP, None),
        ("/ok", {"phases": True}, ("[STATUS] == 200", "[CONNECTED] == true"), None),
        ("/ok", {"expected_status": (204,)}, (), ErrorClass.HTTP_STATUS),
        ("/fail", {}, (), ErrorClass.HTTP_STATUS),
        ("/fail", {}, ("[BODY] == boom", "[STATUS] == 500"), None),
        ("/gzip", {}, BODY_UP, None),
        ("/deflate", {}, BODY_UP, None),
        ("/chunked", {}, BODY_UP, None),
        ("/huge", {}, (), ErrorClass.BODY_TOO_LARGE),
        ("/huge-chunked", {}, (), ErrorClass.BODY_TOO_LARGE),
        ("/huge", {"max_body": 4 * 1024 * 1024}, ("[BODY] == pat(x*)",), None),
        ("/huge", {"method": "HEAD"}, (), ErrorClass.BODY_TOO_LARGE),  # by Content-Length
        ("/ok", {"method": "HEAD"}, ("[STATUS] == 200",), None),
        ("/redirect", {"follow_redirects": False}, (), ErrorClass.HTTP_STATUS),
        ("/redirect", {"follow_redirects": False, "expected_status": (302,)}, (), None),
        ("/redirect", {}, BODY_UP, None),
    ],
)
async def test_same_result_both_ways(
    probes, both, base_url, path, extra, conditions, error
) -> None:
    lean, session = await both(HttpSettings(url=base_url + path, **extra), conditions)
    assert verdict(lean) == verdict(session)
    assert lean.error is error, lean.error_text
    # The lean probe opened no session: but for the redirect it follows.
    followed = path == "/redirect" and extra.get("follow_redirects", True)
    assert bool(probes[0]._sessions) == followed


async def test_method_body_and_a_secret_header(both, base_url) -> None:
    settings = HttpSettings(
        url=f"{base_url}/echo",
        method="POST",
        headers=(("Authorization", Secret("Bearer s3cr3t-token")),),
        body='{"probe": true}',
    )
    conditions = (
        "[BODY].method == POST",
        "[BODY].auth == Bearer s3cr3t-token",
        "[BODY].body == pat(*probe*)",
    )
    lean, session = await both(settings, conditions)
    assert lean.ok, lean.error_text
    assert verdict(lean) == verdict(session)


async def test_a_redirecting_url_goes_to_the_session_after_its_first_check(
    probes, endpoint
) -> None:
    asked: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        asked.append(request.path)
        raise web.HTTPFound("/ok")

    application = app()
    application.router.add_get("/moved", moved)
    runner, port = await start(application)
    lean, _ = probes
    target = endpoint(
        "http", HttpSettings(url=f"http://127.0.0.1:{port}/moved"), conditions=BODY_UP
    )
    try:
        counts = []
        for _ in range(3):
            result = await lean.run(target)
            assert result.ok and result.http_status == 200, result.error_text
            counts.append(len(asked))
    finally:
        await runner.cleanup()
    assert counts == [2, 3, 4]  # twice on the first check (lean, then the session), then once


async def _raw(handler: Callable[..., Awaitable[None]]) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # close with RST


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"SSH-2.0-OpenSSH_9.2 definitely not http\r\n\r\n")
    await writer.drain()
    writer.close()


async def _cut_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
    await writer.drain()
    writer.close()


async def _silent_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def _bad_gzip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nContent-Encoding: gzip\r\n\r\nnot gzip!")
    await writer.drain()
    writer.close()


async def _continue_then_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    writer.close()


async def _empty_location(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 302 Found\r\nLocation: \r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


async def _until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + UP)  # no length: the body ends with the connection
    await writer.drain()
    writer.close()


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (_reset, ErrorClass.CONNECTION_RESET),
        (_garbage, ErrorClass.INVALID_RESPONSE),
        (_cut_off, ErrorClass.CONNECTION_RESET),
        (_silent_close, ErrorClass.CONNECTION_RESET),
        (_bad_gzip, ErrorClass.CONNECTION_RESET),  # as aiohttp says it
        (_continue_then_ok, None),
        (_until_eof, None),
        (_empty_location, ErrorClass.HTTP_STATUS),  # nowhere to go: aiohttp keeps the 302
    ],
)
async def test_broken_servers_fail_the_same_way(probes, endpoint, handler, error) -> None:
    connections: list[str] = []
    turn = ["lean"]

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(turn[0])
        await handler(reader, writer)

    server, port = await _raw(counted)
    async with server:
        target = endpoint("http", HttpSettings(url=f"http://127.0.0.1:{port}/"))
        lean = await probes[0].run(target)
        turn[0] = "session"
        session = await probes[1].run(target)
    assert verdict(lean) == verdict(session)
    assert lean.error is error, lean.error_text
    # aiohttp asks a second time when a GET's connection ends before a response: so do we.
    assert connections.count("lean") == connections.count("session")


async def test_timeout_refused_and_dns_fail_the_same_way(both, base_url, closed_port) -> None:
    for settings, timeout, error in [
        (HttpSettings(url=f"{base_url}/hang"), 0.3, ErrorClass.TIMEOUT),
        (HttpSettings(url=f"http://127.0.0.1:{closed_port}/"), 5.0, ErrorClass.CONNECTION_REFUSED),
        (HttpSettings(url="http://no-such-host.invalid/"), 5.0, ErrorClass.DNS),
    ]:
        lean, session = await both(settings, timeout=timeout)
        assert lean.error is error, lean.error_text
        assert verdict(lean) == verdict(session)


async def test_a_name_is_looked_up_and_its_addresses_tried(both, base_url) -> None:
    """localhost may have ::1 before 127.0.0.1, where nothing listens: both paths get through."""
    url = base_url.replace("127.0.0.1", "localhost") + "/ok"
    for phases in (True, False):  # the second from the cache (phases off: a slow machine
        # could let the cache's 10 s pass on one path and not on the other)
        lean, session = await both(HttpSettings(url=url, phases=phases), BODY_UP)
        assert lean.ok, lean.error_text
        assert verdict(lean) == verdict(session)


async def test_a_timed_out_check_leaves_no_connection_open(probes, endpoint) -> None:
    lean, _ = probes
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client closes
        closed.set()
        writer.close()

    server, port = await _raw(silent)
    async with server:
        target = endpoint("http", HttpSettings(url=f"http://127.0.0.1:{port}/"), timeout=0.2)
        result = await lean.run(target)
        assert result.error is ErrorClass.TIMEOUT
        await until(closed.is_set)


@pytest.fixture
async def https(ca, tmp_path) -> AsyncIterator[tuple[dict[str, str], str]]:
    now = datetime.now(UTC)
    valid = ca.issue_cert("127.0.0.1", "localhost")
    expired = ca.issue_cert(
        "127.0.0.1", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    runners, urls = [], {}
    for name, cert in (("valid", valid), ("expired", expired)):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        runner, port = await start(app(), context)
        runners.append(runner)
        urls[name] = f"https://127.0.0.1:{port}"
    ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    yield urls, ca_file
    for runner in runners:
        await runner.cleanup()


async def test_https_the_same_both_ways(both, https) -> None:
    urls, ca_file = https
    pinned = TlsOptions(ca_file=ca_file)
    cases = [
        (HttpSettings(url=urls["valid"] + "/ok", tls=pinned), ("[CERTIFICATE_EXPIRATION] > 48h",)),
        (HttpSettings(url=urls["valid"] + "/gzip", tls=pinned, phases=True), BODY_UP),
        (HttpSettings(url=urls["valid"] + "/redirect", tls=pinned), BODY_UP),
        (HttpSettings(url=urls["valid"] + "/ok"), ()),  # an unknown CA
        (HttpSettings(url=urls["expired"] + "/ok", tls=pinned), ()),
        (HttpSettings(url=urls["expired"] + "/ok", tls=TlsOptions(verify=False)), ()),
        (
            HttpSettings(
                url=urls["valid"] + "/ok", tls=TlsOptions(ca_file=ca_file, server_name="wrong")
            ),
            (),
        ),
    ]
    for settings, conditions in cases:
        lean, session = await both(settings, conditions)
        assert verdict(lean) == verdict(session), settings
    valid, _ = await both(cases[0][0], cases[0][1])
    assert valid.ok and valid.cert_expiry is not None, valid.error_text


async def test_the_same_request_on_the_wire(probes, endpoint) -> None:
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = [
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ]
        heads.append(head + (await reader.readexactly(length[0]) if length else b""))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server, port = await _raw(record)
    url = f"http://127.0.0.1:{port}/path?q=1&r=%20"
    async with server:
        for settings in [
            HttpSettings(url=url),
            HttpSettings(url=url, method="HEAD"),
            HttpSettings(url=url, method="DELETE"),
            HttpSettings(url=url, method="POST"),
            HttpSettings(url=url, method="PUT", body="{}", headers=(("Content-Type", "a/b"),)),
            HttpSettings(
                url=url,
                headers=(("User-Agent", "mine"), ("X-Key", Secret("k")), ("Accept", "text/plain")),
            ),
            HttpSettings(url=url, headers=(("Host", "example.test"),)),
        ]:
            for probe in probes:
                assert (await probe.run(endpoint("http", settings))).ok
    for lean, session in zip(heads[::2], heads[1::2], strict=True):
        assert _lines(lean) == _lines(session)


def _lines(request: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, _, body = request.partition(b"\r\n\r\n")
    first, *headers = head.split(b"\r\n")
    return first, sorted(headers), body


def test_the_answer_is_timed_when_it_is_read_not_when_the_check_next_runs(endpoint) -> None:
    """A loop busy between reading the answer and waking the check (1 s of someone else's
    callback, run right after the read) is the prober's time, not the target's: the latency
    stops at the last byte read from the socket. On asyncio's own loop, whose order is
    defined: a timer that falls due runs after that turn's I/O callbacks (the read), before
    the task the read wakes (uvloop orders its turn otherwise, so the stall cannot be put
    there from outside; its transports call the same protocol callbacks)."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    async def scenario() -> tuple[ProbeResult, float]:
        loop = asyncio.get_running_loop()

        async def answer_then_stall_the_loop(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)  # on loopback the bytes wait in the check's socket at once
            loop.call_later(0, time.sleep, 1.0)
            await writer.drain()
            writer.close()

        probe = HttpProbe()
        await probe.start()
        server, port = await _raw(answer_then_stall_the_loop)
        try:
            async with server:
                url = f"http://127.0.0.1:{port}/"
                target = endpoint("http", HttpSettings(url=url), timeout=10)
                began = time.perf_counter()
                result = await probe.run(target)
                return result, time.perf_counter() - began
        finally:
            await probe.close()

    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        result, took = runner.run(scenario())
    assert result.ok, result.error_text
    assert took >= 1.0  # the stall fell inside the check
    assert result.latency < took - 0.9, (result.latency, took)
    assert result.phases is not None and result.phases.total == result.latency


@pytest.mark.parametrize("addresses", [1, 2])
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_connection_sends_without_delay(loop, addresses) -> None:
    """The lean path leaves TCP_NODELAY to the loop's transport (aiohttp's protocol sets it
    again; _Handler does not): on both loops, to one address (the loop connects) and to
    several (tried as happy eyeballs, the socket then handed to the loop), the request goes
    out without Nagle's wait."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    factory = _uvloop_loop() if loop == "uvloop" else asyncio.SelectorEventLoop

    async def scenario() -> tuple[int, bool]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        server, port = await _raw(answer)
        client = LeanClient()
        async with server:
            request = plan(f"http://127.0.0.1:{port}/", "GET", (), None, None)
            assert request is not None and request.raw is not None  # no secret: made once
            request = replace(request, literal=request.literal * addresses)
            exchange = await client.request(
                request, ssl.create_default_context(), follow_redirects=False
            )
            try:
                sock = exchange.transport.get_extra_info("socket")
                return exchange.status, bool(
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                )
            finally:
                exchange.close()
                await client.close()

    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(scenario()) == (200, True)


class _ThreadServer:
    """A one-connection HTTP server on a thread of its own, so that it answers while the
    check's loop is held up; it notes (perf_counter) when the request had come and when the
    answer had gone."""

    def __init__(self, on_request: Callable[[], None], delay: float) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._on_request = on_request
        self._delay = delay
        self.request_at = 0.0
        self.answered_at = 0.0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with self._listener, self._listener.accept()[0] as conn:
            received = b""
            while b"\r\n\r\n" not in received:
                received += conn.recv(4096)
            self.request_at = time.perf_counter()
            self._on_request()
            time.sleep(self._delay)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            self.answered_at = time.perf_counter()
            conn.recv(1)  # until the check closes

    def join(self) -> None:
        self._thread.join(timeout=10)


def _holder(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """For _ThreadServer: hold `loop` up for 1 s, returning once it is held (the answer sent
    after it waits in the check's socket)."""
    stalling = threading.Event()

    def stall() -> None:
        stalling.set()
        time.sleep(1.0)

    def hold() -> None:
        loop.call_soon_threadsafe(stall)
        assert stalling.wait(10)

    return hold


async def _checked(
    endpoint: Callable[..., Any], server: _ThreadServer, first: Callable[[], object] = lambda: None
) -> ProbeResult:
    """One check of `server` by an HttpProbe (`first` called just before it starts)."""
    probe = HttpProbe()
    await probe.start()
    try:
        target = endpoint("http", HttpSettings(url=f"http://127.0.0.1:{server.port}/"))
        first()
        return await probe.run(replace(target, timeout=10.0))
    finally:
        await probe.close()
        server.join()


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
        return _uvloop_loop()
    return asyncio.SelectorEventLoop


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_an_answer_that_came_while_the_loop_was_busy_is_timed_when_it_came(endpoint, loop) -> None:
    """The answer reaches the check's socket while its loop is held up for 1 s (a stall the
    server starts on the loop before it answers): the latency ends when the bytes came (the
    kernel's receive time), not when the loop got round to reading them."""

    async def scenario() -> tuple[ProbeResult, float, _ThreadServer]:
        server = _ThreadServer(_holder(asyncio.get_running_loop()), delay=0.1)
        began = time.perf_counter()
        return await _checked(endpoint, server), began, server

    with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
        result, began, server = runner.run(scenario())
    assert result.ok, result.error_text
    answered = server.answered_at - began
    assert answered >= 0.1
    # The answer was in the socket by `answered` (sendall returned); read 1 s later at best.
    assert 0.1 <= result.latency <= answered + 0.005, (result.latency, answered)
    assert result.phases is not None and result.phases.total == result.latency


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_request_the_busy_loop_wrote_late_is_not_the_targets_time(endpoint, loop) -> None:
    """The connection is made while the check's loop is held up for 1 s, so the request goes
    out a second late: that second is the prober's, and the latency is the handshake and the
    server's answer (0.1 s after the request) only."""

    async def scenario() -> tuple[ProbeResult, float, _ThreadServer]:
        running = asyncio.get_running_loop()
        server = _ThreadServer(lambda: None, delay=0.1)
        stalled: list[float] = []

        def stall() -> None:
            time.sleep(1.0)
            stalled.append(time.perf_counter())

        # Runs once the check has called connect and waits for it: the handshake is done
        # (loopback) long before the loop is free to see it and write the request.
        result = await _checked(endpoint, server, lambda: running.call_soon(stall))
        return result, stalled[0], server

    with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
        result, stall_ended, server = runner.run(scenario())
    assert result.ok, result.error_text
    assert server.request_at >= stall_ended  # the request went out after the stall
    assert 0.1 <= result.latency < 0.5, result.latency


def test_the_kernels_receive_time_is_used_only_when_the_clocks_agree() -> None:
    """`_arrived` turns the kernel's receive time (wall clock) into perf_counter time; where
    it would put the bytes before the request went or after they were read (a wall clock
    stepped or faked in between), the read's own time stands."""
    read_at = time.perf_counter()
    since = read_at - 1.0

    def received(seconds_ago: float) -> list[tuple[int, int, bytes]]:
        wall = time.time_ns() - int(seconds_ago * 1e9)
        stamp = struct.pack("@qq", wall // 1_000_000_000, wall % 1_000_000_000)
        return [(socket.SOL_SOCKET, _SO_TIMESTAMPNS, stamp)]

    assert _arrived(received(0.3), read_at, since) == pytest.approx(read_at - 0.3, abs=0.01)
    assert _arrived(received(-5.0), read_at, since) == read_at  # "after" the read
    assert _arrived(received(3600.0), read_at, since) == read_at  # before the request
    assert _arrived([], read_at, since) == read_at
    other = [(socket.SOL_SOCKET, _SO_TIMESTAMPNS + 1, received(0.3)[0][2])]
    assert _arrived(other, read_at, since) == read_at


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_an_answer_timed_at_the_socket_has_no_loop_lag_taken_off_it_again(endpoint, loop) -> None:
    """Through the Prober, with the loop held up for 1 s from just before the answer comes: the
    latency is the target's already, so no `loop_lag_ms` is noted for status to take off a
    second time (it would judge a slow target faster than it was)."""

    async def scenario() -> ProbeResult:
        server = _ThreadServer(_holder(asyncio.get_running_loop()), delay=0.3)
        async with Prober() as prober:
            try:
                target = endpoint("http", HttpSettings(url=f"http://127.0.0.1:{server.port}/"))
                return await prober.check(replace(target, timeout=10.0))
            finally:
                server.join()

    with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
        result = runner.run(scenario())
    assert result.ok, result.error_text
    assert lag_of(result) == 0.0, result.details
    assert 0.3 <= result.latency < 0.6, result.latency
    assert _target_latency(result) == result.latency
