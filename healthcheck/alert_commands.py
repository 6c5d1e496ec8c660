"""`healthcheck test-alert`, `healthcheck routes test` and `healthcheck silence add|list|remove`."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime

from alerting.delivery import build_channels, per_alert
from alerting.evaluator import ENDPOINT_DOWN, REGIONAL_FAILURE, RULES, Change
from alerting.outbox import Notification
from alerting.router import facts
from alerting.silences import Silence, add_stored, remove_stored, stored
from alerting.state import AlertState, Event, Phase, Severity
from healthcheck.durations import parse_duration
from healthcheck.errors import ConfigError, DeliveryError
from healthcheck.probes.registry import every_alert_rule
from healthcheck.targets import Config
from storage.schema import connect

EXIT_DELIVERY_FAILED = 4


async def test_alert(config: Config, severity: str) -> int:
    """Send a clearly marked test through the route of `severity`; print each answer."""
    config.require_environment()  # it sends: every ${VAR} must be set
    names = config.alerting.routing({"severity": severity}).channels
    if not names:
        raise ConfigError(
            f"no channel is routed for {severity} alerts: configure alerting.channels "
            "(and alerting.routes)",
            file=config.source,
        )
    channels = build_channels({n: config.alerting.channels[n] for n in names})
    tracked = per_alert(channels)
    now = time.time()
    key = f"healthcheck_test:{socket.gethostname()}:{int(now)}"
    failed = 0
    for name, channel in channels.items():
        fired = _test_note(
            name, key, severity, "failure" if severity == "critical" else severity, now
        )
        try:
            await channel.deliver(fired)
            if name in tracked:  # close what the test opened
                await channel.deliver(
                    _test_note(name, key, severity, "success", now, resolved=True)
                )
            print(f"{name}: accepted")
        except DeliveryError as exc:
            failed += 1
            print(f"{name}: FAILED: {exc}")
    return EXIT_DELIVERY_FAILED if failed else 0


def _known_rule(rule: str) -> None:
    # Kinds may share a rule (two kinds' canaries): each name once, in order.
    rules = tuple(dict.fromkeys((*RULES, *(kind_rule.name for kind_rule in every_alert_rule()))))
    if rule not in rules:
        raise ConfigError(f"--rule {rule!r} is not a rule; rules are {', '.join(rules)}")


def routes_test(
    config: Config, region: str, endpoint: str | None, severity: str, rule: str | None, fmt: str
) -> int:
    """Which routes an alert of this endpoint (or region), severity and rule would match, and
    the channels it would go to; nothing is sent."""
    found = next((r for r in config.regions if r.name == region), None)
    if found is None:
        raise ConfigError(f"--region {region!r} is not in the configuration", file=config.source)
    rule = rule or (ENDPOINT_DOWN if endpoint is not None else REGIONAL_FAILURE)
    _known_rule(rule)
    if endpoint is None:
        # A region's alert carries the labels all of its endpoints share.
        each = [set(e.labels) for e in found.endpoints]
        shared = set.intersection(*each) if each else set()
        target, kind, endpoint_id, labels = region, None, None, tuple(sorted(shared))
    else:
        chosen = next((e for e in found.endpoints if e.name == endpoint), None)
        if chosen is None:
            names = ", ".join(e.name for e in found.endpoints)
            raise ConfigError(
                f"--endpoint {endpoint!r} is not in region {region!r} (endpoints: {names})",
                file=config.source,
            )
        target, kind, endpoint_id, labels = str(chosen.id), chosen.kind, chosen.id, chosen.labels
    now = time.time()
    state = AlertState(rule, target, Phase.FIRING, Severity(severity), now, now, "")
    alert = facts(Change(state, Event.FIRED, region, kind, endpoint_id, labels))
    routing = config.alerting.routing(alert)
    if fmt == "json":
        matched = [
            {
                "index": r.index,
                "match": {m.key: ("~" + m.value if m.pattern else m.value) for m in r.match},
                "continue": r.proceed,
            }
            for r in routing.matched
        ]
        print(
            json.dumps(
                {
                    "alert": alert,
                    "matched": matched,
                    "severity_tier": not routing.matched,
                    "channels": list(routing.channels),
                },
                indent=2,
            )
        )
        return 0
    shown = ", ".join(f"{k}={v}" for k, v in alert.items() if v)
    print(f"alert: {shown}")
    for route in routing.matched:
        print(f"matched: {route.describe()}")
    if not routing.matched:
        print(f"matched: no route; the {severity} severity tier applies")
    channels = ", ".join(routing.channels)
    print(f"channels: {channels or 'none (the alert is recorded, not sent)'}")
    return 0


def _test_note(
    channel: str, key: str, severity: str, notify_type: str, now: float, resolved: bool = False
) -> Notification:
    return Notification(
        channel=channel,
        dedup_key=key,
        title=f"[TEST:{severity}] healthcheck test alert" + (" (resolved)" if resolved else ""),
        body=f"A test from healthcheck on {socket.gethostname()}; no action is needed.",
        notify_type=notify_type,
        severity=severity,
        event="test",
        labels=[["alertname", "healthcheck_test"], ["severity", severity]],
        starts_at=now,
        ends_at=now + 1 if resolved else None,
    )


def silence_add(
    config: Config,
    db_path: str,
    *,
    region: str | None,
    endpoint: str | None,
    rule: str | None,
    duration: str,
    reason: str,
) -> int:
    known = {(e.region, e.name) for e in config.endpoints()}
    if region is not None and region not in {r for r, _ in known}:
        raise ConfigError(f"--region {region!r} is not in the configuration", file=config.source)
    if endpoint is not None and not any(
        name == endpoint and region in (None, r) for r, name in known
    ):
        raise ConfigError(
            f"--endpoint {endpoint!r} is not in the configuration", file=config.source
        )
    if rule is not None:
        _known_rule(rule)
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise ConfigError(f"--for: {exc}") from None
    if seconds <= 0:
        raise ConfigError(f"--for {duration!r}: a silence must last longer than 0s")
    now = time.time()
    silence = Silence(reason, region, endpoint, rule, now, now + seconds)
    db = connect(db_path)
    try:
        silence_id = add_stored(db, silence, now)
    finally:
        db.conn.close()
    until = datetime.fromtimestamp(now + seconds, UTC).isoformat(timespec="seconds")
    print(f"silence {silence_id} added until {until}: {silence.describe()}")
    return 0


def silence_list(config: Config, db_path: str, fmt: str) -> int:
    db = connect(db_path)
    try:
        now = time.time()
        rows = [(s, "stored") for s in stored(db, now)]
    finally:
        db.conn.close()
    rows += [(s, "config") for s in config.alerting.silences]
    if fmt == "json":
        print(
            json.dumps(
                [
                    {
                        "id": s.id,
                        "source": source,
                        "region": s.region,
                        "endpoint": s.endpoint,
                        "rule": s.rule,
                        "starts": s.starts,
                        "ends": s.ends,
                        "weekly": None
                        if s.weekly is None
                        else {
                            "days": sorted(s.weekly.days),
                            "start": s.weekly.start.isoformat(),
                            "end": s.weekly.end.isoformat(),
                            "timezone": s.weekly.zone,
                        },
                        "active": s.active(now),
                        "reason": s.reason,
                    }
                    for s, source in rows
                ],
                indent=2,
            )
        )
        return 0
    if not rows:
        print("no silences")
    for s, _source in rows:
        ident = f"#{s.id}" if s.id is not None else "config"
        state = "active" if s.active(now) else "inactive"
        until = ""
        if s.ends is not None:
            until = f" until {datetime.fromtimestamp(s.ends, UTC).isoformat(timespec='seconds')}"
        print(f"{ident:>8} {state:8} {s.describe()}{until}")
    return 0


def silence_remove(db_path: str, silence_id: int) -> int:
    db = connect(db_path)
    try:
        removed = remove_stored(db, silence_id)
    finally:
        db.conn.close()
    if not removed:
        raise ConfigError(f"no stored silence #{silence_id} (see `healthcheck silence list`)")
    print(f"silence {silence_id} removed")
    return 0
