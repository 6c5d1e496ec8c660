"""Turns probe results into alert state changes, one evaluation per tick.

Results are buffered by `observe` (the daemon's sink, O(1)); `evaluate` runs the rules over
what arrived, steps each alert's state machine, and re-steps alerts that heard nothing new so
holds complete and reminders fall due. Everything here is in memory and pure of I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from alerting import rules
from alerting.settings import AlertingSettings
from alerting.state import AlertState, Event, Phase, Severity, Verdict, step
from healthcheck.labels import Labels
from healthcheck.probes.plugin import AlertRule, Finding
from healthcheck.probes.registry import find_kind
from healthcheck.result import EndpointId, ProbeResult, Status
from healthcheck.targets import Endpoint

ENDPOINT_DOWN = "endpoint_down"
REGIONAL_FAILURE = "regional_failure"
TLS_EXPIRY = "tls_expiry"
HIGH_LATENCY = "high_latency"
ERROR_RATE = "error_rate"
UPTIME = "uptime"
FLAPPING = "flapping"
DAEMON_HEALTH = "daemon_health"
DAEMON = "healthcheck"  # the target of the daemon's self-check
RULES = (
    ENDPOINT_DOWN,
    REGIONAL_FAILURE,
    TLS_EXPIRY,
    HIGH_LATENCY,
    ERROR_RATE,
    UPTIME,
    FLAPPING,
    DAEMON_HEALTH,
)  # and the rules each probe kind declares (Probe.alert_rules)
UPTIME_EVERY = 30.0  # the 24h uptime moves slowly: judge it twice a minute

Key = tuple[str, str]  # (rule, target)
_Judge = Callable[..., None]
log = logging.getLogger("alerting.evaluator")


@contextmanager
def _contained(what: str) -> Iterator[None]:
    """A rule that raises is logged and skipped: the tick's other changes are still kept."""
    try:
        yield
    except Exception:
        log.exception("alert rule failed: %s", what, extra={"event": "alert_rule_failed"})


@dataclass(frozen=True, slots=True)
class Change:
    """An alert whose state moved this tick, with the event to tell (None: state only)."""

    state: AlertState
    event: Event | None
    region: str
    kind: str | None = None  # the endpoint's probe kind; None for a region or the daemon
    endpoint: EndpointId | None = None  # the endpoint an endpoint alert is about
    # The operator's labels: the endpoint's, or for a region's alert those all its endpoints
    # share. Routes match them; Alertmanager and the messages carry them.
    labels: Labels = ()
    verdict: Verdict | None = None  # the judgement behind this step: its value and threshold
    latest: ProbeResult | None = None  # the endpoint's last check: its error, failed conditions
    held_by: str | None = None  # the firing alert (rule:target) that holds this one back
    held: tuple[str, ...] = ()  # the alerts (rule:target) this one holds back


@dataclass(slots=True)
class _Recent:
    """What one endpoint did lately: the streak, the windows, its status changes."""

    # Lists, not deques: a deque holds a 64-slot block from birth (~760 bytes; three an
    # endpoint were ~43 MB at 20,000 endpoints), and these hold a window's few entries.
    # The old end is cut in one slice per check.
    streak: rules.Streak = field(default_factory=rules.Streak)
    checks: list[tuple[float, bool, float]] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)
    status: Status | None = None
    # Of `checks`: how many failed, and how many passed slower than `slow_limit` (the lower
    # of the endpoint's latency thresholds). While both are too few for the error-rate and
    # latency rules to be active, a quiet alert needs no verdict built (Evaluator._quiet).
    failed: int = 0
    slow: int = 0
    slow_limit: float | None = None

    def add(self, check: tuple[float, bool, float]) -> None:
        self.checks.append(check)
        _, ok, latency = check
        if not ok:
            self.failed += 1
        elif self.slow_limit is not None and latency > self.slow_limit:
            self.slow += 1

    def drop_before(self, horizon: float) -> None:
        checks, limit = self.checks, self.slow_limit
        gone = 0
        while gone < len(checks) and checks[gone][0] < horizon:
            _, ok, latency = checks[gone]
            gone += 1
            if not ok:
                self.failed -= 1
            elif limit is not None and latency > limit:
                self.slow -= 1
        if gone:
            del checks[:gone]

    def count_slow(self, limit: float | None) -> None:
        """Count slow checks against a new limit (the endpoint's thresholds were reloaded)."""
        self.slow_limit = limit
        self.slow = (
            0
            if limit is None
            else sum(1 for _, ok, latency in self.checks if ok and latency > limit)
        )


class Evaluator:
    def __init__(
        self,
        endpoints: Mapping[EndpointId, Endpoint],
        settings: AlertingSettings,
        uptime: Callable[[], Mapping[EndpointId, tuple[float | None, float]]] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.settings = settings
        self.uptime = uptime
        self.alerts: dict[Key, AlertState] = {}
        self.notified: dict[Key, bool] = {}  # did people hear that it fired (not inhibited)?
        # Firing alerts held back (alerting.holds), and the alert at the top that holds each.
        self.held: dict[Key, Key] = {}
        # Endpoints whose down window changed since it was last stored, and what was stored.
        self._windows_changed: set[EndpointId] = set()
        self._windows_stored: dict[EndpointId, str] = {}
        self.verdicts: dict[Key, tuple[Verdict, float]] = {}  # last verdict and its hold
        self._active: set[Key] = set()  # keys whose last verdict is active
        self.regions: dict[str, str] = {}  # target -> region
        self._ids: dict[str, EndpointId] = {}  # target -> endpoint, for endpoint alerts
        self.latest: dict[EndpointId, ProbeResult] = {}
        self._recent: dict[EndpointId, _Recent] = {}
        self._buffer: list[tuple[ProbeResult, Status]] = []
        self._next_uptime = 0.0
        self._kind_rules: dict[str, tuple[AlertRule, ...]] = {}
        self._targets: dict[EndpointId, str] = {}  # endpoint -> its alert target
        # Set by the daemon before each evaluation: (schedule lag p99 s, storage down for s).
        self.self_check: rules.SelfCheck | None = None

    @property
    def endpoints(self) -> dict[EndpointId, Endpoint]:
        return self._endpoints

    @endpoints.setter
    def endpoints(self, endpoints: Mapping[EndpointId, Endpoint]) -> None:
        """Also index endpoints by region: a region's failure is judged each tick it reports."""
        self._endpoints = dict(endpoints)
        self._members: dict[str, list[EndpointId]] = {}
        for endpoint in self._endpoints.values():
            self._members.setdefault(endpoint.region, []).append(endpoint.id)

    def restore(
        self,
        stored: Mapping[Key, tuple[AlertState, bool]],
        windows: Mapping[str, tuple[str, bool]] | None = None,
    ) -> None:
        """Carry on after a restart: firing stays firing, each endpoint's down window goes on
        where it was, and a down endpoint stays down until it really recovers (no false
        resolve from an empty window). A firing alert nobody was told of is held until the
        next evaluation sees whether something still holds it."""
        for target, (outcomes, down) in (windows or {}).items():
            window_of = _endpoint_of(target)
            if window_of is not None:
                self._recent.setdefault(window_of, _Recent()).streak = rules.Streak.decode(
                    outcomes, down
                )
                self._windows_stored[window_of] = outcomes + ("!" if down else "")
        for key, (state, notified) in stored.items():
            self.alerts[key] = state
            self.notified[key] = notified
            if state.phase is Phase.FIRING and not notified:
                self.held[key] = key
            rule, target = key
            endpoint_id = _endpoint_of(target)
            self.regions[target] = endpoint_id.region if endpoint_id else target
            if endpoint_id is None:
                continue
            self._ids[target] = endpoint_id
            if rule == ENDPOINT_DOWN and state.phase is Phase.FIRING:
                recent = self._recent.setdefault(endpoint_id, _Recent())
                recent.streak.down = True

    def observe(self, result: ProbeResult, status: Status) -> None:
        """The daemon's result sink: buffer only."""
        self._buffer.append((result, status))

    def firing(self) -> dict[str, int]:
        """Firing alerts per severity, for metrics."""
        counts = {"critical": 0, "warning": 0, "info": 0}
        for state in self.alerts.values():
            if state.phase is Phase.FIRING:
                counts[state.severity.value] += 1
        return counts

    def told_firing(self) -> list[Change]:
        """Every firing alert that people were told of, as it stands (no event): what a
        channel that keeps alerts alive (Alertmanager) posts again."""
        found = []
        for key, state in self.alerts.items():
            if state.phase is Phase.FIRING and self.notified.get(key, False):
                found.append(self._change(state, None, self.regions.get(key[1], "")))
        return found

    def evaluate(self, now: float) -> list[Change]:
        batch, self._buffer = self._buffer, []
        changes: list[Change] = []
        judged: set[Key] = set()
        rule_settings = self.settings.rules

        def judge(
            rule: str, target: str, region: str, verdict: Verdict | None, hold: float = 0
        ) -> None:
            key = (rule, target)
            self.regions[target] = region
            if verdict is None:
                return  # not enough data to say: keep the state as it is
            self.verdicts[key] = (verdict, hold)
            if verdict.active:
                self._active.add(key)
            else:
                self._active.discard(key)
            judged.add(key)
            self._step(key, verdict, hold, now, region, changes)

        regions_seen = set()
        endpoints = self._endpoints
        for result, status in batch:
            endpoint_id = result.target_id
            endpoint = endpoints.get(endpoint_id)
            if endpoint is None:
                continue
            try:  # as _contained, without a generator per result
                self._judge_result(result, status, endpoint_id, endpoint, now, judge)
                regions_seen.add(endpoint.region)
            except Exception:
                log.exception(
                    "alert rule failed: %s",
                    f"rules for {endpoint.id}",
                    extra={"event": "alert_rule_failed"},
                )

        for region in regions_seen:
            with _contained(f"regional failure of {region}"):
                latest = self.latest
                if self._quiet((REGIONAL_FAILURE, region)) and _any_passed(
                    latest, self._members.get(region, ())
                ):
                    self.regions[region] = region  # inactive: what judge() would keep
                    continue
                members = [latest[i] for i in self._members.get(region, ()) if i in latest]
                verdict = rules.regional_failure(region, members)
                judge(REGIONAL_FAILURE, region, region, verdict, rule_settings.regional_failure_for)

        if self.uptime is not None and now >= self._next_uptime:
            self._next_uptime = now + UPTIME_EVERY
            with _contained("the uptime rule"):
                self._judge_uptime(judge)

        if self.self_check is not None:
            verdict = rules.daemon_health(
                self.self_check,
                self.settings.rules.self_lag_p99,
                self.settings.rules.self_storage_down,
            )
            judge(DAEMON_HEALTH, DAEMON, "", verdict)

        # Alerts that heard nothing new: holds still complete, reminders still fall due.
        # Only active verdicts can move an alert on their own: at 10,000 endpoints going
        # through every verdict each second cost more than judging the second's results.
        for key in list(self._active - judged):
            verdict, hold = self.verdicts[key]
            self._step(key, verdict, hold, now, self.regions.get(key[1], ""), changes)
        return changes

    def _rules_of(self, kind: str) -> tuple[AlertRule, ...]:
        """The alert rules a probe kind declares, looked up once per kind."""
        found = self._kind_rules.get(kind)
        if found is None:
            probe = find_kind(kind)
            found = self._kind_rules[kind] = probe.alert_rules if probe is not None else ()
        return found

    def _quiet(self, key: Key) -> bool:
        """No alert, nor anything else, kept for this key: an inactive verdict (or None) for
        it would change nothing but its region (see judge and _step), so need not be built."""
        return key not in self.alerts and key not in self._active and key not in self.notified

    def _judge_result(
        self,
        result: ProbeResult,
        status: Status,
        endpoint_id: EndpointId,
        endpoint: Endpoint,
        now: float,
        judge: _Judge,
    ) -> None:
        """The per-check rules: down, TLS expiry, error rate, latency, flapping. A rule whose
        verdict cannot be active is not built where its alert is quiet (_quiet): most checks
        of a healthy fleet move no alert, and the verdicts' texts were most of their cost."""
        target = self._targets.get(endpoint_id)
        if target is None:
            target = self._targets[endpoint_id] = self._target(endpoint_id)
        region = endpoint.region
        self.latest[endpoint_id] = result
        if not endpoint.alerts.enabled:
            return  # muted: still counts towards its region, never alerts on its own
        self.regions[target] = region  # as every judge() below would
        quiet = self._quiet
        rule_settings = endpoint.alerts.apply(self.settings.rules)
        recent = self._recent.get(endpoint_id)
        if recent is None:
            recent = self._recent[endpoint_id] = _Recent()
        warning, critical = endpoint.latency_warning, endpoint.latency_critical
        slow_limit = (
            critical if warning is None else warning if critical is None else min(warning, critical)
        )
        if slow_limit != recent.slow_limit:
            recent.count_slow(slow_limit)
        recent.add((result.timestamp, result.ok, result.latency))
        recent.drop_before(now - max(rule_settings.error_rate_window, rule_settings.latency_window))
        if recent.status is not None and status is not recent.status:
            recent.changes.append(now)
        recent.status = status
        changes, since = recent.changes, now - rule_settings.flapping_window
        gone = 0
        while gone < len(changes) and changes[gone] < since:
            gone += 1
        if gone:
            del changes[:gone]

        down_settings = (
            rule_settings.failure_threshold,
            rule_settings.success_threshold,
            rule_settings.failure_window,
            rule_settings.success_window,
        )
        down = rules.advance(recent.streak, result.ok, *down_settings)
        self._windows_changed.add(endpoint_id)
        if down or not quiet((ENDPOINT_DOWN, target)):
            judge(
                ENDPOINT_DOWN,
                target,
                region,
                rules.down_verdict(recent.streak, result, *down_settings),
            )
        for rule in self._rules_of(result.kind):
            finding = rule.judge(result, status is Status.DEGRADED)
            judge(rule.name, target, region, None if finding is None else _verdict(finding))
        if result.cert_expiry is not None:
            days = (result.cert_expiry - now) / rules.DAY
            if (
                days < rule_settings.tls_critical_days
                or days < rule_settings.tls_warning_days
                or not quiet((TLS_EXPIRY, target))
            ):
                judge(
                    TLS_EXPIRY,
                    target,
                    region,
                    rules.certificate_expiry(
                        target,
                        result.cert_expiry,
                        now,
                        rule_settings.tls_warning_days,
                        rule_settings.tls_critical_days,
                    ),
                )
        if (
            recent.failed > 0
            or rule_settings.error_rate_min_failures < 1
            or not quiet((ERROR_RATE, target))
        ):
            since = now - rule_settings.error_rate_window
            outcomes = [ok for ts, ok, _ in recent.checks if ts >= since]
            judge(
                ERROR_RATE,
                target,
                region,
                rules.error_rate(
                    target,
                    outcomes,
                    rule_settings.error_rate_warning,
                    rule_settings.error_rate_critical,
                    rule_settings.error_rate_min_checks,
                    rule_settings.error_rate_min_failures,
                ),
            )
        # No thresholds: no verdict (None) to judge at all. Fewer slow checks than it takes:
        # not active (each counted slow check is one over the lower threshold).
        if slow_limit is not None and (
            recent.slow >= max(rule_settings.latency_min_slow_checks, 1)
            or not quiet((HIGH_LATENCY, target))
        ):
            since = now - rule_settings.latency_window
            latencies = [latency for ts, ok, latency in recent.checks if ok and ts >= since]
            judge(
                HIGH_LATENCY,
                target,
                region,
                rules.latency_p95(
                    target,
                    latencies,
                    endpoint.latency_warning,
                    endpoint.latency_critical,
                    rule_settings.latency_min_checks,
                    rule_settings.latency_min_slow_checks,
                ),
                rule_settings.latency_for,
            )
        if len(recent.changes) >= rule_settings.flapping_changes or not quiet((FLAPPING, target)):
            judge(
                FLAPPING,
                target,
                region,
                rules.flapping(
                    target,
                    len(recent.changes),
                    rule_settings.flapping_changes,
                    rule_settings.flapping_window,
                ),
            )

    def _judge_uptime(self, judge: _Judge) -> None:
        for endpoint_id, (ratio, checks) in self.uptime().items() if self.uptime else ():
            endpoint = self.endpoints.get(endpoint_id)
            if endpoint is not None and endpoint.alerts.enabled:
                target = self._target(endpoint_id)
                rule_settings = endpoint.alerts.apply(self.settings.rules)
                verdict = rules.uptime_below(
                    target,
                    ratio,
                    checks,
                    rule_settings.uptime_warning,
                    rule_settings.uptime_critical,
                    rule_settings.uptime_min_checks,
                )
                judge(UPTIME, target, endpoint.region, verdict)

    def windows_to_store(self) -> dict[str, tuple[str, bool] | None]:
        """Per endpoint target, its down window as it changed since the last call (outcomes,
        down), or None where nothing is worth keeping any more (all passed, up)."""
        found: dict[str, tuple[str, bool] | None] = {}
        for endpoint_id in self._windows_changed:
            recent = self._recent.get(endpoint_id)
            if recent is None:
                continue
            streak = recent.streak
            worth = streak.down or any(streak.recent)
            text = streak.encode() + ("!" if streak.down else "") if worth else ""
            if text == self._windows_stored.get(endpoint_id, ""):
                continue
            found[str(endpoint_id)] = (streak.encode(), streak.down) if worth else None
            if worth:
                self._windows_stored[endpoint_id] = text
            else:
                self._windows_stored.pop(endpoint_id, None)
        self._windows_changed.clear()
        return found

    def store_all_windows(self) -> None:
        """The database file is new: the next windows_to_store() gives every window."""
        self._windows_stored.clear()
        self._windows_changed.update(self._recent)

    def endpoint_id(self, target: str) -> EndpointId | None:
        """The endpoint an alert target names; None for a region's or the daemon's."""
        return self._ids.get(target) or _endpoint_of(target)

    def change(self, state: AlertState, event: Event | None, region: str) -> Change:
        """A change of this alert, with what is known of its target (see _change)."""
        return self._change(state, event, region)

    def _step(
        self,
        key: Key,
        verdict: Verdict,
        hold: float,
        now: float,
        region: str,
        changes: list[Change],
    ) -> None:
        rule, target = key
        before = self.alerts.get(key)
        repeat = self.settings.repeat.get(verdict.severity.value)
        after, event = step(
            before, verdict, now, rule=rule, target=target, hold=hold, repeat=repeat
        )
        if after is None:
            self.alerts.pop(key, None)
            self.notified.pop(key, None)
            if before is not None:
                changes.append(self._change(before, None, region))  # forgotten pending
            return
        self.alerts[key] = after
        if event is not None or after.phase is not (before.phase if before else None):
            changes.append(self._change(after, event, region, verdict))
        if after.phase is Phase.RESOLVED:
            self.verdicts.pop(key, None)
            self._active.discard(key)

    def _target(self, endpoint_id: EndpointId) -> str:
        """An endpoint's alert target: its id as people and Alertmanager see it."""
        target = str(endpoint_id)
        self._ids[target] = endpoint_id
        return target

    def _change(
        self, state: AlertState, event: Event | None, region: str, verdict: Verdict | None = None
    ) -> Change:
        """A change with what is known of its target: the endpoint, its kind and labels while
        it is configured, and its last check."""
        endpoint_id = self._ids.get(state.target)
        endpoint = self._endpoints.get(endpoint_id) if endpoint_id is not None else None
        if endpoint is not None:
            return Change(
                state,
                event,
                region,
                endpoint.kind,
                endpoint_id,
                endpoint.labels,
                verdict,
                self.latest.get(endpoint.id),
            )
        labels = self._region_labels(state.target) if state.target in self._members else ()
        return Change(state, event, region, None, endpoint_id, labels, verdict)

    def _region_labels(self, region: str) -> Labels:
        """The labels every endpoint of the region has, with the same value."""
        shared: set[tuple[str, str]] | None = None
        for endpoint_id in self._members.get(region, ()):
            labels = set(self._endpoints[endpoint_id].labels)
            shared = labels if shared is None else shared & labels
        return tuple(sorted(shared or ()))


def _any_passed(latest: Mapping[EndpointId, ProbeResult], members: Iterable[EndpointId]) -> bool:
    """Has any of these endpoints passed its last check (so its region is not all down)?"""
    for endpoint_id in members:
        result = latest.get(endpoint_id)
        if result is not None and result.ok:
            return True
    return False


def _verdict(finding: Finding) -> Verdict:
    return Verdict(finding.active, Severity(finding.severity), finding.text)


def _endpoint_of(target: str) -> EndpointId | None:
    """The endpoint of a stored alert target; None for a region's or the daemon's."""
    try:
        return EndpointId.parse(target)
    except ValueError:
        return None
