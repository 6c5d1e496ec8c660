"""The HTTP probe against real aiohttp servers and raw sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from healthcheck.probes.http import HttpProbe, HttpSettings
from healthcheck.result import ErrorClass
from healthcheck.schema import TlsOptions
from healthcheck.secrets import Secret

BIG = 2 * 1024 * 1024
PEERS = web.AppKey("peers", list)


async def ok(_r: web.Request) -> web.Response:
    return web.json_response({"status": "UP", "items": [{"id": 1}, {"id": 2}]})


async def fail(_r: web.Request) -> web.Response:
    return web.Response(status=500, text="boom")


async def missing(_r: web.Request) -> web.Response:
    return web.Response(status=404)


async def slow(_r: web.Request) -> web.Response:
    await asyncio.sleep(0.5)
    return web.Response(text="late")


async def hang(_r: web.Request) -> web.Response:
    await asyncio.Event().wait()
    return web.Response()


async def redirect(_r: web.Request) -> web.Response:
    raise web.HTTPFound("/ok")


async def loop_redirect(_r: web.Request) -> web.Response:
    raise web.HTTPFound("/loop")


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


async def down(_r: web.Request) -> web.Response:
    return web.json_response({"status": "DOWN"})


async def echo(request: web.Request) -> web.Response:
    request.app[PEERS].append(request.transport.get_extra_info("peername")[1])
    return web.json_response(
        {
            "method": request.method,
            "auth": request.headers.get("Authorization"),
            "agent": request.headers.get("User-Agent"),
            "body": await request.text(),
        }
    )


def app() -> web.Application:
    application = web.Application()
    application[PEERS] = []
    for path, handler in {
        "/ok": ok,
        "/fail": fail,
        "/missing": missing,
        "/slow": slow,
        "/hang": hang,
        "/redirect": redirect,
        "/loop": loop_redirect,
        "/huge": huge,
        "/huge-chunked": huge_chunked,
        "/down": down,
    }.items():
        application.router.add_get(path, handler)
    application.router.add_route("*", "/echo", echo)
    return application


async def start(application: web.Application, tls: ssl.SSLContext | None = None) -> tuple:
    runner = web.AppRunner(application, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def server():
    application = app()
    runner, port = await start(application)
    yield f"http://127.0.0.1:{port}", application
    await runner.cleanup()


@pytest.fixture
def base_url(server) -> str:
    return server[0]


@pytest.fixture
async def probe():
    instance = HttpProbe()
    await instance.start()
    yield instance
    await instance.close()


@pytest.mark.parametrize(
    ("path", "extra", "conditions", "ok", "error", "status"),
    [
        ("/ok", {}, (), True, None, 200),
        ("/fail", {}, (), False, ErrorClass.HTTP_STATUS, 500),
        ("/missing", {}, (), False, ErrorClass.HTTP_STATUS, 404),
        ("/fail", {"expected_status": (500,)}, (), True, None, 500),
        ("/fail", {}, ("[STATUS] == 500",), True, None, 500),
        ("/ok", {"expected_status": (204,)}, (), False, ErrorClass.HTTP_STATUS, 200),
        ("/redirect", {}, (), True, None, 200),
        ("/redirect", {"follow_redirects": False}, (), False, ErrorClass.HTTP_STATUS, 302),
        ("/redirect", {"follow_redirects": False, "expected_status": (302,)}, (), True, None, 302),
        ("/loop", {"max_redirects": 3}, (), False, ErrorClass.INVALID_RESPONSE, None),
        ("/huge", {}, (), False, ErrorClass.BODY_TOO_LARGE, 200),
        ("/huge-chunked", {}, (), False, ErrorClass.BODY_TOO_LARGE, 200),
        ("/huge", {"max_body": 4 * 1024 * 1024}, (), True, None, 200),
        ("/ok", {}, ("[BODY].status == UP", "len([BODY].items) > 1"), True, None, 200),
        ("/down", {}, ("[BODY].status == UP",), False, ErrorClass.CONDITION_FAILED, 200),
        ("/ok", {}, ("[RESPONSE_TIME] < 5000", "[CONNECTED] == true"), True, None, 200),
    ],
)
async def test_http_outcomes(
    probe, endpoint, base_url, path, extra, conditions, ok, error, status
) -> None:
    target = endpoint("http", HttpSettings(url=base_url + path, **extra), conditions=conditions)
    result = await probe.run(target)
    assert (result.ok, result.error, result.http_status) == (ok, error, status), result.error_text
    assert result.latency > 0
    assert len(result.conditions) == len(conditions)


async def test_success_records_phases_and_peer(probe, endpoint, base_url) -> None:
    result = await probe.run(endpoint("http", HttpSettings(url=f"{base_url}/ok", phases=True)))
    assert result.phases is not None
    assert result.phases.connect is not None and result.phases.connect >= 0
    assert 0 < result.phases.first_byte <= result.phases.total
    assert result.error is None and result.error_text is None


async def test_connect_phase_only_when_asked(probe, endpoint, base_url) -> None:
    """Without `phases: true` no request is traced: first byte and total are still timed."""
    result = await probe.run(endpoint("http", HttpSettings(url=f"{base_url}/ok")))
    assert result.ok and result.phases is not None
    assert result.phases.connect is None and result.phases.dns is None
    assert 0 < result.phases.first_byte <= result.phases.total


async def test_failed_condition_says_what_was_seen(probe, endpoint, base_url) -> None:
    target = endpoint(
        "http", HttpSettings(url=f"{base_url}/down"), conditions=("[BODY].status == UP",)
    )
    result = await probe.run(target)
    assert not result.conditions[0].passed
    assert "DOWN" in (result.conditions[0].detail or "")
    assert "[BODY].status == UP" in (result.error_text or "")


@pytest.mark.parametrize("path", ["/slow", "/hang"])
async def test_timeout(probe, endpoint, base_url, path) -> None:
    target = endpoint("http", HttpSettings(url=base_url + path), timeout=0.2)
    result = await probe.run(target)
    assert result.error is ErrorClass.TIMEOUT
    assert 0.15 < result.latency < 1.0


async def test_closed_port_is_refused(probe, endpoint, closed_port) -> None:
    result = await probe.run(endpoint("http", HttpSettings(url=f"http://127.0.0.1:{closed_port}/")))
    assert result.error is ErrorClass.CONNECTION_REFUSED
    assert "connection refused" in (result.error_text or "")


async def test_unresolvable_name_is_dns(probe, endpoint) -> None:
    result = await probe.run(endpoint("http", HttpSettings(url="http://no-such-host.invalid/")))
    assert result.error is ErrorClass.DNS
    assert "no-such-host.invalid" in (result.error_text or "")


async def _raw_server(handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_connection_reset(probe, endpoint) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # close with RST

    server, port = await _raw_server(reset)
    async with server:
        result = await probe.run(endpoint("http", HttpSettings(url=f"http://127.0.0.1:{port}/")))
    assert result.error is ErrorClass.CONNECTION_RESET, result.error_text


async def test_non_http_garbage_is_invalid_response(probe, endpoint) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.2 definitely not http\r\n\r\n")
        await writer.drain()
        writer.close()

    server, port = await _raw_server(garbage)
    async with server:
        result = await probe.run(endpoint("http", HttpSettings(url=f"http://127.0.0.1:{port}/")))
    assert result.error is ErrorClass.INVALID_RESPONSE, result.error_text


async def test_a_peers_bytes_reach_the_result_as_one_printable_line(endpoint) -> None:
    """Whatever a target sends back ends up in logs, alerts and pages: never several lines,
    terminal escapes or more than a few hundred characters of it."""
    from healthcheck.prober import MAX_TEXT, Prober

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 2\x1b[31mOO\nforged: log line\r\n" + b"x" * 2000 + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    server, port = await _raw_server(garbage)
    async with server, Prober() as prober:
        target = endpoint("http", HttpSettings(url=f"http://127.0.0.1:{port}/"))
        result = await prober.check(target)
    assert result.error is ErrorClass.INVALID_RESPONSE
    text = result.error_text
    assert text and text.isprintable() and len(text) <= MAX_TEXT, repr(text)
    assert "\x1b" not in text and "\n" not in text


async def test_retry_recovers_from_one_failed_attempt(probe, endpoint) -> None:
    attempts = 0

    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        await reader.readuntil(b"\r\n\r\n")
        status = b"503 Service Unavailable" if attempts == 1 else b"200 OK"
        writer.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        )
        await writer.drain()
        writer.close()

    server, port = await _raw_server(flaky)
    async with server:
        target = endpoint("http", HttpSettings(url=f"http://127.0.0.1:{port}/"), retries=2)
        result = await probe.run(target)
    assert result.ok and result.attempts == 2


async def test_retries_stay_inside_the_budget(probe, endpoint, base_url) -> None:
    target = endpoint("http", HttpSettings(url=f"{base_url}/hang"), timeout=0.2, retries=5)
    result = await probe.run(target)
    # budget = min(interval, timeout * (retries + 1)) = 1.2s; each attempt is cut at 0.2s
    assert result.error is ErrorClass.TIMEOUT
    assert 2 <= result.attempts <= 6
    # the latency is the whole check, every attempt and backoff: not the last 0.2 s
    assert result.latency >= 0.2 * result.attempts


async def test_method_headers_body_and_secret_header(probe, endpoint, base_url) -> None:
    settings = HttpSettings(
        url=f"{base_url}/echo",
        method="POST",
        headers=(("Authorization", Secret("Bearer s3cr3t-token")),),
        body='{"probe": true}',
    )
    target = endpoint(
        "http",
        settings,
        conditions=("[BODY].method == POST", "[BODY].auth == Bearer s3cr3t-token"),
    )
    result = await probe.run(target)
    assert result.ok, result.error_text
    assert "s3cr3t" not in repr(settings)


async def test_fresh_connection_per_check_unless_keepalive(probe, endpoint, server) -> None:
    url, application = server
    for keepalive in (False, True):
        application[PEERS].clear()
        for _ in range(3):
            target = endpoint("http", HttpSettings(url=f"{url}/echo", keepalive=keepalive))
            assert (await probe.run(target)).ok
        distinct_connections = len(set(application[PEERS]))
        assert distinct_connections == (1 if keepalive else 3)


@pytest.fixture
async def https_urls(ca, tmp_path):
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
        urls[name] = f"https://127.0.0.1:{port}/ok"
    ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    yield urls, ca_file
    for runner in runners:
        await runner.cleanup()


async def test_https_valid_certificate(probe, endpoint, https_urls) -> None:
    urls, ca_file = https_urls
    settings = HttpSettings(url=urls["valid"], tls=TlsOptions(ca_file=ca_file))
    result = await probe.run(
        endpoint("http", settings, conditions=("[CERTIFICATE_EXPIRATION] > 48h",))
    )
    assert result.ok, result.error_text
    assert result.cert_expiry is not None
    assert result.cert_expiry > datetime.now(UTC).timestamp() + 86400


async def test_https_expired_certificate(probe, endpoint, https_urls) -> None:
    urls, ca_file = https_urls
    settings = HttpSettings(url=urls["expired"], tls=TlsOptions(ca_file=ca_file))
    result = await probe.run(endpoint("http", settings))
    assert result.error is ErrorClass.TLS
    assert "expired" in (result.error_text or "")


async def test_https_unknown_ca_and_skip_verify(probe, endpoint, https_urls) -> None:
    urls, _ = https_urls
    untrusted = await probe.run(endpoint("http", HttpSettings(url=urls["valid"])))
    assert untrusted.error is ErrorClass.TLS
    skipped = HttpSettings(url=urls["expired"], tls=TlsOptions(verify=False))
    assert (await probe.run(endpoint("http", skipped))).ok


async def _keys_seen(request: web.Request) -> web.Response:
    request.app[PEERS].append(request.headers.get("X-Api-Key"))
    return web.json_response({"status": "UP"})


@pytest.mark.parametrize("elsewhere", [False, True])
async def test_a_secret_header_does_not_follow_a_redirect_to_another_origin(
    probe, endpoint, elsewhere
) -> None:
    """aiohttp drops only Authorization and Cookie when a redirect leaves the origin: a header
    whose value came from ${ENV} must not reach another port either, and stays on the same."""
    second = web.Application()
    second[PEERS] = []
    second.router.add_get("/landing", _keys_seen)
    second_runner, second_port = await start(second)
    first = web.Application()
    first[PEERS] = []
    first.router.add_get("/landing", _keys_seen)

    async def away(request: web.Request) -> web.Response:
        request.app[PEERS].append(request.headers.get("X-Api-Key"))
        port = second_port if elsewhere else request.url.port
        raise web.HTTPFound(f"http://127.0.0.1:{port}/landing")

    first.router.add_get("/away", away)
    first_runner, first_port = await start(first)
    try:
        settings = HttpSettings(
            url=f"http://127.0.0.1:{first_port}/away",
            headers=(("X-Api-Key", Secret("k3y-Vq9Lw2Zr8T")), ("X-Plain", "shown")),
        )
        results = [await probe.run(endpoint("http", settings)) for _ in range(2)]
    finally:
        await first_runner.cleanup()
        await second_runner.cleanup()
    assert all(result.ok for result in results), [result.error_text for result in results]
    # The first check asks /away twice: the lean path learns that it redirects and hands the
    # check to the session, which follows it then and for every later check.
    key = "k3y-Vq9Lw2Zr8T"
    if elsewhere:
        assert first[PEERS] == [key, key, key] and second[PEERS] == [None, None]
    else:
        assert first[PEERS] == [key, key, key, key, key] and second[PEERS] == []


async def test_a_body_that_trickles_forever_keeps_its_status(probe, endpoint) -> None:
    """Headers and 200 come at once, then a byte now and then: the check says it was a 200
    whose body did not finish, not that nothing answered."""
    stop = asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while not stop.is_set():
                writer.write(b".")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
        writer.close()

    server, port = await _raw_server(trickle)
    async with server:
        target = endpoint("http", HttpSettings(url=f"http://127.0.0.1:{port}/"), timeout=0.5)
        result = await probe.run(target)
        stop.set()
    assert (result.error, result.http_status) == (ErrorClass.TIMEOUT, 200), result.error_text
    assert result.error_text == "HTTP 200, body not complete within 0.5s"
