"""The daemon's alerting: results in, alert state stored, notifications routed to the outbox.

It owns the evaluator, the sender and its channels, the silences read back from the database,
and the alert changes the database could not take yet. The daemon feeds it results (`observe`)
and the readings its self-check needs; it never reaches back into the daemon.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from alerting.delivery import ChannelStats, Sender, build_channels, per_alert
from alerting.evaluator import Change, Evaluator
from alerting.holds import hold
from alerting.outbox import DatabaseFile, Outbox
from alerting.router import route, still_firing
from alerting.rules import SelfCheck
from alerting.settings import DEFAULT_EVALUATE_EVERY, AlertingSettings
from alerting.silences import Silence, stored
from alerting.state import Event
from alerting.store import forget, load_states, load_windows, save_changes, save_windows
from healthcheck.clock import LOOP, Clock, Timeline
from healthcheck.result import EndpointId, ProbeResult, Status
from healthcheck.targets import Endpoint

log = logging.getLogger("alerting.engine")

# Alerts are evaluated (and grouped) once per tick: `alerting.evaluate_every`, 1 s by default.
ALERT_TICK = DEFAULT_EVALUATE_EVERY
# How long a stopping engine lets channels finish the delivery in hand.
SENDER_GRACE = 15.0
# How often silences added from the CLI are read back from the database.
SILENCES_EVERY = 5.0
# Alert changes the database cannot take are retried at each evaluation, and logged at most
# this often: a line a second, as at the 1 s tick, however short `evaluate_every` is.
SAVE_WARN_EVERY = 1.0

# (24h uptime, checks) per endpoint id.
Uptime24h = Callable[[], Mapping[EndpointId, tuple[float | None, float]]]


class AlertEngine:
    """Evaluates alert rules each tick, persists state changes and routes notifications."""

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        settings: AlertingSettings,
        database_file: DatabaseFile,
        clock: Clock,
        *,
        tick: float | None = None,
        timeline: Timeline = LOOP,
        page_url: str | None = None,
        uptime_24h: Uptime24h | None = None,
        self_check: Callable[[float], SelfCheck] | None = None,
        database_created: Callable[[], int] = lambda: 0,
    ) -> None:
        """`clock` stamps alert state; evaluations run every `tick` seconds of `timeline`
        (by default the settings' `evaluate_every`).
        `self_check(now)` reads the prober's own health before each evaluation;
        `database_created()` counts the times the database file was created anew."""
        self.settings = settings
        self._clock = clock
        self._tick = settings.evaluate_every if tick is None else tick
        # Evaluations made to the end (healthcheck_alert_evaluations_total): a test or an
        # operator watches alerting go round without knowing its period.
        self.evaluations = 0
        self._timeline = timeline
        self._self_check = self_check
        self._database_created = database_created
        self.channels = build_channels(settings.channels, generator_url=page_url)
        self.sender = Sender(database_file, self.channels, clock=clock)
        self.evaluator = Evaluator(
            {endpoint.id: endpoint for endpoint in endpoints}, settings, uptime_24h
        )
        self._stored_silences: list[Silence] = []
        self._silences_read = 0.0
        # Alert changes the database could not take yet (locked, full, read-only): kept in
        # order and saved with the next evaluation that can, so none is lost.
        self._unsaved: list[Callable[[Outbox], None]] = []
        # Times the database file was created anew whose alert state has been queued for,
        # and written into, the new file.
        self._queued_for = 0
        self._written_for = 0
        self._save_warned: float | None = None  # timeline time of the last save warning

    def observe(self, result: ProbeResult, status: Status) -> None:
        """A result sink: buffered until the next evaluation."""
        self.evaluator.observe(result, status)

    def firing(self) -> dict[str, int]:
        """Firing alerts per severity."""
        return self.evaluator.firing()

    def use_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """After a reload: judge these endpoints; alert state of unchanged ones stays."""
        self.evaluator.endpoints = {endpoint.id: endpoint for endpoint in endpoints}

    def not_ready(self) -> list[str]:
        """Why alert state cannot be relied on right now; empty when it can."""
        if self._database_created() != self._written_for:
            return ["alert state not yet written into the new database file"]
        return []

    def notification_counts(self) -> dict[str, tuple[int, int, int, int]]:
        """Per configured channel, from the start (at 0 before its first notification, so
        increase() sees the first failure): sent, failed, timed out, pending."""
        sender = self.sender
        counts = {}
        for name in (*sender.channels, *sender.stats):
            stats = sender.stats.get(name) or ChannelStats()
            counts[name] = (stats.sent, stats.failed, stats.timeouts, sender.pending.get(name, 0))
        return counts

    async def run(self) -> None:
        """Restore stored alert state, then evaluate every tick until cancelled."""
        loaded, windows = await self.sender.database(
            lambda outbox: (load_states(outbox.db), load_windows(outbox.db))
        )
        self.evaluator.restore(loaded, windows)
        evaluator, settings = self.evaluator, self.settings
        # From now on (firing alerts restored after a restart too) Alertmanager channels post
        # them again every resend period.
        self.sender.live = lambda channel: still_firing(
            evaluator.told_firing(), settings, channel, self._clock()
        )
        self.sender.wake()
        while True:
            await self._timeline.sleep(self._tick)
            try:
                await self.evaluate_once()
                self.evaluations += 1
            except Exception:  # keep alerting alive; the next tick tries again
                log.exception("alert evaluation failed", extra={"event": "alerting_error"})

    async def evaluate_once(self) -> None:
        """One evaluation: rules → state changes → stored → routed into the outbox."""
        evaluator, sender = self.evaluator, self.sender
        now = self._clock()
        created = self._database_created()
        if created != self._queued_for:
            self._queued_for = created
            self._unsaved.append(self._write_back(created, now))
        if self._self_check is not None:
            evaluator.self_check = self._self_check(now)
        changes = hold(evaluator, evaluator.evaluate(now), now)
        windows = evaluator.windows_to_store()
        if windows:
            self._unsaved.append(lambda outbox: save_windows(outbox.db, windows, now))
        if not changes:
            await self._save()
            return
        if not 0 <= now - self._silences_read <= SILENCES_EVERY:  # or the clock stepped back
            try:
                self._stored_silences = await sender.database(lambda outbox: stored(outbox.db, now))
                self._silences_read = now
            except Exception as exc:  # the last silences read stay in force
                log.warning("cannot read silences: %s", exc, extra={"event": "silences_error"})
        routed = route(
            changes,
            evaluator.alerts,
            evaluator.notified,
            self.settings,
            per_alert(self.channels),
            now,
            (*self.settings.silences, *self._stored_silences),
        )
        evaluator.notified.update(routed.notified)
        kept = [
            (
                c.state,
                c.event,
                evaluator.notified.get((c.state.rule, c.state.target), False),
                c.region,
                c.held_by,
                c.labels,
            )
            for c in changes
            if (c.state.rule, c.state.target) in evaluator.alerts
        ]
        dropped = [
            (c.state.rule, c.state.target)
            for c in changes
            if (c.state.rule, c.state.target) not in evaluator.alerts
        ]

        def persist(outbox: Outbox) -> None:
            save_changes(outbox.db, kept, now)
            forget(outbox.db, dropped)
            outbox.put(routed.notifications, now)

        self._unsaved.append(persist)
        await self._save()
        for change in changes:
            if change.event is not None:
                _log_change(change, change.event)

    def _write_back(self, created: int, now: float) -> Callable[[Outbox], None]:
        """The database file was removed or overwritten and created anew: every alert as it
        stands now goes into the new file (the outbox carries its own undelivered rows over),
        so a restart neither forgets a firing alert nor pages it again."""
        evaluator = self.evaluator
        evaluator.store_all_windows()
        alerts = [
            (
                state,
                None,
                evaluator.notified.get(key, False),
                evaluator.regions.get(key[1], ""),
                f"{held[0]}:{held[1]}" if (held := evaluator.held.get(key)) else None,
                evaluator.change(state, None, evaluator.regions.get(key[1], "")).labels,
            )
            for key, state in evaluator.alerts.items()
        ]

        def write_back(outbox: Outbox) -> None:
            save_changes(outbox.db, alerts, now)
            self._written_for = created
            log.info(
                "alert state written into the new database file: %d alerts",
                len(alerts),
                extra={"event": "alerts_written_back", "alerts": len(alerts)},
            )

        return write_back

    async def _save(self) -> None:
        """Save the alert changes not yet in the database, oldest first; each one is its own
        transaction and leaves the queue only once committed."""
        saved = 0
        try:
            while self._unsaved:
                await self.sender.database(self._unsaved[0])
                self._unsaved.pop(0)
                saved += 1
        except Exception as exc:
            now = self._timeline.time()
            last = self._save_warned
            if last is None or not 0 <= now - last < SAVE_WARN_EVERY:
                self._save_warned = now
                log.warning(
                    "alert changes not saved yet (%d waiting), retrying each evaluation: %s",
                    len(self._unsaved),
                    exc,
                    extra={"event": "alert_save_failed", "waiting": len(self._unsaved)},
                )
        if saved:
            self.sender.wake()

    async def close(self, sending: asyncio.Task[None]) -> None:
        """A last try at saving what waits (what fails is logged with a count), then let each
        channel finish and record its delivery in hand; cancel past the bound."""
        if self._unsaved:
            await self._save()
        self.sender.stop()
        try:
            await asyncio.wait_for(sending, SENDER_GRACE)
        except TimeoutError:
            log.warning("notification sender did not stop in time", extra={"event": "sender_slow"})
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("notification sender failed", extra={"event": "sender_failed"})


def _log_change(change: Change, event: Event) -> None:
    """One log line per alert event; an alert held behind its dependency's is logged as held,
    not as fired, since nobody was told (the router sends nothing for it)."""
    state = change.state
    facts = {
        "rule": state.rule,
        "target": state.target,
        "severity": state.severity.value,
        "region": change.region,
    }
    if change.held_by is not None and event is not Event.RESOLVED:
        log.info(
            "alert %s %s held behind %s (not sent): %s",
            state.rule,
            state.target,
            change.held_by,
            state.summary,
            extra={"event": "alert_held", "held_by": change.held_by, **facts},
        )
        return
    log.info(
        "alert %s %s %s: %s",
        state.rule,
        state.target,
        event.value,
        state.summary,
        extra={"event": f"alert_{event.value}", **facts},
    )
