"""`labels:`, `exporter.metric_labels` and the list form of `alerting.routes`: merged down like
latency, and every mistake named by its key path."""

from __future__ import annotations

import pytest

from healthcheck.config import parse_config
from healthcheck.errors import ConfigError

REGIONS = "regions: {eu: {endpoints: [{name: api, url: 'http://x/'}]}}"
CHANNELS = "channels: {slack: 'json://127.0.0.1:1/', pd: 'json://127.0.0.1:2/'}"


def test_labels_merge_down_key_by_key() -> None:
    config = parse_config(
        """
defaults: {labels: {team: platform, tier: 2, env: prod}}
regions:
  eu:
    defaults: {labels: {team: payments}}
    endpoints:
      - {name: api, url: "http://x/", labels: {tier: "1"}}
      - {name: web, url: "http://x/"}
  us:
    endpoints: [{name: api, url: "http://x/"}]
""",
        "test.yaml",
        {},
    )
    labels = {str(e.id): dict(e.labels) for e in config.endpoints()}
    assert labels == {
        "eu/api": {"team": "payments", "tier": "1", "env": "prod"},
        "eu/web": {"team": "payments", "tier": "2", "env": "prod"},
        "us/api": {"team": "platform", "tier": "2", "env": "prod"},
    }


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        (
            "regions: {eu: {endpoints: [{name: api, url: 'http://x/', labels: {Team-x: a}}]}}",
            "regions.eu.endpoints[0].labels.Team-x",
            "not a label name",
        ),
        (
            "regions: {eu: {endpoints: [{name: api, url: 'http://x/', labels: {1team: a}}]}}",
            "regions.eu.endpoints[0].labels.1team",
            "not starting with a digit",
        ),
        (
            f"defaults: {{labels: {{severity: high}}}}\n{REGIONS}",
            "defaults.labels.severity",
            "a label healthcheck sets itself",
        ),
        (
            f"defaults: {{labels: {{__meta: x}}}}\n{REGIONS}",
            "defaults.labels.__meta",
            "reserved by Prometheus",
        ),
        (
            "regions: {eu: {defaults: {labels: {team: [a]}}, "
            "endpoints: [{name: api, url: 'http://x/'}]}}",
            "regions.eu.defaults.labels.team",
            "expected a text value",
        ),
        (
            f"defaults: {{labels: [team]}}\n{REGIONS}",
            "defaults.labels",
            "expected a mapping of label names",
        ),
        (
            f"exporter: {{metric_labels: [team, region]}}\n{REGIONS}",
            "exporter.metric_labels[1]",
            "a label healthcheck sets itself",
        ),
        (
            f"exporter: {{metric_labels: [team, team]}}\n{REGIONS}",
            "exporter.metric_labels[1]",
            "listed twice",
        ),
        (
            f"exporter: {{public_url: 'status.example.com'}}\n{REGIONS}",
            "exporter.public_url",
            "http://",
        ),
        (
            f"alerting: {{{CHANNELS}, routes: [{{match: {{team: a}}, channels: [sms]}}]}}\n"
            + REGIONS,
            "alerting.routes[0].channels",
            "channel 'sms' is not defined",
        ),
        (
            f"alerting: {{{CHANNELS}, routes: [{{channels: [pd]}}, "
            f"{{match: {{endpoint: '~api('}}, channels: [pd]}}]}}\n{REGIONS}",
            "alerting.routes[1].match.endpoint",
            "not a valid regular expression 'api('",
        ),
        (
            f"alerting: {{{CHANNELS}, routes: [{{match: {{severity: high}}, channels: [pd]}}]}}\n"
            + REGIONS,
            "alerting.routes[0].match.severity",
            "a severity is one of critical, warning, info",
        ),
        (
            f"alerting: {{{CHANNELS}, routes: [{{match: {{Team-x: a}}, channels: [pd]}}]}}\n"
            + REGIONS,
            "alerting.routes[0].match.Team-x",
            "not a label name",
        ),
        (
            f"alerting: {{{CHANNELS}, routes: [{{match: {{team: a}}}}]}}\n{REGIONS}",
            "alerting.routes[0].channels",
            "missing",
        ),
        (
            f"alerting: {{{CHANNELS}, routes: [{{match: {{team: a}}, channels: [pd], "
            f"continue: maybe}}]}}\n{REGIONS}",
            "alerting.routes[0].continue",
            "",
        ),
        (
            f"alerting: {{{CHANNELS}, routes: [{{matches: {{team: a}}, channels: [pd]}}]}}\n"
            + REGIONS,
            "alerting.routes[0].matches",
            "unknown key",
        ),
        (
            f"alerting: {{{CHANNELS}, routes: pd}}\n{REGIONS}",
            "alerting.routes",
            "or a list of",
        ),
    ],
)
def test_label_and_route_mistakes_name_their_key_path(text, path, fragment) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", {})
    assert caught.value.file == "test.yaml"
    assert caught.value.path == path
    assert fragment in caught.value.message


def test_a_label_from_the_environment_is_refused_unshown() -> None:
    text = f"defaults: {{labels: {{team: '${{TEAM}}'}}}}\n{REGIONS}"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", {"TEAM": "payments-secret"})
    assert caught.value.path == "defaults.labels.team"
    assert "payments-secret" not in str(caught.value)
