"""One classified result to every sink, each on its own: one that raises skips no other."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from healthcheck.result import ProbeResult, Status

log = logging.getLogger("healthcheck.fanout")

# Takes each classified result: storage, metrics, alerting. Must not block; what it returns
# (storage's "queued or dropped") is ignored.
ResultSink = Callable[[ProbeResult, Status], object]

# A failing sink is logged at most once this often (with how many failures it held back):
# it fails on every result, and 10,000 endpoints make hundreds of results a second.
SINK_ERROR_EVERY = 60.0


class Fanout:
    """Calls each sink with each result; a sink's exception is logged, the others go on."""

    def __init__(
        self, sinks: Iterable[ResultSink], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sinks = list(sinks)
        self._clock = clock
        self._logged: dict[int, float] = {}  # sink index -> when its last failure was logged
        self._held: dict[int, int] = {}  # sink index -> failures not logged since
        self.failures = 0

    def __call__(self, result: ProbeResult, status: Status) -> None:
        for index, sink in enumerate(self.sinks):
            try:
                sink(result, status)
            except Exception:
                self.failures += 1
                self._note(index, sink)

    def _note(self, index: int, sink: ResultSink) -> None:
        now = self._clock()
        last = self._logged.get(index)
        if last is not None and 0 <= now - last < SINK_ERROR_EVERY:
            self._held[index] = self._held.get(index, 0) + 1
            return
        self._logged[index] = now
        held = self._held.pop(index, 0)
        name = getattr(sink, "__qualname__", None) or type(sink).__qualname__
        log.exception(
            "result sink %s failed; the other sinks still get each result%s",
            name,
            f" ({held} more failures not logged)" if held else "",
            extra={"event": "sink_failed", "sink": name, "held_back": held},
        )
