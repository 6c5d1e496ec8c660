"""The prober: one started probe per kind, made as the daemon and its workers make it; a kind
it cannot start is the prober's own trouble, never a verdict about the target."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from healthcheck.config import parse_config
from healthcheck.prober import Prober
from healthcheck.probes.base import Probe
from healthcheck.probes.registry import KINDS, register_kind
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.targets import Endpoint


class BrokenProbe(Probe):
    """A kind whose start fails, as one whose driver or library is missing would."""

    kind = "broken"
    starts = 0

    async def start(self) -> None:
        BrokenProbe.starts += 1
        raise RuntimeError("its driver is not installed")

    async def attempt(self, target: Endpoint) -> ProbeResult:  # pragma: no cover - never started
        raise AssertionError("a probe that did not start checked something")


def endpoint(kind: str) -> Endpoint:
    document = {"regions": {"r": {"endpoints": [{"name": "a", "url": "http://127.0.0.1:9/"}]}}}
    (http,) = parse_config(json.dumps(document), "test", {}).endpoints()
    return replace(http, kind=kind)


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_every_registered_kind_starts_as_the_prober_starts_it(
    kind: str, tmp_path: Path
) -> None:
    database = str(tmp_path / "healthcheck.db")
    async with Prober(database=database) as prober:
        probe = await prober._probe(kind)
        assert probe.kind == kind
        assert probe.database == database  # push reads its last ping there


async def test_a_kind_that_cannot_start_is_the_probers_trouble_and_is_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = endpoint("broken")
    register_kind("broken", f"{__name__}:BrokenProbe")
    BrokenProbe.starts = 0
    try:
        async with Prober() as prober:
            first = await prober.check(target)
            second = await prober.check(target)
    finally:
        del KINDS["broken"]
    for result in (first, second):
        assert not result.ok
        assert result.error is ErrorClass.PROBER  # not the target's: no verdict, no alert
        assert result.error_text == (
            "the prober could not start its broken checks: "
            "RuntimeError: its driver is not installed"
        )
        assert str(result.target_id) == "r/a"
    assert BrokenProbe.starts == 2  # a failed start is not kept: the next check tries again
    assert "could not start the broken probe" in caplog.text
