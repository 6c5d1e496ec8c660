"""The daemon's HTTP front: /metrics, the JSON API and the status page, behind a connection cap.

Built from the parts of a `Daemon` (the runtime layer, below this one) and handed to it as its
`front`: the daemon feeds it results and schedule lag, and starts and stops its server.
"""

from __future__ import annotations

import time

from healthcheck import badges, push_api
from healthcheck.api import ApiState, build_app
from healthcheck.connections import ConnectionGuard
from healthcheck.daemon import Daemon
from healthcheck.endpoint_views import add_detail_routes
from healthcheck.exporter import Metrics
from healthcheck.result import ProbeResult, Status
from healthcheck.server_threads import ServerThreads, ServingCounts
from healthcheck.serving import Server, serve
from healthcheck.shared_renders import SharedRenders

# The server's own threads, apart from the default executor the rest of the daemon uses:
# renders wait in one for the helper process's one pipe (one variant at a time is all it
# serves); storage reads and the API's JSON renders hold the GIL the probing loop needs while
# they build their rows, so one at a time, all of them in the one thread.
RENDER_THREADS, RENDERS_QUEUED = 1, 3
READ_THREADS, READS_QUEUED = 1, 8


class HttpFront:
    """The metrics sink, the API state and the server of one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        configs = daemon.configs
        config = configs.config
        self.configs = configs
        self.connections = ConnectionGuard(config.exporter.max_connections, time.monotonic)
        self.counts = ServingCounts()
        self.metrics = Metrics(
            config,
            daemon.board,
            daemon.health.readings,
            self.connections,
            offload=daemon.helper,
            serving=self.counts,
        )
        configs.subscribe(self.metrics.update)
        self._render_threads = ServerThreads(RENDER_THREADS, RENDERS_QUEUED, "metrics-render")
        self._read_threads = ServerThreads(READ_THREADS, READS_QUEUED, "api-read")
        self.api = ApiState(
            configs,
            daemon.board,
            self.metrics,
            daemon.uptime,
            daemon.uptime.path,
            daemon.health.not_ready,
            renders=SharedRenders(self.metrics.render, self._render_threads, self.counts),
            reads=self._read_threads,
            # Their own counts: healthcheck_exporter_renders stays the /metrics renders.
            views=SharedRenders(None, self._read_threads, ServingCounts(), what="/api/v1"),
            pages=SharedRenders(
                None, self._read_threads, ServingCounts(), fresh_for=0, what="/api/v1"
            ),
            counts=self.counts,
            self_report=daemon.health.self_report,
        )
        self._server: Server | None = None

    def observe(self, result: ProbeResult, status: Status) -> None:
        """The result sink: counted for /metrics."""
        self.metrics.observe(result, status)

    def observe_lag(self, seconds: float) -> None:
        self.metrics.observe_lag(seconds)

    async def start(self) -> tuple[str, int]:
        """Listen on the exporter's address; returns where."""
        config = self.configs.config
        app = build_app(self.api)
        add_detail_routes(app)
        badges.register(app)
        push_api.register(app)
        self._server = await serve(
            app,
            config.exporter,
            self.connections,
            config.scheduler.max_concurrency,
        )
        return self._server.listening

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
        self._render_threads.close()
        self._read_threads.close()
