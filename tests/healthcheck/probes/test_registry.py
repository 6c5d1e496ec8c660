"""The registry of probe kinds: one name, one class; a kind's declarations reached through it."""

from __future__ import annotations

import re

import pytest

from healthcheck.probes.registry import KINDS, find_kind, probe_kind, register_kind


def test_a_name_is_registered_for_one_class() -> None:
    with pytest.raises(ValueError, match=re.escape("registered as healthcheck.probes.http:Http")):
        register_kind("http", "elsewhere:HttpProbe")
    with pytest.raises(ValueError, match=re.escape("'package.module:Class'")):
        register_kind("ping", "ping_module")
    assert "ping" not in KINDS
    register_kind("http", "healthcheck.probes.http:HttpProbe")  # the same again: no change
    assert KINDS["http"] == "healthcheck.probes.http:HttpProbe"


def test_an_unknown_kind_is_none_or_a_key_error() -> None:
    assert find_kind("no-such-kind") is None
    with pytest.raises(KeyError):
        probe_kind("no-such-kind")


def test_the_canaries_declare_their_metrics_and_rule_the_others_none() -> None:
    canaries = [probe_kind("onnx"), probe_kind("inference")]
    assert {probe.down_alertname for probe in canaries} == {"HealthcheckCanaryFailing"}
    assert {rule.alertname for probe in canaries for rule in probe.alert_rules} == {
        "HealthcheckCanaryWrongOutput"
    }
    assert all(probe.metrics is not None for probe in canaries)
    for kind in ("http", "tcp", "tls", "dns"):
        probe = probe_kind(kind)
        assert (probe.metrics, probe.alert_rules, probe.down_alertname) == (None, (), None)
