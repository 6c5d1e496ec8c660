"""The running configuration: one holder that a reload publishes to, and the parts that follow it.

The board, the metrics, the alert engine, the prober and the scheduler each subscribe and are
handed every configuration a reload applies, in the order they subscribed; readers (the API)
read `config` here instead of keeping a copy of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from healthcheck.targets import Config, Endpoint

# A part that follows the running configuration; what it returns is not looked at.
Follower = Callable[[Config], object]


class RunningConfig:
    """The configuration the daemon runs now, published to its followers on each reload."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._followers: list[Follower] = []

    def subscribe(self, follower: Follower) -> None:
        self._followers.append(follower)

    def unsubscribe(self, follower: Follower) -> None:
        self._followers.remove(follower)

    def publish(self, config: Config) -> None:
        """Make `config` the running one and hand it to every follower."""
        self.config = config
        for follower in list(self._followers):
            follower(config)


def endpoint_changes(old: Iterable[Endpoint], new: Iterable[Endpoint]) -> tuple[int, int, int]:
    """(added, removed, changed) endpoints between two configurations, by endpoint id."""
    before = {endpoint.id: endpoint for endpoint in old}
    after = {endpoint.id: endpoint for endpoint in new}
    added = sum(1 for endpoint_id in after if endpoint_id not in before)
    removed = sum(1 for endpoint_id in before if endpoint_id not in after)
    changed = sum(
        1 for endpoint_id, e in after.items() if endpoint_id in before and before[endpoint_id] != e
    )
    return added, removed, changed
