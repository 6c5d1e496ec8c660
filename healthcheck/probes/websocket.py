"""WebSocket check with aiohttp: does the upgrade succeed, and what is the first message the
server sends (after our optional `send`)."""

from __future__ import annotations

import ssl
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.probes.base import NETWORK_ERRORS, PROGRESS, Probe
from healthcheck.probes.http_client import classify_client_error, client_session, tls_context
from healthcheck.probes.tls import PEER_TLS, TlsContexts, peer_expiry
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.schema import Option, TlsOptions
from healthcheck.secrets import Secret, reveal
from healthcheck.targets import Endpoint, ProbeSettings

DEFAULT_MAX_BODY = 1024 * 1024
_HTTP_SCHEME = {"ws": "http", "wss": "https"}


@dataclass(frozen=True, slots=True)
class WebsocketSettings(ProbeSettings):
    url: str
    send: str | Secret | None = None
    headers: tuple[tuple[str, str | Secret], ...] = ()
    tls: TlsOptions = field(default_factory=TlsOptions)
    max_body: int = DEFAULT_MAX_BODY


def websocket_url(value: Any) -> str:
    url = schema.text(value)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError("not a valid URL: it must start with ws:// or wss://")
    if not parts.hostname:
        raise ValueError("not a valid URL: it has no host name")
    if any(ch.isspace() for ch in url):
        raise ValueError("not a valid URL: it contains whitespace")
    return url


def _message(value: Any) -> str | Secret:
    """A text frame to send; one from ${ENV} stays a Secret."""
    return value if isinstance(value, Secret) else schema.text(value)


def _header_pairs(value: Any) -> tuple[tuple[str, str | Secret], ...]:
    return tuple(schema.headers(value).items())


# The header names holding a secret, and the origins of each request of the running upgrade's
# redirect chain (the first one's first); set around each upgrade.
_CHAIN: ContextVar[tuple[tuple[str, ...], list[object]] | None] = ContextVar(
    "healthcheck_ws_chain", default=None
)


async def _secret_headers_stay_home(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """Drop the headers from ${ENV} once a redirect left the first URL's origin, as the http
    kind does: aiohttp drops only its own Authorization there."""
    chain = _CHAIN.get()
    if chain is not None:
        secret, origins = chain
        origin = request.url.origin()
        if origin.scheme in _HTTP_SCHEME:  # ws://host is http://host's origin
            origin = origin.with_scheme(_HTTP_SCHEME[origin.scheme])
        origins.append(origin)
        if any(origin != origins[0] for origin in origins):
            for name in secret:
                request.headers.popall(name, None)
    return await handler(request)


class WebsocketProbe(Probe):
    kind = "websocket"
    settings = WebsocketSettings
    options = {
        "url": Option(websocket_url, help="ws:// or wss:// URL to upgrade"),
        "send": Option(schema.optional(_message), None, help="text frame sent after the upgrade"),
        "headers": Option(_header_pairs, ()),
        "tls": Option(schema.tls_options, TlsOptions()),
        "max_body": Option(schema.size, DEFAULT_MAX_BODY, help="largest first message"),
    }
    placeholders = frozenset({"BODY", "CONNECTED", "RESPONSE_TIME", "CERTIFICATE_EXPIRATION"})
    errors = (
        *NETWORK_ERRORS,
        ErrorClass.HTTP_STATUS,
        ErrorClass.BODY_TOO_LARGE,
        ErrorClass.INVALID_RESPONSE,
        ErrorClass.CONDITION_FAILED,
    )

    async def start(self) -> None:
        self._tls = TlsContexts()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        """One session; a fresh connection per check (an upgraded one is never reused)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, force_close=True)
            self._session = client_session(connector, middlewares=(_secret_headers_stay_home,))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def attempt(self, target: Endpoint) -> ProbeResult:
        settings = target.settings.narrow(WebsocketSettings)
        started = time.perf_counter()
        timestamp = self.clock()
        ssl_context: ssl.SSLContext | bool = True
        if settings.url.startswith("wss:"):
            made = tls_context(self._tls, settings.tls)
            if isinstance(made, str):
                return self.failed(target, ErrorClass.TLS, made, started, timestamp)
            ssl_context = made
        secret = tuple(name for name, value in settings.headers if isinstance(value, Secret))
        handshakes: list[ssl.SSLObject] = []
        recording = PEER_TLS.set(handshakes)
        chained = _CHAIN.set((secret, []))
        try:
            async with self._client().ws_connect(
                settings.url,
                headers={name: reveal(value) for name, value in settings.headers},
                ssl=ssl_context,
                server_hostname=settings.tls.server_name,
                max_msg_size=settings.max_body,
                autoping=True,
            ) as socket:
                if (progress := PROGRESS.get()) is not None:
                    progress.awaiting = "upgraded, but no message"  # what its timeout says
                if settings.send is not None:
                    await socket.send_str(reveal(settings.send))
                message = await socket.receive()
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status != 101:
                text = f"upgrade refused: HTTP {exc.status}"
                return self.failed(
                    target, ErrorClass.HTTP_STATUS, text, started, timestamp, http_status=exc.status
                )
            text = f"not a WebSocket upgrade ({exc.message})"
            return self.failed(target, ErrorClass.INVALID_RESPONSE, text, started, timestamp)
        except aiohttp.ClientError as exc:
            error, text = classify_client_error(exc)
            return self.failed(target, error, text, started, timestamp)
        finally:
            _CHAIN.reset(chained)
            PEER_TLS.reset(recording)

        if message.type is aiohttp.WSMsgType.TEXT:
            body = str(message.data).encode()
        elif message.type is aiohttp.WSMsgType.BINARY:
            body = bytes(message.data)
        else:
            error, text = _no_message(message)
            return self.failed(target, error, text, started, timestamp)
        cert_expiry = peer_expiry(handshakes[-1]) if handshakes else None
        context = ConditionContext(
            body=body,
            connected=True,
            certificate_expiration_s=None if cert_expiry is None else cert_expiry - self.clock(),
        )
        details = (("message_bytes", len(body)),)
        return self.judged(
            target, context, started, timestamp, cert_expiry=cert_expiry, details=details
        )


def _no_message(message: aiohttp.WSMessage) -> tuple[ErrorClass, str]:
    """Why the first thing read was not a message: a close, or a frame we refused."""
    if message.type is aiohttp.WSMsgType.ERROR:
        exc = message.data
        if getattr(exc, "code", None) == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
            return ErrorClass.BODY_TOO_LARGE, "first message is over the max_body cap"
        return ErrorClass.INVALID_RESPONSE, f"not a valid WebSocket frame ({exc})"
    code = message.data if message.type is aiohttp.WSMsgType.CLOSE else None
    said = f" (code {code}{': ' + message.extra if message.extra else ''})" if code else ""
    return ErrorClass.CONNECTION_RESET, f"closed by the server before any message{said}"
