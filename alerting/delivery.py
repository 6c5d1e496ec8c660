"""Delivery through Apprise: one sender loop per channel, so Slack down never delays PagerDuty.

Each notification is tried a few times at once (tenacity, jittered exponential backoff); if
the channel still refuses it stays in the outbox with a later `next_attempt`, growing to
five minutes, and is marked sent only once the channel accepted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import apprise
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential_jitter

from alerting.outbox import Notification, Outbox
from alerting.settings import ChannelSettings
from healthcheck.errors import DeliveryError
from healthcheck.secrets import Secret

log = logging.getLogger("alerting.delivery")

MAX_BACKOFF = 300.0


class Channel:
    """One Apprise URL under a name; the URL is a secret and is never logged or shown."""

    def __init__(self, name: str, url: Secret) -> None:
        self.name = name
        self._url = url
        if not apprise.Apprise().add(url.reveal()):
            raise DeliveryError(f"channel {name!r}: not a URL Apprise understands")
        self.scheme = urlsplit(url.reveal()).scheme.lower()

    def url_for(self, notification: Notification) -> str:
        """PagerDuty gets `action=map` and the alert's own dedup key, so a resolve closes
        the incident its trigger opened and a reminder never opens a second one."""
        url = self._url.reveal()
        if self.scheme not in ("pagerduty", "pagerduties"):
            return url
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        query.setdefault("action", "map")
        query["dedup"] = notification.dedup_key
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def deliver(self, notification: Notification) -> None:
        """Send once; raise DeliveryError unless the channel accepted it."""
        sender = apprise.Apprise()
        sender.add(self.url_for(notification))
        accepted = await sender.async_notify(
            body=notification.body,
            title=notification.title,
            notify_type=apprise.NotifyType(notification.notify_type),
        )
        if not accepted:
            raise DeliveryError(f"channel {self.name!r} did not accept the notification")


class AlertmanagerChannel:
    """Posts alerts to Alertmanager's v2 API, which dedups, groups and silences them across
    every daemon (vantage) that sends the same alert."""

    def __init__(self, name: str, url: Secret, generator_url: str | None = None) -> None:
        self.name = name
        self._url = url
        self.generator_url = generator_url

    async def deliver(self, notification: Notification) -> None:
        labels = dict(notification.labels or [])
        if not labels:
            labels = {"alertname": "healthcheck_test", "severity": notification.severity}
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {"summary": notification.body, "title": notification.title},
            "startsAt": _rfc3339(notification.starts_at or time.time()),
        }
        if notification.ends_at is not None:
            alert["endsAt"] = _rfc3339(notification.ends_at)
        if self.generator_url:
            alert["generatorURL"] = self.generator_url
        endpoint = self._url.reveal().rstrip("/") + "/api/v2/alerts"
        try:
            timeout = aiohttp.ClientTimeout(total=10)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(endpoint, json=[alert]) as response,
            ):
                if response.status >= 300:
                    raise DeliveryError(
                        f"channel {self.name!r}: Alertmanager answered HTTP {response.status}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"channel {self.name!r}: {type(exc).__name__}") from None


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_channels(
    settings: Mapping[str, ChannelSettings], generator_url: str | None = None
) -> dict[str, Channel | AlertmanagerChannel]:
    """The configured channels, ready to deliver."""
    return {
        name: AlertmanagerChannel(name, item.url, generator_url)
        if item.kind == "alertmanager"
        else Channel(name, item.url)
        for name, item in settings.items()
    }


def per_alert(channels: Mapping[str, Channel | AlertmanagerChannel]) -> set[str]:
    """Channels that track each alert by its key, so they get one message per alert."""
    return {
        name
        for name, channel in channels.items()
        if isinstance(channel, AlertmanagerChannel) or channel.scheme.startswith("pagerdut")
    }


@dataclass(slots=True)
class ChannelStats:
    sent: int = 0
    failed: int = 0
    last_error: str | None = None
    failures_in_a_row: int = 0
    # A down channel backs off as a whole, keeping its order; on the monotonic clock, so a
    # wall clock stepped back does not silence it for the length of the step.
    retry_at: float = 0.0


@dataclass(slots=True)
class Sender:
    """Drains the outbox channel by channel until cancelled."""

    outbox_path: str
    channels: Mapping[str, Channel | AlertmanagerChannel]
    clock: Callable[[], float] = time.time  # when: stored and shown
    poll: float = 1.0
    tries_now: int = 3
    stats: dict[str, ChannelStats] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)  # unsent per channel, for metrics
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="outbox")
    )
    _outbox: Outbox | None = None
    _wakes: dict[str, asyncio.Event] = field(default_factory=dict)
    _stopping: bool = False
    reopened: int = 0  # times the outbox moved to a database file created anew
    monotonic: Callable[[], float] = time.monotonic  # how long: a channel's backoff

    async def database(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run an outbox call on the one thread that owns its connection."""

        def run() -> Any:
            if self._outbox is None:
                self._outbox = Outbox(self.outbox_path)
            elif self._outbox.moved():
                self._outbox, carried = self._outbox.reopened()
                self.reopened += 1
                log.warning(
                    "outbox moved to the new database file; undelivered notifications "
                    "carried over: %s",
                    carried if carried >= 0 else "none (the old file is unreadable)",
                    extra={"event": "outbox_reopened", "carried": carried},
                )
            return call(self._outbox, *args)

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    def wake(self) -> None:
        """New notifications were queued: every channel looks now, not at its next poll."""
        for event in self._wakes.values():
            event.set()

    async def put(self, notifications: list[Notification]) -> None:
        await self.database(Outbox.put, notifications, self.clock())
        self.wake()

    def stop(self) -> None:
        """Finish the delivery in hand on each channel, record it, then return from run():
        cancelling between "the channel accepted" and "marked sent" would send it twice."""
        self._stopping = True
        self.wake()

    async def run(self) -> None:
        loops = [
            asyncio.create_task(self._channel_loop(c), name=f"send {c.name}")
            for c in self.channels.values()
        ]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.database(lambda outbox: outbox.close())
            self._executor.shutdown(wait=False)

    async def drain_once(self) -> None:
        """One pass over every channel (for --once style use and tests)."""
        for channel in self.channels.values():
            await self._send_due(channel)

    async def _channel_loop(self, channel: Channel | AlertmanagerChannel) -> None:
        wake = self._wakes.setdefault(channel.name, asyncio.Event())
        while not self._stopping:
            wake.clear()
            try:
                await self._send_due(channel)
                self.pending = await self.database(Outbox.pending)
            except Exception as exc:  # e.g. the database locked or unwritable: try again later
                log.warning(
                    "channel %s cannot read or update the outbox: %s",
                    channel.name,
                    exc,
                    extra={"event": "outbox_error", "channel": channel.name},
                )
            with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
                async with asyncio.timeout(self.poll):
                    await wake.wait()

    async def _send_due(self, channel: Channel | AlertmanagerChannel) -> None:
        stats = self.stats.setdefault(channel.name, ChannelStats())
        if self.monotonic() < stats.retry_at:
            return
        due = await self.database(Outbox.due, channel.name, self.clock(), 100, MAX_BACKOFF)
        for pending in due:
            if self._stopping:
                return  # the rest stays queued for the next start
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.tries_now),
                    wait=wait_exponential_jitter(multiplier=0.2, max=2.0),
                    reraise=True,
                ):
                    with attempt:
                        await channel.deliver(pending.notification)
            except Exception as exc:  # any failure keeps it queued; the next pass retries
                error = str(exc) if isinstance(exc, DeliveryError) else type(exc).__name__
                stats.failures_in_a_row += 1
                backoff = min(MAX_BACKOFF, 2.0**stats.failures_in_a_row)
                stats.retry_at = self.monotonic() + backoff
                await self.database(Outbox.mark_failed, pending.id, error, self.clock() + backoff)
                stats.failed += 1
                if stats.last_error != error:
                    log.warning(
                        "channel %s failed; will retry in %.0fs: %s",
                        channel.name,
                        backoff,
                        error,
                        extra={"event": "delivery_failed", "channel": channel.name},
                    )
                stats.last_error = error
                return  # the channel is down: leave the rest queued in order
            await self.database(Outbox.mark_sent, pending.id, self.clock())
            stats.sent += 1
            stats.failures_in_a_row = 0
            if stats.last_error is not None:
                log.info(
                    "channel %s delivers again",
                    channel.name,
                    extra={"event": "delivery_recovered", "channel": channel.name},
                )
                stats.last_error = None
