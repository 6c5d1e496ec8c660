"""Turns probe results into alert state changes, one evaluation per tick.

Results are buffered by `observe` (the daemon's sink, O(1)); `evaluate` runs the rules over
what arrived, steps each alert's state machine, and re-steps alerts that heard nothing new so
holds complete and reminders fall due. Everything here is in memory and pure of I/O.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
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
    # Alerts of other targets held back because this one fires (alert dependencies): listed
    # in this alert's notification. Empty until dependencies set it.
    held_dependants: tuple[str, ...] = ()


@dataclass(slots=True)
class _Recent:
    """What one endpoint did lately: the streak, the windows, its status changes."""

    streak: rules.Streak = field(default_factory=rules.Streak)
    checks: deque[tuple[float, bool, float]] = field(default_factory=deque)
    changes: deque[float] = field(default_factory=deque)
    status: Status | None = None


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
        self.verdicts: dict[Key, tuple[Verdict, float]] = {}  # last verdict and its hold
        self._active: set[Key] = set()  # keys whose last verdict is active
        self.regions: dict[str, str] = {}  # target -> region
        self._ids: dict[str, EndpointId] = {}  # target -> endpoint, for endpoint alerts
        self.latest: dict[EndpointId, ProbeResult] = {}
        self._recent: dict[EndpointId, _Recent] = {}
        self._buffer: list[tuple[ProbeResult, Status]] = []
        self._next_uptime = 0.0
        self._kind_rules: dict[str, tuple[AlertRule, ...]] = {}
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

    def restore(self, stored: Mapping[Key, tuple[AlertState, bool]]) -> None:
        """Carry on after a restart: firing stays firing, and a down endpoint stays down
        until it really recovers (no false resolve from an empty streak)."""
        for key, (state, notified) in stored.items():
            self.alerts[key] = state
            self.notified[key] = notified
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
        for result, status in batch:
            endpoint = self.endpoints.get(result.target_id)
            if endpoint is None:
                continue
            with _contained(f"rules for {endpoint.id}"):
                self._judge_result(result, status, endpoint, now, judge)
                regions_seen.add(endpoint.region)

        for region in regions_seen:
            with _contained(f"regional failure of {region}"):
                latest = self.latest
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

    def _judge_result(
        self, result: ProbeResult, status: Status, endpoint: Endpoint, now: float, judge: _Judge
    ) -> None:
        """The per-check rules: down, TLS expiry, error rate, latency, flapping."""
        target, region = self._target(endpoint.id), endpoint.region
        self.latest[endpoint.id] = result
        if not endpoint.alerts.enabled:
            return  # muted: still counts towards its region, never alerts on its own
        rule_settings = endpoint.alerts.apply(self.settings.rules)
        recent = self._recent.setdefault(endpoint.id, _Recent())
        recent.checks.append((result.timestamp, result.ok, result.latency))
        horizon = now - max(rule_settings.error_rate_window, rule_settings.latency_window)
        while recent.checks and recent.checks[0][0] < horizon:
            recent.checks.popleft()
        if recent.status is not None and status is not recent.status:
            recent.changes.append(now)
        recent.status = status
        while recent.changes and recent.changes[0] < now - rule_settings.flapping_window:
            recent.changes.popleft()

        down = rules.endpoint_down(
            recent.streak,
            result,
            rule_settings.failure_threshold,
            rule_settings.success_threshold,
        )
        judge(ENDPOINT_DOWN, target, region, down)
        for rule in self._rules_of(result.kind):
            finding = rule.judge(result, status is Status.DEGRADED)
            judge(rule.name, target, region, None if finding is None else _verdict(finding))
        if result.cert_expiry is not None:
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


def _verdict(finding: Finding) -> Verdict:
    return Verdict(finding.active, Severity(finding.severity), finding.text)


def _endpoint_of(target: str) -> EndpointId | None:
    """The endpoint of a stored alert target; None for a region's or the daemon's."""
    try:
        return EndpointId.parse(target)
    except ValueError:
        return None
