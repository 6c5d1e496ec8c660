"""Delivery through Apprise: one sender loop per channel, so Slack down never delays PagerDuty.

Each notification is tried a few times at once (tenacity, jittered exponential backoff); if
the channel still refuses it stays in the outbox with a later `next_attempt`, growing to
five minutes, and is marked sent only once the channel accepted it.

A delivery the channel does not answer within its timeout, or one cut off as the daemon stops,
may have arrived: it is not tried again for UNKNOWN_RETRY, and it never holds the channel's
other notifications while it hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from alerting.outbox import DatabaseFile, Notification, Outbox, Pending
from alerting.settings import (
    ALIVE_RESENDS,
    DEFAULT_DELIVERY_TIMEOUT,
    DEFAULT_RESEND,
    ChannelSettings,
)
from healthcheck.durations import format_duration
from healthcheck.errors import DeliveryError, DeliveryTimeout
from healthcheck.secrets import Secret

log = logging.getLogger("alerting.delivery")

MAX_BACKOFF = 300.0
# A delivery that got no answer in time may have reached the receiver, which may have acted on
# it: it is tried again only after this long (not 6-7 times in 30 s, as a 10 s webhook once got).
UNKNOWN_RETRY = 600.0
# Apprise's socket read timeout is set this far past the channel's timeout, so a slow answer is
# reported as a timeout rather than as a refusal, and the worker thread Apprise cannot cancel
# is free soon after.
READ_GRACE = 1.0
# How long a channel's loop waits for one delivery before starting the next beside it. Slack,
# PagerDuty and SMTP answer well within it, so a healthy or a down channel still goes in order,
# one at a time, and stops at the first refusal; only a slow one fans out.
HEAD_START = 2.0
# Deliveries in flight per channel. Apprise runs each in a thread of its one shared pool
# (CPU count + 4 threads), so a hung channel must not take all of them.
MAX_IN_FLIGHT = 4
# Past a channel's timeout (which Apprise and aiohttp keep to), a delivery still running is
# abandoned here and counted as a timeout.
LATE_ANSWER = 5.0
# Firing alerts posted to Alertmanager in one request when they are posted again.
RESEND_BATCH = 500


class Channel:
    """One Apprise URL under a name; the URL is a secret and is never logged or shown."""

    def __init__(self, name: str, url: Secret, timeout: float = DEFAULT_DELIVERY_TIMEOUT) -> None:
        self.name = name
        self._url = url
        self.timeout = timeout
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
        """Send once; raise DeliveryTimeout if the channel did not answer within its timeout,
        DeliveryError if it refused."""
        asset = apprise.AppriseAsset(service_timeout=self.timeout)
        service = apprise.Apprise.instantiate(self.url_for(notification), asset=asset)
        if service is None:
            raise DeliveryError(f"channel {self.name!r}: not a URL Apprise understands")
        service.socket_read_timeout = self.timeout + READ_GRACE
        sender = apprise.Apprise(asset=asset)
        sender.add(service)
        result = await sender.async_notify(
            body=notification.body,
            title=notification.title,
            notify_type=apprise.NotifyType(notification.notify_type),
        )
        if result.status == apprise.AppriseResultStatus.TIMEOUT:
            raise DeliveryTimeout(
                f"channel {self.name!r} did not answer within {format_duration(self.timeout)}"
            )
        if not result:
            raise DeliveryError(f"channel {self.name!r} did not accept the notification")


class AlertmanagerChannel:
    """Posts alerts to Alertmanager's v2 API, which dedups, groups and silences them across
    every daemon (vantage) that sends the same alert. A firing alert is posted valid for
    ALIVE_RESENDS resend periods; the Sender posts it again every period while it fires."""

    def __init__(
        self,
        name: str,
        url: Secret,
        generator_url: str | None = None,
        timeout: float = DEFAULT_DELIVERY_TIMEOUT,
        resend: float = DEFAULT_RESEND,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._url = url
        self.generator_url = generator_url
        self.timeout = timeout
        self.resend = resend
        self._clock = clock

    async def deliver(self, notification: Notification) -> None:
        await self.post([notification])

    async def post(self, notifications: list[Notification]) -> None:
        """Post alerts in one request; raise DeliveryTimeout or DeliveryError as deliver()."""
        now = self._clock()
        alerts = [self._alert(notification, now) for notification in notifications]
        endpoint = self._url.reveal().rstrip("/") + "/api/v2/alerts"
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(endpoint, json=alerts) as response,
            ):
                if response.status >= 300:
                    raise DeliveryError(
                        f"channel {self.name!r}: Alertmanager answered HTTP {response.status}"
                    )
        except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
            raise DeliveryTimeout(
                f"channel {self.name!r} did not answer within {format_duration(self.timeout)}"
            ) from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"channel {self.name!r}: {type(exc).__name__}") from None

    def _alert(self, notification: Notification, now: float) -> dict[str, Any]:
        labels = dict(notification.labels or [])
        if not labels:
            labels = {"alertname": "healthcheck_test", "severity": notification.severity}
        # Without endsAt Alertmanager resolves an alert resolve_timeout (5m) after the last
        # post; with it, at endsAt: a few resend periods ahead, so only our resolve (endsAt
        # now) or a daemon gone silent ends it.
        ends_at = notification.ends_at
        if ends_at is None:
            ends_at = now + ALIVE_RESENDS * self.resend
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {"summary": notification.body, "title": notification.title},
            "startsAt": _rfc3339(notification.starts_at or now),
            "endsAt": _rfc3339(ends_at),
        }
        if notification.runbook_url:
            alert["annotations"]["runbook_url"] = notification.runbook_url
        if self.generator_url:
            alert["generatorURL"] = self.generator_url
        return alert


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_channels(
    settings: Mapping[str, ChannelSettings], generator_url: str | None = None
) -> dict[str, Channel | AlertmanagerChannel]:
    """The configured channels, ready to deliver."""
    return {
        name: AlertmanagerChannel(
            name, item.url, generator_url, item.timeout, item.resend or DEFAULT_RESEND
        )
        if item.kind == "alertmanager"
        else Channel(name, item.url, item.timeout)
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
    timeouts: int = 0  # sent, no answer in time: may have arrived
    last_error: str | None = None
    failures_in_a_row: int = 0
    resent: int = 0  # firing alerts posted again to keep them alive (Alertmanager); no pages
    resend_failed: int = 0
    resend_error: str | None = None
    # A down channel backs off as a whole, keeping its order; on the monotonic clock, so a
    # wall clock stepped back does not silence it for the length of the step.
    retry_at: float = 0.0


@dataclass(slots=True)
class Sender:
    """Drains the outbox channel by channel until cancelled."""

    database_file: DatabaseFile  # the storage database the outbox table lives in
    channels: Mapping[str, Channel | AlertmanagerChannel]
    clock: Callable[[], float] = time.time  # when: stored and shown
    poll: float = 1.0
    tries_now: int = 3
    head_start: float = HEAD_START
    stats: dict[str, ChannelStats] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)  # unsent per channel, for metrics
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="outbox")
    )
    _outbox: Outbox | None = None
    _wakes: dict[str, asyncio.Event] = field(default_factory=dict)
    # Deliveries in flight: channel -> the alert's dedup key -> its task.
    _sending: dict[str, dict[str, asyncio.Task[None]]] = field(default_factory=dict)
    _stopping: bool = False
    reopened: int = 0  # times the outbox moved to a database file created anew
    monotonic: Callable[[], float] = time.monotonic  # how long: a channel's backoff
    # The firing alerts to keep alive on a channel, as they stand now (set by the daemon once
    # it has restored the stored alert state); posted every `resend` to Alertmanager channels.
    live: Callable[[str], list[Notification]] | None = None
    _resends: dict[str, tuple[asyncio.Task[None], frozenset[str]]] = field(default_factory=dict)
    _next_resend: dict[str, float] = field(default_factory=dict)

    async def database(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run an outbox call on the one thread that owns its connection."""

        def run() -> Any:
            if self._outbox is None:
                self._outbox = Outbox(self.database_file)
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
        """Finish the deliveries in hand on each channel, record them, then return from run():
        cancelling between "the channel accepted" and "marked sent" would send it twice."""
        self._stopping = True
        self.wake()

    def _in_flight(self, channel: str | None = None) -> list[asyncio.Task[None]]:
        names = [channel] if channel is not None else list(self._sending)
        return [task for name in names for task in self._sending.get(name, {}).values()]

    def _resending(self, channel: str) -> frozenset[str]:
        entry = self._resends.get(channel)
        return entry[1] if entry is not None else frozenset()

    async def run(self) -> None:
        loops = [
            asyncio.create_task(self._channel_loop(c), name=f"send {c.name}")
            for c in self.channels.values()
        ]
        try:
            await asyncio.gather(*loops)
            await asyncio.gather(*self._in_flight(), return_exceptions=True)
        finally:
            # Cancelled past the daemon's grace: a delivery cut off here keeps the retry time
            # stored when it started, as one that got no answer.
            deliveries = self._in_flight() + [task for task, _ in self._resends.values()]
            for task in (*loops, *deliveries):
                task.cancel()
            await asyncio.gather(*loops, *deliveries, return_exceptions=True)
            await self.database(lambda outbox: outbox.close())
            self._executor.shutdown(wait=False)

    async def drain_once(self) -> None:
        """One pass over every channel, in order, each delivery awaited (for --once style use
        and tests)."""
        for channel in self.channels.values():
            await self._send_due(channel, head_start=None)
            await asyncio.gather(*self._in_flight(channel.name), return_exceptions=True)

    async def _channel_loop(self, channel: Channel | AlertmanagerChannel) -> None:
        wake = self._wakes.setdefault(channel.name, asyncio.Event())
        while not self._stopping:
            wake.clear()
            self._resend_due(channel)  # first: it needs no database, which may be down
            try:
                await self._send_due(channel, self.head_start)
                self.pending = await self.database(Outbox.pending)
            except Exception as exc:  # e.g. the database locked or unwritable: try again later
                log.warning(
                    "channel %s cannot read or update the outbox: %s",
                    channel.name,
                    exc,
                    extra={"event": "outbox_error", "channel": channel.name},
                )
            wait = self.poll
            if (
                self.live is not None
                and isinstance(channel, AlertmanagerChannel)
                and channel.name not in self._resends  # its end wakes the loop
            ):
                due = self._next_resend.get(channel.name, 0.0) - self.monotonic()
                wait = max(0.01, min(wait, due))
            with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
                async with asyncio.timeout(wait):
                    await wake.wait()

    def _resend_due(self, channel: Channel | AlertmanagerChannel) -> None:
        """Every `resend`, post the channel's firing alerts again, outside the outbox: they
        are no new notifications, only "still firing". An alert whose newer state is on its
        way from the outbox is left to it, and the outbox waits for a post in flight, so
        Alertmanager never hears "firing" after "resolved"."""
        if self.live is None or not isinstance(channel, AlertmanagerChannel):
            return
        now = self.monotonic()
        if now < self._next_resend.get(channel.name, 0.0) or channel.name in self._resends:
            return
        self._next_resend[channel.name] = now + channel.resend
        sending = self._sending.get(channel.name, {})
        alive = [n for n in self.live(channel.name) if n.dedup_key not in sending]
        if not alive:
            return
        task = asyncio.create_task(self._resend(channel, alive), name=f"resend {channel.name}")
        self._resends[channel.name] = (task, frozenset(n.dedup_key for n in alive))
        task.add_done_callback(lambda _: self._resent(channel.name))

    def _resent(self, channel: str) -> None:
        self._resends.pop(channel, None)
        wake = self._wakes.get(channel)
        if wake is not None:
            wake.set()  # an outbox delivery that waited for the post may go now

    async def _resend(self, channel: AlertmanagerChannel, alive: list[Notification]) -> None:
        stats = self.stats.setdefault(channel.name, ChannelStats())
        try:
            for start in range(0, len(alive), RESEND_BATCH):
                async with asyncio.timeout(channel.timeout + LATE_ANSWER):
                    await channel.post(alive[start : start + RESEND_BATCH])
                stats.resent += len(alive[start : start + RESEND_BATCH])
        except Exception as exc:  # the next period tries again; the outbox is not involved
            stats.resend_failed += 1
            text = str(exc) if isinstance(exc, DeliveryError) else type(exc).__name__
            if stats.resend_error != text:
                log.warning(
                    "channel %s: firing alerts not posted again, retrying in %s: %s",
                    channel.name,
                    format_duration(channel.resend),
                    text,
                    extra={"event": "resend_failed", "channel": channel.name},
                )
            stats.resend_error = text
            return
        stats.resend_error = None

    async def _send_due(
        self, channel: Channel | AlertmanagerChannel, head_start: float | None
    ) -> None:
        """Start the channel's due notifications in order, each given `head_start` seconds
        (None: as long as it takes) before the next starts beside it."""
        stats = self.stats.setdefault(channel.name, ChannelStats())
        sending = self._sending.setdefault(channel.name, {})
        if self.monotonic() < stats.retry_at or len(sending) >= MAX_IN_FLIGHT:
            return
        due = await self.database(Outbox.due, channel.name, self.clock(), 100, UNKNOWN_RETRY)
        for pending in due:
            if self._stopping or self.monotonic() < stats.retry_at:
                return  # stopping, or the channel is down: the rest stays queued in order
            key = pending.notification.dedup_key
            if key in sending or key in self._resending(channel.name):
                continue  # this alert's previous state is still on its way: keep their order
            if len(sending) >= MAX_IN_FLIGHT:
                return
            # Stored before the send: if no answer ever comes (a hang, a crash, a kill), this
            # is when it is tried again, and no sooner.
            await self.database(Outbox.mark_sending, pending.id, self.clock() + UNKNOWN_RETRY)
            delivery = asyncio.create_task(
                self._deliver(channel, pending, stats), name=f"deliver {channel.name}"
            )
            sending[key] = delivery
            delivery.add_done_callback(functools.partial(self._done, channel.name, key))
            await asyncio.wait({delivery}, timeout=head_start)

    def _done(self, channel: str, key: str, task: asyncio.Task[None]) -> None:
        sending = self._sending.get(channel, {})
        if sending.get(key) is task:
            del sending[key]
        wake = self._wakes.get(channel)
        if wake is not None:
            wake.set()  # what waited behind it (its alert's next state, the cap) may go now

    async def _deliver(
        self, channel: Channel | AlertmanagerChannel, pending: Pending, stats: ChannelStats
    ) -> None:
        try:
            error = await self._attempt(channel, pending.notification)
            await self._record(channel, pending, stats, error)
        except Exception as exc:  # the outbox unwritable: the retry time stored at the start holds
            log.warning(
                "channel %s cannot record a delivery in the outbox: %s",
                channel.name,
                exc,
                extra={"event": "outbox_error", "channel": channel.name},
            )

    async def _attempt(
        self, channel: Channel | AlertmanagerChannel, notification: Notification
    ) -> Exception | None:
        """Send now, with a few quick tries on a refusal but none on a timeout; returns None
        once the channel accepted it, else what went wrong last."""
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.tries_now),
                wait=wait_exponential_jitter(multiplier=0.2, max=2.0),
                # Only a refusal: tenacity's attempt catches BaseException too, and a cancel
                # (the daemon stopping past its grace) tried again sent a page that had reached
                # the receiver a second time. A cut-off delivery may have arrived: the cancel
                # propagates, and the retry time stored before the send holds.
                retry=retry_if_exception_type(DeliveryError)
                & retry_if_not_exception_type(DeliveryTimeout),
                reraise=True,
            ):
                with attempt:
                    await _bounded(channel, notification)
        except Exception as exc:  # any failure keeps it queued; a later pass retries
            return exc
        return None

    async def _record(
        self,
        channel: Channel | AlertmanagerChannel,
        pending: Pending,
        stats: ChannelStats,
        error: Exception | None,
    ) -> None:
        if error is None:
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
            return
        if isinstance(error, DeliveryTimeout):
            # Not a down channel: its other notifications go on; this one waits long.
            await self.database(
                Outbox.mark_failed, pending.id, str(error), self.clock() + UNKNOWN_RETRY
            )
            stats.timeouts += 1
            log.warning(
                "%s; it may have arrived, so it is sent again only in %s",
                error,
                format_duration(UNKNOWN_RETRY),
                extra={"event": "delivery_timeout", "channel": channel.name},
            )
            return
        text = str(error) if isinstance(error, DeliveryError) else type(error).__name__
        stats.failures_in_a_row += 1
        backoff = min(MAX_BACKOFF, 2.0**stats.failures_in_a_row)
        stats.retry_at = self.monotonic() + backoff
        await self.database(Outbox.mark_failed, pending.id, text, self.clock() + backoff)
        stats.failed += 1
        if stats.last_error != text:
            log.warning(
                "channel %s failed; will retry in %.0fs: %s",
                channel.name,
                backoff,
                text,
                extra={"event": "delivery_failed", "channel": channel.name},
            )
        stats.last_error = text


async def _bounded(channel: Channel | AlertmanagerChannel, notification: Notification) -> None:
    """One delivery, abandoned LATE_ANSWER past the channel's own timeout."""
    try:
        async with asyncio.timeout(channel.timeout + LATE_ANSWER):
            await channel.deliver(notification)
    except TimeoutError:
        raise DeliveryTimeout(
            f"channel {channel.name!r} did not answer within {format_duration(channel.timeout)}"
        ) from None
