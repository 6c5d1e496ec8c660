"""deploy/alertmanager/alertmanager.yml: checked by real amtool, and run in a real Alertmanager
that receives one outage from both alert paths, the daemon's and Prometheus's."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from alertmanager import alerts, running_alertmanager
from polling import until
from tools import require

from alerting.delivery import AlertmanagerChannel
from alerting.evaluator import Change
from alerting.router import ALERTNAMES, route
from alerting.settings import AlertingSettings, ChannelSettings
from alerting.state import AlertState, Event, Phase, Severity
from healthcheck.probes.registry import KINDS, probe_kind
from healthcheck.result import EndpointId
from healthcheck.secrets import Secret

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus"
DAEMON_ONLY = {"HealthcheckErrorRate", "HealthcheckFlapping", "HealthcheckDaemonHealth"}
VANTAGE = "eu-west-1a"


def test_amtool_accepts_the_config() -> None:
    amtool = require("amtool", package="prometheus-alertmanager")
    done = subprocess.run(
        [amtool, "check-config", str(CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def prometheus_alerts() -> dict[str, list[dict]]:
    """Every alert rule in deploy/prometheus, by alertname."""
    found: dict[str, list[dict]] = {}
    for path in PROMETHEUS.glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.setdefault(rule["alert"], []).append(rule)
    return found


def test_the_daemons_alertnames_are_prometheus_alertnames() -> None:
    """Renaming a Prometheus alert without the daemon's table would part the two paths."""
    declared = [probe_kind(kind) for kind in KINDS]  # each kind's own (the canary's)
    kinds = {probe.down_alertname for probe in declared if probe.down_alertname}
    kinds |= {rule.alertname for probe in declared for rule in probe.alert_rules}
    names = {*ALERTNAMES.values(), *kinds} - DAEMON_ONLY
    assert names <= set(prometheus_alerts())


def from_prometheus(alertname: str, severity: str, **labels: str) -> dict:
    """An alert as Prometheus sends it for a rule of deploy/prometheus: the rule's labels, the
    series' labels (job, instance and the scrape config's vantage among them)."""
    [rule] = [r for r in prometheus_alerts()[alertname] if r["labels"]["severity"] == severity]
    return {
        "labels": {
            "alertname": alertname,
            **rule["labels"],
            "job": "healthcheck",
            "instance": "10.0.1.5:9115",
            "vantage": VANTAGE,
            **labels,
        },
        "annotations": {"summary": "from Prometheus"},
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60)),
    }


async def from_daemon(url: str, rule: str, target: str, severity: str, kind: str | None) -> None:
    """An alert as the daemon's Alertmanager channel sends it: through its router."""
    settings = AlertingSettings(
        channels={"am": ChannelSettings("am", Secret(url), "alertmanager")},
        routes={"critical": ("am",), "warning": ("am",), "info": ("am",)},
        vantage=VANTAGE,
    )
    now = time.time()
    state = AlertState(rule, target, Phase.FIRING, Severity(severity), now - 30, now, "down", now)
    endpoint = EndpointId.parse(target) if "/" in target else None
    region = endpoint.region if endpoint else target
    change = Change(state, Event.FIRED, region, kind, endpoint)
    routed = route([change], {}, {}, settings, {"am"}, now)
    [notification] = routed.notifications
    await AlertmanagerChannel("am", Secret(url)).deliver(notification)


async def post(url: str, alert: dict) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/v2/alerts", json=[alert]) as response,
    ):
        assert response.status == 200, await response.text()


@pytest.fixture
async def shipped(tmp_path, webhook):
    """Alertmanager with the shipped routes and inhibitions; every receiver posts to the
    webhook at /<receiver>, and groups flush within a second."""
    await webhook.up()
    config = yaml.safe_load(CONFIG.read_text())
    config["route"].update(group_wait="1s", group_interval="1s")
    config["receivers"] = [
        {
            "name": receiver["name"],
            "webhook_configs": [{"url": f"http://127.0.0.1:{webhook.port}/{receiver['name']}"}],
        }
        for receiver in config["receivers"]
    ]
    async with running_alertmanager(tmp_path / "am", yaml.safe_dump(config)) as url:
        yield url


async def test_one_outage_from_both_paths_is_one_group_at_each_receiver(shipped, webhook) -> None:
    await from_daemon(shipped, "endpoint_down", "eu-west/api", "critical", "http")
    await post(
        shipped,
        from_prometheus(
            "HealthcheckEndpointDown", "critical", region="eu-west", endpoint="api", kind="http"
        ),
    )

    def both(receiver: str) -> list[dict]:
        return [
            r["body"]
            for r in webhook.received
            if r["path"] == f"/{receiver}" and len(r["body"]["alerts"]) == 2
        ]

    await until(lambda: all(both(r) for r in ("pagerduty", "email", "slack")), timeout=30)
    for receiver in ("pagerduty", "email", "slack"):
        bodies = [r["body"] for r in webhook.received if r["path"] == f"/{receiver}"]
        assert len({body["groupKey"] for body in bodies}) == 1  # one group, never two pages
        [notification, *_] = both(receiver)
        assert notification["groupLabels"] == {
            "alertname": "HealthcheckEndpointDown",
            "region": "eu-west",
            "endpoint": "api",
        }
        assert sorted("job" in alert["labels"] for alert in notification["alerts"]) == [
            False,
            True,
        ]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (
            ("regional_failure", "eu-west", "critical", None),
            ("HealthcheckEndpointDown", "critical", {"endpoint": "api", "kind": "http"}),
        ),
        (
            ("endpoint_down", "eu-west/api", "critical", "http"),
            ("HealthcheckHighLatencyP95", "warning", {"endpoint": "api", "kind": "http"}),
        ),
    ],
    ids=["regional-failure-over-its-endpoints", "critical-over-warning"],
)
async def test_a_daemon_alert_inhibits_prometheus_alert(shipped, source, target) -> None:
    await from_daemon(shipped, *source)
    alertname, severity, labels = target
    await post(shipped, from_prometheus(alertname, severity, region="eu-west", **labels))

    async def state() -> str:
        for alert in await alerts(shipped):
            if "job" in alert["labels"]:
                return alert["status"]["state"]
        return "missing"

    found: list[str] = []

    async def suppressed() -> bool:
        found.append(await state())
        return found[-1] == "suppressed"

    deadline = time.monotonic() + 20
    while not await suppressed():
        assert time.monotonic() < deadline, found[-5:]
        await asyncio.sleep(0.1)
