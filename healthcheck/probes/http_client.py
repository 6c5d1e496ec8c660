"""The HTTP client every HTTP-speaking kind shares: its session, TLS context, capped body read
and the mapping of aiohttp's exceptions to error classes."""

from __future__ import annotations

import ssl

import aiohttp

from healthcheck import __version__
from healthcheck.probes.base import classify_exception, resolve_failure
from healthcheck.probes.tls import TlsContexts
from healthcheck.result import ErrorClass
from healthcheck.schema import TlsOptions
from healthcheck.secrets import cut

USER_AGENT = f"healthcheck/{__version__}"
CHUNK = 64 * 1024


def client_session(
    connector: aiohttp.BaseConnector,
    trace_configs: list[aiohttp.TraceConfig] | None = None,
    middlewares: tuple[aiohttp.ClientMiddlewareType, ...] = (),
) -> aiohttp.ClientSession:
    """A session as a probe needs it: no cookies kept between checks, our user agent, and no
    timeout of aiohttp's own (the attempt's budget bounds every request)."""
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trace_configs=trace_configs,
        headers={"User-Agent": USER_AGENT},
        timeout=aiohttp.ClientTimeout(total=None),
        middlewares=middlewares,
    )


def tls_context(contexts: TlsContexts, tls: TlsOptions) -> ssl.SSLContext | str:
    """The client context for these options, or why its ca_file cannot be loaded."""
    try:
        return contexts.context(tls.verify, tls.ca_file)
    except OSError as exc:
        return f"cannot load ca_file {tls.ca_file!r}: {exc.strerror or exc}"


class BodyTooLarge(Exception):
    """A response body over the cap: announced by its Content-Length, or found while reading."""

    def __init__(self, cap: int, length: int | None = None) -> None:
        self.cap = cap
        self.length = length
        size = "body" if length is None else f"body of {length} bytes"
        super().__init__(f"{size} is over the {cap}-byte cap")


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, never more than `cap` bytes of it held; BodyTooLarge past the cap."""
    length = response.content_length
    if length is not None:
        if length > cap:
            raise BodyTooLarge(cap, length)
        return await response.read()  # announced and under the cap: one read, no chunks
    return await read_stream_capped(response.content, cap)


async def read_stream_capped(
    content: aiohttp.StreamReader, cap: int, length: int | None = None
) -> bytes:
    """`read_capped` on a bare payload stream whose Content-Length is `length`."""
    if length is not None:
        if length > cap:
            raise BodyTooLarge(cap, length)
        return await content.read()
    body = bytearray()
    async for chunk in content.iter_chunked(CHUNK):
        body += chunk
        if len(body) > cap:
            raise BodyTooLarge(cap)
    return bytes(body)


def classify_client_error(exc: aiohttp.ClientError) -> tuple[ErrorClass, str]:
    """aiohttp's exceptions to our error classes, with messages free of URLs and secrets."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ErrorClass.DNS, resolve_failure(exc.host, exc.os_error)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return classify_exception(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientSSLError):
        return (
            classify_exception(exc.os_error)
            if hasattr(exc, "os_error")
            else (
                ErrorClass.TLS,
                "TLS handshake failed",
            )
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        error, message = classify_exception(exc.os_error)
        return error, f"{message} ({exc.host}:{exc.port})"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return ErrorClass.TIMEOUT, "timed out waiting for the server"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ErrorClass.CONNECTION_RESET, "server closed the connection without a full response"
    if isinstance(exc, aiohttp.ClientConnectionResetError):
        return ErrorClass.CONNECTION_RESET, "connection reset by peer"
    if isinstance(exc, aiohttp.ClientOSError):
        return classify_exception(exc)
    if isinstance(exc, aiohttp.TooManyRedirects):
        return ErrorClass.INVALID_RESPONSE, "too many redirects"
    if isinstance(
        exc, aiohttp.InvalidUrlRedirectClientError | aiohttp.NonHttpUrlRedirectClientError
    ):
        return ErrorClass.INVALID_RESPONSE, "redirected to a URL that is not http(s)"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ErrorClass.CONNECTION_RESET, "response body was cut off"
    if isinstance(exc, aiohttp.ClientResponseError):
        quoted = cut(str(exc.message), 120)  # marked: the Redactor takes off a secret's head
        return ErrorClass.INVALID_RESPONSE, f"not a valid HTTP response ({quoted})"
    return ErrorClass.INVALID_RESPONSE, type(exc).__name__
