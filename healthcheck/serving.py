"""The exporter's HTTP server: /metrics, the API and the status page behind a connection cap."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from healthcheck.connections import BACKLOG, ConnectionGuard, connection_budget, open_file_limit
from healthcheck.errors import HealthcheckError
from healthcheck.targets import ExporterSettings

log = logging.getLogger("healthcheck.serving")


class Server:
    """One listening socket serving `app`, until close()."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server) -> None:
        self._runner, self._server = runner, server
        self.listening: tuple[str, int] = server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        self._server.close()
        await self._runner.cleanup()


async def serve(
    app: web.Application,
    settings: ExporterSettings,
    connections: ConnectionGuard,
    probes: int,
) -> Server:
    """Listen on the exporter's address; `probes` checks in flight share the open file limit.
    A port that cannot be bound is a HealthcheckError naming the address."""
    app.middlewares.insert(0, connections.middleware)
    # keepalive_timeout: a connection's next request must have all its headers within
    # read_timeout of the connection or the last response, or it is closed (slow-loris);
    # lingering_time: the same bound on a request body no handler reads;
    # handler_cancellation: a client that hangs up takes its request's work with it (a
    # /metrics render not yet begun, a storage read still queued), so abandoned requests
    # do not pile up behind live ones.
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=2.0,
        keepalive_timeout=settings.read_timeout,
        lingering_time=settings.read_timeout,
    )
    await runner.setup()
    assert runner.server is not None  # setup() made it
    connections.limit = connection_budget(settings.max_connections, probes, open_file_limit())
    try:
        server = await asyncio.get_running_loop().create_server(
            connections.protocol_factory(runner.server),
            settings.host,
            settings.port,
            backlog=BACKLOG,
        )
    except OSError as exc:
        await runner.cleanup()
        raise HealthcheckError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    serving = Server(runner, server)
    host, port = serving.listening
    log.info(
        "serving metrics, API and status page on http://%s:%d/ (at most %d connections)",
        host,
        port,
        connections.limit,
        extra={
            "event": "listening",
            "host": host,
            "port": port,
            "max_connections": connections.limit,
        },
    )
    return serving
