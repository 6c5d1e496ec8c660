"""Which firing alert holds another back: one incident, one page.

An alert is *held* while one of its parents fires: it is still evaluated and recorded, listed
in the parent's notification, and not sent on its own; should it still fire once no parent
does, it goes out then. An endpoint's down alert holds too while that endpoint's latest check
failed, before it fires: a dependant whose own checks counted to its threshold a tick before
its parent's is held until the parent fires (then listed in it) or passes a check (then it
goes out on its own). A held down, error-rate or uptime alert counts the failures of the
outage that held it: once its parent is over it goes out only if its own endpoint's latest check
failed (still down, failing again), else it stays held until it resolves, unsent. The parents,
all one mechanism:

- an endpoint's down alert: its region's regional failure, each of its `depends_on` (another
  endpoint's down alert, or a bare region's regional failure), and its own flapping alert;
- its error rate, uptime and latency alerts: the same, and its own down alert first of all.

Other alerts (TLS expiry, regional failures, the daemon's, a kind's own rules) are never held.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from alerting.evaluator import (
    ENDPOINT_DOWN,
    ERROR_RATE,
    FLAPPING,
    HIGH_LATENCY,
    REGIONAL_FAILURE,
    UPTIME,
    Change,
    Evaluator,
    Key,
)
from alerting.state import AlertState, Event, Phase
from healthcheck.targets import Endpoint

TOLD = (Event.FIRED, Event.ESCALATED, Event.REMINDER)
# Held alerts that count the failures of the outage that held them: once nothing holds them
# they go out only if their endpoint fails again (its latest check failed) while they fire.
COUNTS_FAILURES = frozenset({ENDPOINT_DOWN, ERROR_RATE, UPTIME})
HELD_RULES = frozenset({ENDPOINT_DOWN, ERROR_RATE, UPTIME, HIGH_LATENCY})


def parents(rule: str, target: str, endpoint: Endpoint | None) -> tuple[Key, ...]:
    """The alerts whose firing holds (rule, target) back, most basic first."""
    if endpoint is None or rule not in HELD_RULES:
        return ()
    region = (REGIONAL_FAILURE, endpoint.region)
    needs = tuple(
        (ENDPOINT_DOWN, name) if "/" in name else (REGIONAL_FAILURE, name)
        for name in endpoint.depends_on
    )
    if rule == ENDPOINT_DOWN:
        return (region, *needs, (FLAPPING, target))
    return (region, *needs, (ENDPOINT_DOWN, target))


def holder(
    key: Key,
    alerts: Mapping[Key, AlertState],
    endpoint_of: Callable[[str], Endpoint | None],
    failing: Callable[[str], bool] = lambda target: False,
) -> Key | None:
    """The alert at the top of the chain holding `key` back (the one people hear of), or
    None when no parent of it holds: fires, or (an endpoint's down alert) `failing(target)`,
    its latest check failed."""
    seen = {key}
    top = None
    current = key
    while True:
        for parent in parents(current[0], current[1], endpoint_of(current[1])):
            state = alerts.get(parent)
            if parent not in seen and (
                (state is not None and state.phase is Phase.FIRING)
                or (parent[0] == ENDPOINT_DOWN and failing(parent[1]))
            ):
                seen.add(parent)
                top = current = parent
                break
        else:
            return top


def hold(evaluator: Evaluator, changes: list[Change], now: float) -> list[Change]:
    """One evaluation's changes, each firing one marked with the alert holding it back
    (`held_by`) or, if it holds others, listing them (`held`); and a FIRED change more for
    each held alert that still fires now that nothing holds it. Keeps `evaluator.held`."""
    alerts, held = evaluator.alerts, evaluator.held

    def endpoint_of(target: str) -> Endpoint | None:
        endpoint_id = evaluator.endpoint_id(target)
        return evaluator.endpoints.get(endpoint_id) if endpoint_id is not None else None

    def failing(target: str) -> bool:
        endpoint = endpoint_of(target)
        if endpoint is None or not endpoint.alerts.enabled:
            return False  # a muted endpoint never fires: it holds nothing back
        latest = evaluator.latest.get(endpoint.id)
        return latest is not None and not latest.ok

    out: list[Change] = []
    seen: set[Key] = set()
    for change in changes:
        key = (change.state.rule, change.state.target)
        seen.add(key)
        top = (
            holder(key, alerts, endpoint_of, failing)
            if change.state.phase is Phase.FIRING
            else None
        )
        if top is None:
            held.pop(key, None)
        else:
            held[key] = top
            change = replace(change, held_by=_id(top))
        out.append(change)
    still: dict[Key, bool] = {}  # per top this tick: does it still hold?

    def holding(top: Key) -> bool:
        if top not in still:
            state = alerts.get(top)
            still[top] = (state is not None and state.phase is Phase.FIRING) or (
                top[0] == ENDPOINT_DOWN and failing(top[1])
            )
        return still[top]

    for key in [k for k in held if k not in seen]:
        state = alerts.get(key)
        if state is None or state.phase is not Phase.FIRING:
            del held[key]
            continue
        if held[key] != key and holding(held[key]):
            continue  # the common case, thousands at a time in a storm: one look per top
        top = holder(key, alerts, endpoint_of, failing)
        if top is not None:
            held[key] = top
        elif key[0] in COUNTS_FAILURES and not failing(key[1]):
            pass  # its endpoint's latest check passed: it counts the outage just over
        else:  # its parent stopped firing and it still does: people hear of it now
            del held[key]
            if evaluator.notified.get(key, False):
                continue  # they heard of it before its parent fired
            state = alerts[key] = replace(state, last_sent=now)
            region = evaluator.regions.get(key[1], "")
            out.append(evaluator.change(state, Event.FIRED, region))
    told = {(c.state.rule, c.state.target) for c in out if c.event in TOLD and c.held_by is None}
    if not held or not told:
        return out
    behind: dict[Key, list[str]] = {}
    for key, top in held.items():
        if top in told:
            behind.setdefault(top, []).append(_id(key))
    return [
        replace(c, held=tuple(sorted(behind[(c.state.rule, c.state.target)])))
        if c.event in TOLD and c.held_by is None and (c.state.rule, c.state.target) in behind
        else c
        for c in out
    ]


def _id(key: Key) -> str:
    """An alert's id as notifications and the API show it: rule:target."""
    return f"{key[0]}:{key[1]}"
