"""`kind: push`: its keys with key paths, its grace and cadence, and its verdicts on the pings
stored in a real SQLite file, on a manual clock."""

from __future__ import annotations

import textwrap

import pytest
from clock import ManualClock

from healthcheck.config import parse_config
from healthcheck.errors import ConfigError
from healthcheck.probes import heartbeats
from healthcheck.probes.push import NO_HEARTBEAT, REPORTED_DOWN, PushProbe
from storage.schema import connect

TOKEN = "0123456789abcdef0123"


def parse(endpoint: str, env: dict[str, str] | None = None):
    text = f"""
    regions:
      jobs:
        endpoints:
          - {endpoint}
    """
    return parse_config(textwrap.dedent(text), "test.yaml", env or {})


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        ("{name: b, kind: push}", "regions.jobs.endpoints[0].token: missing: a push endpoint"),
        ("{name: b, kind: push, token: short}", "endpoints[0].token: expected a token of at least"),
        (
            "{name: b, kind: push, token: 'has spaces in it, sixteen+'}",
            "endpoints[0].token: expected a token",
        ),
        (f"{{name: b, kind: push, token: {TOKEN}, grace: 0s}}", "endpoints[0].grace: must be"),
        (f"{{name: b, kind: push, token: {TOKEN}, grace: 2d}}", "endpoints[0].grace: must be at"),
        (f"{{name: b, kind: push, token: {TOKEN}, grce: 1m}}", "did you mean 'grace'?"),
        (f"{{name: b, kind: push, token: {TOKEN}, url: x}}", "unknown key 'url' for a push"),
        ("{name: b, kind: push, token: '${PUSH}'}", "PUSH"),  # unset variable
    ],
)
def test_config_errors_name_the_key_path(endpoint: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(endpoint)
    assert fragment in str(caught.value)


def test_a_short_token_from_the_environment_is_never_quoted() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("{name: b, kind: push, token: '${PUSH}'}", {"PUSH": "tiny-secret"})
    assert "tiny-secret" not in str(caught.value) and "11 characters" in str(caught.value)


@pytest.mark.parametrize(
    ("keys", "grace", "every"),
    [
        ("interval: 1d", 8640.0, 60.0),  # a tenth of the interval; noticed within a minute
        ("interval: 1m", 30.0, 30.0),  # at least 30 s
        ("interval: 5m", 30.0, 30.0),
        ("interval: 2s, timeout: 1s, grace: 1s", 1.0, 1.0),
        ("interval: 10s, timeout: 1s", 30.0, 10.0),
    ],
)
def test_grace_defaults_and_how_often_it_is_looked_at(keys: str, grace: float, every) -> None:
    from healthcheck.probes.push import grace_of

    endpoint = next(parse(f"{{name: b, kind: push, token: {TOKEN}, {keys}}}").endpoints())
    assert (grace_of(endpoint), endpoint.every) == (grace, every)


async def test_verdicts_on_the_stored_pings(tmp_path) -> None:
    path = str(tmp_path / "hc.db")
    connect(path).conn.close()  # the daemon's database, as it creates it at start
    endpoint = next(
        parse(f"{{name: b, kind: push, token: {TOKEN}, interval: 10m, grace: 1m}}").endpoints()
    )
    clock = ManualClock()
    probe = PushProbe(clock, path)

    first = await probe.run(endpoint)  # nothing stored: it has until interval + grace
    assert first.ok and first.degraded and first.degraded.startswith("no ping yet")
    clock.now += 11 * 60 + 1
    late = await probe.run(endpoint)
    assert (late.ok, late.error) == (False, NO_HEARTBEAT)

    heartbeats.record(path, "jobs", "b", heartbeats.Ping(clock(), True, None, 250.0))
    fresh = await probe.run(endpoint)
    assert (fresh.ok, fresh.error, fresh.latency) == (True, None, 0.25)
    clock.now += 11 * 60 - 1  # just inside interval + grace
    assert (await probe.run(endpoint)).ok
    clock.now += 2
    stale = await probe.run(endpoint)
    assert stale.error is NO_HEARTBEAT and "last ping 11m1s ago" in stale.error_text

    heartbeats.record(path, "jobs", "b", heartbeats.Ping(clock(), False, "exit 3", None))
    down = await probe.run(endpoint)
    assert down.error is REPORTED_DOWN and down.error_text.endswith(": exit 3")

    # No database (a path nothing created): no verdict about the job, only that none is stored.
    elsewhere = PushProbe(clock, str(tmp_path / "none.db"))
    assert (await elsewhere.run(endpoint)).degraded is not None
    assert not (tmp_path / "none.db").exists()
