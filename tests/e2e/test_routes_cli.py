"""`healthcheck routes test` as a subprocess: where an alert would go, and nothing sent."""

from __future__ import annotations

import json

import pytest

CONFIG = """
defaults: {labels: {tier: "2"}}
alerting:
  channels:
    pagerduty_payments: "json://127.0.0.1:{port}/pd_payments"
    slack_payments: "json://127.0.0.1:{port}/slack_payments"
    audit: "json://127.0.0.1:{port}/audit"
    pagerduty: "json://127.0.0.1:{port}/pagerduty"
    slack: "json://127.0.0.1:{port}/slack"
  routes:
    - match: {endpoint: "~api|web", rule: endpoint_down}
      continue: true
      channels: [audit]
    - match: {team: payments, severity: critical}
      channels: [pagerduty_payments, slack_payments]
    - match: {severity: critical}
      channels: [pagerduty, slack]
regions:
  eu-west:
    defaults: {labels: {team: payments}}
    endpoints:
      - {name: api, url: "http://127.0.0.1:1/", labels: {tier: "1"}}
      - {name: db, kind: tcp, address: "127.0.0.1:5432"}
  us-east:
    endpoints:
      - {name: api, url: "http://127.0.0.1:1/"}
"""


@pytest.fixture
async def config(tmp_path, webhook):
    await webhook.up()  # a receiver that would record anything sent: nothing must be
    path = tmp_path / "regions.yaml"
    path.write_text(CONFIG.replace("{port}", str(webhook.port)))
    return str(path)


@pytest.mark.parametrize(
    ("args", "matched", "channels"),
    [
        (
            ["--region", "eu-west", "--endpoint", "api", "--severity", "critical"],
            [
                "routes[0] match {endpoint: ~api|web, rule: endpoint_down} continue",
                "routes[1] match {team: payments, severity: critical}",
            ],
            "audit, pagerduty_payments, slack_payments",
        ),
        (
            ["--region", "eu-west", "--endpoint", "db", "--severity", "critical"],
            ["routes[1] match {team: payments, severity: critical}"],
            "pagerduty_payments, slack_payments",
        ),
        (
            [
                "--region",
                "us-east",
                "--endpoint",
                "api",
                "--severity",
                "critical",
                "--rule",
                "high_latency",
            ],
            ["routes[2] match {severity: critical}"],
            "pagerduty, slack",
        ),
        (
            [
                "--region",
                "us-east",
                "--endpoint",
                "api",
                "--severity",
                "warning",
                "--rule",
                "high_latency",
            ],
            ["no route; the warning severity tier applies"],
            "slack",  # the default tier, email + Slack, of what is configured
        ),
    ],
    ids=["continue-fans-out", "first-match-wins", "catch-all", "severity-tier"],
)
async def test_routes_test_names_the_route_and_channels(
    run_cli, config, webhook, args, matched, channels
) -> None:
    done = await run_cli("routes", "test", "-c", config, *args)
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.removeprefix("matched: ") for line in lines if line.startswith("matched:")] == (
        matched
    )
    assert lines[-1] == f"channels: {channels}"
    assert webhook.received == []


async def test_routes_test_json_and_a_region_alert(run_cli, config) -> None:
    done = await run_cli(
        "routes",
        "test",
        "-c",
        config,
        "--region",
        "eu-west",
        "--severity",
        "critical",
        "--format",
        "json",
    )
    assert done.code == 0, done.stderr
    answer = json.loads(done.stdout)
    # A region's alert carries the labels all its endpoints share: team, not tier.
    assert answer["alert"] == {
        "team": "payments",
        "severity": "critical",
        "region": "eu-west",
        "endpoint": "",
        "rule": "regional_failure",
        "kind": "",
    }
    assert [m["index"] for m in answer["matched"]] == [1]
    assert answer["channels"] == ["pagerduty_payments", "slack_payments"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--region", "mars", "--endpoint", "api"], "--region 'mars' is not in the configuration"),
        (["--region", "eu-west", "--endpoint", "nope"], "--endpoint 'nope' is not in region"),
        (["--region", "eu-west", "--endpoint", "api", "--rule", "bogus"], "--rule 'bogus'"),
        (["--endpoint", "api"], "routes test takes one --region"),
    ],
    ids=["region", "endpoint", "rule", "no-region"],
)
async def test_routes_test_refuses_what_is_not_configured(run_cli, config, args, fragment) -> None:
    done = await run_cli("routes", "test", "-c", config, "--severity", "critical", *args)
    assert done.code == 3
    assert fragment in done.stderr
    assert done.stdout == ""


async def test_a_route_to_an_unknown_channel_is_a_config_error(run_cli, tmp_path) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text(CONFIG.replace("{port}", "9").replace("[pagerduty, slack]", "[pagerduty, sms]"))
    done = await run_cli("check-config", "-c", str(path))
    assert done.code == 3
    assert "alerting.routes[2].channels: channel 'sms' is not defined" in done.stderr
