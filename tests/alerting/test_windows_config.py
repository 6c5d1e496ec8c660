"""Failure/success windows and depends_on in regions.yaml: what loads, and the errors (exit 3,
file and key path) for a window under its threshold, an unknown name, or a cycle."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alerting.rules import Streak, endpoint_down
from healthcheck.config import parse_config
from healthcheck.errors import ConfigError
from healthcheck.result import ErrorClass, ProbeResult


def result(ok: bool) -> ProbeResult:
    return ProbeResult("eu", "api", "http", ok, 0.01, 0.0, None if ok else ErrorClass.TIMEOUT)


def downs(pattern: str, **window) -> str:
    """D where the endpoint counts as down after each check of `pattern` (F failed, S passed)."""
    streak = Streak()
    return "".join(
        "D" if endpoint_down(streak, result(c == "S"), **window).active else "." for c in pattern
    )


def test_three_of_five_fires_where_three_in_a_row_never_does() -> None:
    pattern = "FFSFS" * 4  # 3 of every 5 checks fail, never 3 in a row
    assert downs(pattern, failure_threshold=3, failure_window=5) == "...D" + "D" * 16
    assert downs(pattern, failure_threshold=3) == "." * 20  # the default: in a row
    assert downs(pattern, failure_threshold=3, failure_window=3) == "." * 20  # the same


def test_the_resolve_counts_successes_in_its_own_window() -> None:
    window = {"failure_threshold": 2, "success_threshold": 2}
    # 2 of the last 3 passed: up again at the second S, though a failure came between.
    assert downs("FFSFSFSSS", **window, success_window=3) == ".DDD....."
    assert downs("FFSFSFSSS", **window) == ".DDDDDD.."  # the default: 2 in a row


def config(regions: dict, **alerting) -> dict:
    return {"alerting": alerting, "regions": regions}


def load(data: dict):
    return parse_config(json.dumps(data), "regions.yaml", {})


def refused(data: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        load(data)
    return str(caught.value)


EU = {"eu": {"endpoints": [{"name": "api", "url": "http://x/"}]}}


def test_windows_load_on_rules_and_on_an_endpoint() -> None:
    loaded = load(
        config(
            {
                "eu": {
                    "defaults": {"alerts": {"failure_window": 6}},
                    "endpoints": [
                        {"name": "api", "url": "http://x/", "alerts": {"failure_threshold": 4}}
                    ],
                }
            },
            rules={"failure_threshold": 3, "failure_window": 5, "success_window": 4},
        )
    )
    (api,) = loaded.endpoints()
    rules = api.alerts.apply(loaded.alerting.rules)
    assert (rules.failure_threshold, rules.failure_window) == (4, 6)
    assert (rules.success_threshold, rules.success_window) == (2, 4)


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (config(EU, rules={"failure_window": 2}), "alerting.rules.failure_window"),
        (
            config(EU, rules={"success_threshold": 3, "success_window": 2}),
            "alerting.rules.success_window",
        ),
        (
            {
                "defaults": {"alerts": {"failure_threshold": 5, "failure_window": 4}},
                "regions": EU,
            },
            "defaults.alerts.failure_window",
        ),
        (
            config(
                {
                    "eu": {
                        "endpoints": [
                            {"name": "api", "url": "http://x/", "alerts": {"failure_window": 2}}
                        ]
                    }
                }
            ),
            "regions.eu.endpoints[0].alerts.failure_window",
        ),
        (  # a window from the rules under a threshold set on the endpoint
            config(
                {
                    "eu": {
                        "endpoints": [
                            {"name": "api", "url": "http://x/", "alerts": {"failure_threshold": 6}}
                        ]
                    }
                },
                rules={"failure_window": 5},
            ),
            "regions.eu.endpoints[0].alerts.failure_window",
        ),
    ],
)
def test_a_window_under_its_threshold_is_refused_with_its_key_path(data, path) -> None:
    message = refused(data)
    assert message.startswith(f"regions.yaml: {path}:"), message
    assert "smaller than" in message


def regions_with(**depends) -> dict:
    """Region eu with db, lb, api, web; `depends` maps an endpoint to its depends_on."""
    return {
        "eu": {
            "endpoints": [
                {
                    "name": name,
                    "url": "http://x/",
                    **({"depends_on": depends[name]} if name in depends else {}),
                }
                for name in ("db", "lb", "api", "web")
            ]
        },
        "us": {"endpoints": [{"name": "api", "url": "http://x/"}]},
    }


def test_depends_on_loads_from_an_endpoint_and_a_regions_defaults() -> None:
    loaded = load(
        {
            "regions": {
                "eu": {
                    "defaults": {"depends_on": ["eu/db", "us"]},
                    "endpoints": [
                        {"name": "db", "url": "http://x/"},
                        {"name": "api", "url": "http://x/"},
                        {"name": "lb", "url": "http://x/", "depends_on": []},
                    ],
                },
                "us": {"endpoints": [{"name": "api", "url": "http://x/"}]},
            }
        }
    )
    found = {str(e.id): e.depends_on for e in loaded.endpoints()}
    # The region's default leaves out db itself; an endpoint's own list replaces it.
    assert found == {"eu/db": ("us",), "eu/api": ("eu/db", "us"), "eu/lb": (), "us/api": ()}


def test_an_unknown_name_is_refused_with_its_key_path() -> None:
    message = refused(config(regions_with(api=["eu/db", "eu/dbb"])))
    assert message.startswith("regions.yaml: regions.eu.endpoints[2].depends_on[1]:"), message
    assert "'eu/dbb' is neither a region nor a region/endpoint" in message
    assert "did you mean 'eu/db'?" in message
    message = refused(config(regions_with(api=["asia"])))
    assert "regions.eu.endpoints[2].depends_on[0]: 'asia'" in message
    message = refused(config(regions_with(api=["eu/db/x"])))
    assert "regions.eu.endpoints[2].depends_on[0]:" in message


def test_a_cycle_is_refused_naming_the_chain() -> None:
    message = refused(config(regions_with(api=["eu/lb"], lb=["eu/db"], db=["us", "eu/api"])))
    assert "dependency cycle: eu/" in message
    chain = message.split("dependency cycle: ")[1].split(" (")[0].split(" -> ")
    assert chain[0] == chain[-1] and set(chain) == {"eu/api", "eu/lb", "eu/db"}, chain
    assert "regions.eu.endpoints[" in message and "].depends_on:" in message
    # An endpoint naming itself is a cycle of one.
    assert "dependency cycle: eu/web -> eu/web" in refused(config(regions_with(web=["eu/web"])))


def test_check_config_exits_3_naming_file_and_key_path(tmp_path) -> None:
    for name, data, expected in (
        ("cycle.yaml", config(regions_with(api=["eu/web"], web=["eu/api"])), "dependency cycle"),
        ("unknown.yaml", config(regions_with(api=["eu/nope"])), "depends_on[0]: 'eu/nope'"),
        (
            "window.yaml",
            config(EU, rules={"failure_threshold": 3, "failure_window": 2}),
            "alerting.rules.failure_window: 2 is smaller than failure_threshold (3)",
        ),
    ):
        path = tmp_path / name
        path.write_text(json.dumps(data))
        done = subprocess.run(
            [sys.executable, "-m", "healthcheck", "check-config", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 3, done
        assert str(path) in done.stderr and expected in done.stderr, done.stderr
