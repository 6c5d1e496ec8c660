"""WebSocket probe against real aiohttp WebSocket servers on 127.0.0.1 (plain and TLS)."""

from __future__ import annotations

import ssl

import pytest
from aiohttp import WSCloseCode, web

from healthcheck.probes.websocket import WebsocketProbe, WebsocketSettings
from healthcheck.result import ErrorClass
from healthcheck.schema import TlsOptions
from healthcheck.secrets import Secret

SEEN = web.AppKey("seen", list)


async def greet(request: web.Request) -> web.WebSocketResponse:
    """Send a JSON hello at once."""
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    await socket.send_json({"status": "UP", "clients": [1, 2]})
    await socket.receive()  # until the client closes
    return socket


async def echo(request: web.Request) -> web.WebSocketResponse:
    """Say nothing until spoken to, then echo the text; note the X-Api-Key header."""
    request.app[SEEN].append(request.headers.get("X-Api-Key"))
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        await socket.send_str(f"echo:{message.data}")
    return socket


async def silent(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    await socket.receive()
    return socket


async def closing(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    await socket.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"maintenance")
    return socket


async def huge(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    await socket.send_bytes(b"x" * 4096)
    await socket.receive()
    return socket


async def plain(_r: web.Request) -> web.Response:
    return web.Response(text="not a websocket")


async def missing(_r: web.Request) -> web.Response:
    return web.Response(status=404)


def app() -> web.Application:
    application = web.Application()
    application[SEEN] = []
    for path, handler in {
        "/greet": greet,
        "/echo": echo,
        "/silent": silent,
        "/closing": closing,
        "/huge": huge,
        "/plain": plain,
        "/missing": missing,
    }.items():
        application.router.add_get(path, handler)
    return application


async def start(application: web.Application, tls: ssl.SSLContext | None = None):
    runner = web.AppRunner(application, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def server():
    application = app()
    runner, port = await start(application)
    yield f"ws://127.0.0.1:{port}", application
    await runner.cleanup()


@pytest.fixture
async def probe():
    instance = WebsocketProbe()
    await instance.start()
    yield instance
    await instance.close()


@pytest.fixture
def ws_target(endpoint):
    def make(url, *, conditions=(), timeout=5.0, **settings):
        return endpoint(
            "websocket",
            WebsocketSettings(url=url, **settings),
            conditions=conditions,
            timeout=timeout,
        )

    return make


async def test_the_first_message_is_the_body_with_json_paths(probe, server, ws_target) -> None:
    url, _ = server
    target = ws_target(
        f"{url}/greet",
        conditions=("[BODY].status == UP", "len([BODY].clients) == 2", "[CONNECTED] == true"),
    )

    result = await probe.run(target)

    assert result.ok, result.error_text
    assert [c.passed for c in result.conditions] == [True, True, True]
    assert result.kind == "websocket"


async def test_send_goes_first_and_the_answer_is_judged(probe, server, ws_target) -> None:
    url, _ = server
    good = ws_target(f"{url}/echo", send="ping", conditions=("[BODY] == echo:ping",))
    wrong = ws_target(f"{url}/echo", send="ping", conditions=("[BODY] == pong",))

    assert (await probe.run(good)).ok
    failed = await probe.run(wrong)
    assert failed.error is ErrorClass.CONDITION_FAILED
    assert "echo:ping" in (failed.error_text or "")


@pytest.mark.parametrize(
    ("path", "error", "text", "status"),
    [
        ("/missing", ErrorClass.HTTP_STATUS, "upgrade refused: HTTP 404", 404),
        ("/plain", ErrorClass.HTTP_STATUS, "upgrade refused: HTTP 200", 200),
        (
            "/closing",
            ErrorClass.CONNECTION_RESET,
            "closed by the server before any message (code 1013: maintenance)",
            None,
        ),
    ],
)
async def test_a_failed_upgrade_and_an_early_close_are_told_apart(
    probe, server, ws_target, path, error, text, status
) -> None:
    url, _ = server

    result = await probe.run(ws_target(f"{url}{path}"))

    assert (result.ok, result.error, result.error_text, result.http_status) == (
        False,
        error,
        text,
        status,
    )


async def test_no_message_within_the_timeout_says_it_was_upgraded(probe, server, ws_target) -> None:
    url, _ = server

    result = await probe.run(ws_target(f"{url}/silent", timeout=1.0))

    assert (result.error, result.error_text) == (
        ErrorClass.TIMEOUT,
        "upgraded, but no message within 1s",
    )


async def test_a_message_over_max_body_is_refused(probe, server, ws_target) -> None:
    url, _ = server

    result = await probe.run(ws_target(f"{url}/huge", max_body=1024))

    assert result.error is ErrorClass.BODY_TOO_LARGE


async def test_a_closed_port_is_connection_refused(probe, ws_target, closed_port) -> None:
    result = await probe.run(ws_target(f"ws://127.0.0.1:{closed_port}/"))

    assert result.error is ErrorClass.CONNECTION_REFUSED


async def test_retries_follow_a_failed_attempt(probe, ws_target, closed_port, endpoint) -> None:
    target = endpoint(
        "websocket", WebsocketSettings(url=f"ws://127.0.0.1:{closed_port}/"), retries=1
    )

    result = await probe.run(target)

    assert result.attempts == 2 and result.error is ErrorClass.CONNECTION_REFUSED


@pytest.mark.parametrize("elsewhere", [True, False])
async def test_secret_headers_do_not_follow_a_redirect_elsewhere(
    probe, ws_target, elsewhere
) -> None:
    target_app = app()
    target_runner, target_port = await start(target_app)
    front = web.Application()

    async def away(request: web.Request) -> web.Response:
        port = target_port if elsewhere else request.url.port
        raise web.HTTPFound(f"http://127.0.0.1:{port}/echo")

    front.router.add_get("/away", away)
    front[SEEN] = []
    front.router.add_get("/echo", echo)
    front_runner, front_port = await start(front)
    try:
        headers = (("X-Api-Key", Secret("k3y-Vq9Lw2Zr8T")),)
        target = ws_target(f"ws://127.0.0.1:{front_port}/away", send="hi", headers=headers)
        result = await probe.run(target)
    finally:
        await front_runner.cleanup()
        await target_runner.cleanup()
    assert result.ok, result.error_text
    if elsewhere:
        assert target_app[SEEN] == [None]
    else:
        assert front[SEEN] == ["k3y-Vq9Lw2Zr8T"]


async def test_wss_verifies_with_the_ca_file_and_reads_the_expiry(
    probe, ws_target, ca, tmp_path
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    runner, port = await start(app(), tls=context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    try:
        trusted = ws_target(
            f"wss://127.0.0.1:{port}/greet",
            tls=TlsOptions(ca_file=str(ca_file)),
            conditions=("[CERTIFICATE_EXPIRATION] > 48h",),
        )
        untrusted = ws_target(f"wss://127.0.0.1:{port}/greet")
        ok = await probe.run(trusted)
        refused = await probe.run(untrusted)
    finally:
        await runner.cleanup()
    assert ok.ok, ok.error_text
    assert ok.cert_expiry is not None
    assert refused.error is ErrorClass.TLS
    assert "certificate verify failed" in (refused.error_text or "")


async def test_send_from_the_environment_is_sent_revealed(probe, server, ws_target) -> None:
    url, _ = server
    target = ws_target(f"{url}/echo", send=Secret("t0ken"), conditions=("[BODY] == echo:t0ken",))

    result = await probe.run(target)

    assert result.ok, result.error_text
