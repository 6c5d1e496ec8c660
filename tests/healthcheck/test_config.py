"""Configuration loading: merging, interpolation, and every validation error with its key path."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from healthcheck.config import load_config, parse_config
from healthcheck.daemon import Daemon
from healthcheck.errors import ConfigError
from healthcheck.probes.http import HttpSettings
from healthcheck.probes.push import PushSettings
from healthcheck.result import EndpointId
from healthcheck.secrets import Secret

REPO = Path(__file__).resolve().parents[2]


def parse(text: str, env: dict[str, str] | None = None):
    return parse_config(textwrap.dedent(text), "test.yaml", env or {})


def test_the_shipped_example_is_valid() -> None:
    config = load_config(REPO / "regions.yaml", environ={})
    names = [region.name for region in config.regions]
    assert names == ["us-west", "us-east", "eu-west", "ap", "edge", "global"]
    kinds = {endpoint.kind for endpoint in config.endpoints()}
    assert kinds == {"http", "tcp", "tls", "dns", "icmp"}


def test_defaults_merge_global_region_endpoint() -> None:
    config = parse(
        """
        defaults:
          interval: 1m
          timeout: 5s
          latency: {warning: 100ms, critical: 500ms}
          headers: {Accept: application/json, X-Team: sre}
          method: HEAD
        regions:
          eu:
            defaults: {timeout: 2s, latency: {critical: 800ms}}
            endpoints:
              - name: api
                url: https://eu.example.com/health
                headers: {X-Team: eu}
              - {name: db, kind: tcp, address: "db.eu:5432", interval: 10s}
        """
    )
    api, db = config.regions[0].endpoints
    assert (api.interval, api.timeout, api.retries) == (60.0, 2.0, 1)
    assert (api.latency_warning, api.latency_critical) == (0.1, 0.8)
    assert dict(api.settings.headers) == {"Accept": "application/json", "X-Team": "eu"}
    assert api.settings.method == "HEAD"
    assert api.settings.max_body == 1024 * 1024 and api.settings.tls.verify is True
    assert (db.interval, db.timeout, db.settings.address) == (10.0, 2.0, ("db.eu", 5432))
    assert api.id == EndpointId("eu", "api") and str(api.id) == "eu/api"


def test_environment_interpolation_makes_secrets() -> None:
    config = parse(
        """
        regions:
          r:
            endpoints:
              - name: api
                url: "https://${HOST:-api.example.com}/health?key=${KEY}"
                headers: {Authorization: "Bearer ${TOKEN}", X-Price: "$$5"}
        """,
        {"KEY": "k-123456", "TOKEN": "tok-abcdef"},
    )
    settings = config.regions[0].endpoints[0].settings
    assert settings.url == "https://api.example.com/health?key=k-123456"
    headers = dict(settings.headers)
    assert isinstance(headers["Authorization"], Secret)
    assert headers["Authorization"].reveal() == "Bearer tok-abcdef"
    assert "tok-abcdef" not in repr(settings)
    assert headers["X-Price"] == "$5"
    assert {"k-123456", "tok-abcdef"} <= config.secrets


def test_disabled_endpoints_are_validated_but_not_checked() -> None:
    config = parse(
        """
        regions:
          r:
            endpoints:
              - {name: a, url: "http://a.example/"}
              - {name: b, url: "http://b.example/", enabled: false}
        """
    )
    assert [endpoint.name for endpoint in config.endpoints()] == ["a"]


def test_ca_file_is_resolved_next_to_the_config(tmp_path) -> None:
    (tmp_path / "ca.pem").write_text("not checked here")
    path = tmp_path / "regions.yaml"
    path.write_text(
        "regions: {r: {endpoints: [{name: a, url: 'https://a.example/', tls: {ca_file: ca.pem}}]}}"
    )
    endpoint = next(load_config(path, environ={}).endpoints())
    assert endpoint.settings.tls.ca_file == str(tmp_path / "ca.pem")


ONE = "regions: {{us-west: {{endpoints: [{{name: api, url: 'http://a.example/', {extra}}}]}}}}"


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("", None, "the file is empty"),
        ("- a\n- b", None, "expected a mapping at the top level"),
        ("regions: [a", None, "invalid YAML"),
        ("regions: {}\nregions: {}", None, "appears twice"),
        ("colour: red\nregions: {}", "colour", "unknown key 'colour'"),
        ("defaults: {}", "regions", "missing"),
        ("regions: {}", "regions", "no regions"),
        ("regions: {'bad region': {endpoints: []}}", "regions.bad region", "region name"),
        ("regions: {r: {endpoints: []}}", "regions.r.endpoints", "at least one endpoint"),
        ("regions: {r: {endpoint: []}}", "regions.r.endpoint", "did you mean 'endpoints'"),
        (
            "regions: {r: {endpoints: [{url: 'http://a/'}]}}",
            "regions.r.endpoints[0].name",
            "needs a name",
        ),
        (
            ONE.format(extra="timeout: fast"),
            "regions.us-west.endpoints[0].timeout",
            "expected a duration",
        ),
        (
            ONE.format(extra="timeout: 0s"),
            "regions.us-west.endpoints[0].timeout",
            "greater than zero",
        ),
        (
            ONE.format(extra="interval: -5s"),
            "regions.us-west.endpoints[0].interval",
            "expected a duration",
        ),
        (
            ONE.format(extra="interval: 0"),
            "regions.us-west.endpoints[0].interval",
            "greater than zero",
        ),
        (ONE.format(extra="retries: many"), "regions.us-west.endpoints[0].retries", "whole number"),
        (ONE.format(extra="retries: 99"), "regions.us-west.endpoints[0].retries", "at most 10"),
        (
            ONE.format(extra="timout: 5s"),
            "regions.us-west.endpoints[0].timout",
            "did you mean 'timeout'",
        ),
        (
            ONE.format(extra="address: 'a:1'"),
            "regions.us-west.endpoints[0].address",
            "for a http endpoint",
        ),
        (
            ONE.format(extra="kind: smtp"),
            "regions.us-west.endpoints[0].kind",
            "unknown kind 'smtp'",
        ),
        (
            ONE.format(extra="method: FETCH"),
            "regions.us-west.endpoints[0].method",
            "expected one of GET",
        ),
        (
            ONE.format(extra="headers: [a]"),
            "regions.us-west.endpoints[0].headers",
            "mapping of header",
        ),
        (
            ONE.format(extra="follow_redirects: yes-please"),
            "regions.us-west.endpoints[0].follow_redirects",
            "true or false",
        ),
        (
            ONE.format(extra="expected_status: [200, 999]"),
            "regions.us-west.endpoints[0].expected_status",
            "between 100 and 599",
        ),
        (ONE.format(extra="max_body: lots"), "regions.us-west.endpoints[0].max_body", "size like"),
        (
            ONE.format(extra="tls: {verify: maybe}"),
            "regions.us-west.endpoints[0].tls.verify",
            "true or false",
        ),
        (
            ONE.format(extra="tls: {pin: abc}"),
            "regions.us-west.endpoints[0].tls.pin",
            "unknown key",
        ),
        (
            ONE.format(extra="tls: {ca_file: /nonexistent/ca.pem}"),
            "regions.us-west.endpoints[0].tls.ca_file",
            "no such file",
        ),
        (
            ONE.format(extra="latency: {warning: 500ms, critical: 100ms}"),
            "regions.us-west.endpoints[0].latency",
            "must be lower than critical",
        ),
        (
            ONE.format(extra="latency: {warning: 500ms}"),
            "regions.us-west.endpoints[0].latency",
            "must be lower than critical",
        ),
        (
            ONE.format(extra="latency: {warn: 1s}"),
            "regions.us-west.endpoints[0].latency.warn",
            "unknown key",
        ),
        (
            ONE.format(extra="timeout: 1m, interval: 30s"),
            "regions.us-west.endpoints[0].timeout",
            "longer than the interval",
        ),
        (
            ONE.format(extra="conditions: '[STATUS] == 200'"),
            "regions.us-west.endpoints[0].conditions",
            "expected a list",
        ),
        (
            ONE.format(extra="conditions: ['[STATUS] === 200']"),
            "regions.us-west.endpoints[0].conditions[0]",
            "column",
        ),
        (
            ONE.format(extra="conditions: ['[STATUSS] == 200']"),
            "regions.us-west.endpoints[0].conditions[0]",
            "STATUSS",
        ),
        (
            ONE.format(extra="conditions: ['[DNS_RCODE] == NOERROR']"),
            "regions.us-west.endpoints[0].conditions[0]",
            "not available for http",
        ),
        (
            "regions: {r: {endpoints: [{name: a, url: 'ftp://a/'}]}}",
            "regions.r.endpoints[0].url",
            "http:// or https://",
        ),
        (
            "regions: {r: {endpoints: [{name: a, url: 'http://'}]}}",
            "regions.r.endpoints[0].url",
            "no host",
        ),
        (
            "regions: {r: {endpoints: [{name: a, url: 'http://a:99999/'}]}}",
            "regions.r.endpoints[0].url",
            "not a valid URL",
        ),
        ("regions: {r: {endpoints: [{name: a}]}}", "regions.r.endpoints[0].url", "needs 'url'"),
        (
            "regions: {r: {endpoints: [{name: a, kind: tcp, address: nohost}]}}",
            "regions.r.endpoints[0].address",
            "host:port",
        ),
        (
            "regions: {r: {endpoints: [{name: a, kind: tcp, address: 'h:0'}]}}",
            "regions.r.endpoints[0].address",
            "between 1 and 65535",
        ),
        (
            "regions: {r: {endpoints: [{name: a, kind: dns, hostname: 'bad host'}]}}",
            "regions.r.endpoints[0].hostname",
            "host name",
        ),
        (
            "regions: {r: {endpoints: [{name: a, url: 'http://a/'}, {name: a, url: 'http://b/'}]}}",
            "regions.r.endpoints[1].name",
            "duplicate endpoint name 'a'",
        ),
        (
            "regions: {r: {endpoints: [{name: 'a b', url: 'http://a/'}]}}",
            "regions.r.endpoints[0].name",
            "not a valid name",
        ),
        ("defaults: {interval: soon}\nregions: {}", "defaults.interval", "expected a duration"),
        ("defaults: {colour: red}\nregions: {}", "defaults.colour", "unknown key"),
        (
            "regions: {r: {defaults: {latency: {warning: 2s, critical: 1s}}, endpoints: []}}",
            "regions.r.defaults.latency",
            "must be lower",
        ),
        (
            "regions: {r: {endpoints: [{name: a, url: '${NOPE}'}]}}",
            "regions.r.endpoints[0].url",
            "NOPE is not set",
        ),
        (
            "regions: {r: {endpoints: [{name: a, url: '${'}]}}",
            "regions.r.endpoints[0].url",
            "malformed",
        ),
        ("scheduler: {max_concurrency: 0}\nregions: {}", "scheduler.max_concurrency", "at least 1"),
        ("scheduler: {workers: 0}\nregions: {}", "scheduler.workers", "from 1 to 1024, or auto"),
        ("scheduler: {workers: many}\nregions: {}", "scheduler.workers", "or auto; got 'many'"),
        ("scheduler: {workers: true}\nregions: {}", "scheduler.workers", "from 1 to 1024"),
        ("exporter: {listen: everywhere}\nregions: {}", "exporter.listen", "host:port"),
        ("storage: {retention: {raw: forever}}\nregions: {}", "storage.retention.raw", "duration"),
        (
            "regions: {r: {endpoints: [{name: a, url: !!python/object:os.system 'x'}]}}",
            None,
            "invalid YAML",
        ),
        (
            "alerting: {channels: {slack: 'nonsense://tok'}}\nregions: {}",
            "alerting.channels.slack.url",
            "not a URL Apprise understands",
        ),
        (
            "alerting: {channels: {slack: 'json://h/'}, routes: {critical: [pd]}}\nregions: {}",
            "alerting.routes.critical",
            "'pd' is not defined",
        ),
        (
            "alerting: {rules: {failure_treshold: 3}}\nregions: {}",
            "alerting.rules.failure_treshold",
            "unknown key",
        ),
        (
            "alerting: {rules: {uptime_warning: 90%, uptime_critical: 95%}}\nregions: {}",
            "alerting.rules.uptime_critical",
            "below uptime_warning",
        ),
        (
            "alerting: {silences: [{region: eu}]}\nregions: {}",
            "alerting.silences[0].reason",
            "say why",
        ),
        (
            "alerting: {channels: {am: {url: 'ftp://x', kind: alertmanager}}}\nregions: {}",
            "alerting.channels.am.url",
            "Alertmanager base URL",
        ),
        (
            "alerting: {channels: {slack: {url: 'json://h/', resend: 1m}}}\nregions: {}",
            "alerting.channels.slack.resend",
            "only for kind: alertmanager",
        ),
        (
            "alerting: {channels: {am: {url: 'http://a', kind: alertmanager, resend: 2h}}}"
            "\nregions: {}",
            "alerting.channels.am.resend",
            "at most 1h",
        ),
        ("alerting: {timeout: soon}\nregions: {}", "alerting.timeout", "duration"),
        (
            "alerting: {evaluate_every: 50ms}\nregions: {}",
            "alerting.evaluate_every",
            "must be at least 100ms, got '50ms'",
        ),
        (
            "alerting: {evaluate_every: 2m}\nregions: {}",
            "alerting.evaluate_every",
            "must be at most 1m, got '2m'",
        ),
        ("alerting: {evaluate_every: 0}\nregions: {}", "alerting.evaluate_every", "than zero"),
        ("alerting: {evaluate_every: often}\nregions: {}", "alerting.evaluate_every", "often"),
        (
            "alerting: {channels: {slack: {url: 'json://h/', timeout: 0s}}}\nregions: {}",
            "alerting.channels.slack.timeout",
            "greater than zero",
        ),
        (
            "alerting: {channels: {slack: {url: 'json://h/', timeout: 1h}}}\nregions: {}",
            "alerting.channels.slack.timeout",
            "at most 5m",
        ),
        ("sla: {target: 120%}\nregions: {}", "sla.target", "between 0 and 100%"),
        (ONE.format(extra="interval: .nan"), "regions.us-west.endpoints[0].interval", "duration"),
        (ONE.format(extra="interval: 25h"), "regions.us-west.endpoints[0].interval", "at most 1d"),
        ("defaults: {timeout: 1.0e+300}\nregions: {}", "defaults.timeout", "at most 1d"),
        ("storage: {max_queue: 0}\nregions: {}", "storage.max_queue", "at least 1"),
        ("storage: {busy_timeout: 2m}\nregions: {}", "storage.busy_timeout", "at most 1m"),
        ("scheduler: {wedged_after: 2s}\nregions: {}", "scheduler.wedged_after", "at least 3s"),
        ("scheduler: {wedged_after: 1m}\nregions: {}", "scheduler.wedged_after", "at most 25s"),
        ("scheduler: {stop_grace: 0s}\nregions: {}", "scheduler.stop_grace", "greater than zero"),
        ("scheduler: {stop_grace: 1m}\nregions: {}", "scheduler.stop_grace", "at most 10s"),
        ("scheduler: {control_plane_nice: 20}\nregions: {}", "scheduler.control_plane_nice", "19"),
        ("scheduler: {control_plane_nice: -1}\nregions: {}", "scheduler.control_plane_nice", "0"),
        ("storage: {retention: {raw_rows: 0}}\nregions: {}", "storage.retention.raw_rows", "least"),
        ("storage: {retention: {rollups: 4000d}}\nregions: {}", "storage.retention.rollups", "366"),
        ("storage: {queue: 5}\nregions: {}", "storage.queue", "path, retention, max_queue"),
        ("regions: &a {r: *a}", None, "inside its own anchor"),
    ],
)
def test_validation_errors_name_the_key_path(text: str, path: str | None, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", {})
    error = caught.value
    assert error.file == "test.yaml"
    assert error.path == path
    assert fragment in error.message
    assert str(error).startswith("test.yaml: ")


def test_missing_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "nope.yaml")


def test_secret_values_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(
            "regions: {r: {endpoints: [{name: a, url: '${TOKEN}'}]}}", {"TOKEN": "hunter2hunter2"}
        )
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("fragment", "path"),
    [
        ("method: '${SECRET}'", "regions.r.endpoints[0].method"),  # echoed upper-cased
        ("expected_status: '${SECRET}'", "regions.r.endpoints[0].expected_status"),
        ("interval: '${SECRET}'", "regions.r.endpoints[0].interval"),
    ],
)
def test_secret_values_are_scrubbed_from_every_echoing_error(fragment: str, path: str) -> None:
    text = f"regions: {{r: {{endpoints: [{{name: a, url: 'http://x/', {fragment}}}]}}}}"
    with pytest.raises(ConfigError) as caught:
        parse(text, {"SECRET": "s3cretValue"})
    assert caught.value.path == path
    message = str(caught.value)
    assert "s3cretvalue" not in message.lower()
    assert "***" in message  # the value is shown redacted, not silently dropped


REGIONS = "regions: {eu: {endpoints: [{name: api, url: 'http://127.0.0.1:1/'}]}}"


def test_a_channel_delivery_timeout_defaults_globally_and_per_channel() -> None:
    text = (
        "alerting:\n"
        "  timeout: 45s\n"
        "  channels: {slack: 'json://h/', hook: {url: 'json://h/', timeout: 2m}, pd: 'json://p/'}\n"
        f"{REGIONS}"
    )
    channels = parse_config(text, "test.yaml", {}).alerting.channels
    assert {name: item.timeout for name, item in channels.items()} == {
        "slack": 45.0,
        "hook": 120.0,
        "pd": 45.0,
    }
    default = parse_config(f"alerting: {{channels: {{slack: 'json://h/'}}}}\n{REGIONS}", "t", {})
    assert default.alerting.channels["slack"].timeout == 30.0  # generous: a slow Slack is fine


# -- the README's configuration is the configuration -------------------------------------------
README = REPO / "README.md"
# How a README block that is only a fragment becomes a whole file: when it has no `regions`
# key, this minimal one is appended to its text (nothing else is added or changed).
MINIMAL_REGIONS = "\nregions: {example: {endpoints: [{name: api, url: 'http://127.0.0.1:1/'}]}}\n"
# Every `${NAME}` a block uses is given this value, so a block is judged on its keys.
EXAMPLE_VALUE = "readme-example-value"


def readme_yaml_blocks() -> list[str]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    assert blocks, "README.md shows no ```yaml block: the test would prove nothing"
    return blocks


@pytest.mark.parametrize(
    "block", readme_yaml_blocks(), ids=lambda b: b.strip().splitlines()[0][:40]
)
def test_every_readme_yaml_block_is_accepted(block: str, tmp_path) -> None:
    data = yaml.safe_load(block)
    assert isinstance(data, dict), f"cannot judge this README block, not a mapping:\n{block}"
    whole = block if "regions" in data else block + MINIMAL_REGIONS
    path = tmp_path / "regions.yaml"
    path.write_text(whole, encoding="utf-8")
    environ = dict.fromkeys(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", block), EXAMPLE_VALUE)
    config = load_config(path, environ=environ)
    assert list(config.endpoints()), "a configuration with nothing to check"


def test_the_scheduler_watch_and_stop_keys_reach_the_settings() -> None:
    regions = 'regions: {r: {endpoints: [{name: a, url: "http://a.example/"}]}}'
    default = parse(regions).scheduler
    assert (default.wedged_after, default.stop_grace, default.control_plane_nice) == (10.0, 5.0, 5)
    config = parse(
        "scheduler: {wedged_after: 4s, stop_grace: 500ms, control_plane_nice: 0}\n" + regions
    )
    assert (config.scheduler.wedged_after, config.scheduler.stop_grace) == (4.0, 0.5)
    assert config.scheduler.control_plane_nice == 0


def test_the_readme_storage_keys_reach_the_settings() -> None:
    config = parse(
        """
        storage:
          retention: {raw: 24h, raw_rows: 500, rollups: 30d}
          max_queue: 1000
          busy_timeout: 250ms
        regions: {r: {endpoints: [{name: a, url: "http://a.example/"}]}}
        """
    )
    storage = config.storage
    assert (storage.retention_raw, storage.retention_raw_rows) == (86400.0, 500)
    assert (storage.retention_rollups, storage.max_queue) == (30 * 86400.0, 1000)
    assert storage.busy_timeout == 0.25


ALL_SECRET = """
regions:
  r:
    endpoints:
      - name: api
        url: "https://${NC_HOST}/health"
        headers: {Authorization: "Bearer ${NC_TOKEN}"}
      - {name: job, kind: push, token: "${NC_PUSH}", interval: 1h}
alerting: {channels: {slack: "${NC_SLACK}"}, routes: {critical: [slack]}}
"""


def test_unset_variables_load_only_when_allowed_and_can_then_be_used_by_nothing() -> None:
    with pytest.raises(ConfigError, match="NC_HOST is not set"):
        parse_config(ALL_SECRET, "mine.yaml", environ={})
    config = parse_config(ALL_SECRET, "mine.yaml", environ={}, allow_unset=True)
    assert [(u.name, u.path) for u in config.unset] == [
        ("NC_HOST", "regions.r.endpoints[0].url"),
        ("NC_TOKEN", "regions.r.endpoints[0].headers.Authorization"),
        ("NC_PUSH", "regions.r.endpoints[1].token"),
        ("NC_SLACK", "alerting.channels.slack"),
    ]
    api, job = config.endpoints()
    values = [
        dict(api.settings.narrow(HttpSettings).headers)["Authorization"],
        job.settings.narrow(PushSettings).token,
        config.alerting.channels["slack"].url,
    ]
    for value in values:
        assert str(value) == "***"
        with pytest.raises(ConfigError, match="is not set"):
            value.reveal()  # nothing can send or probe with it
    # A value kept as plain text (the URL) is caught before anything starts.
    with pytest.raises(ConfigError, match=r"endpoints\[0\]\.url: environment variable NC_HOST"):
        config.require_environment()
    with pytest.raises(ConfigError, match="NC_HOST is not set"):
        Daemon(config)
