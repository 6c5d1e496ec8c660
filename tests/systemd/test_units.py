"""The shipped systemd units, checked by systemd's own tools."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from tools import require

UNITS = Path(__file__).resolve().parents[2] / "systemd"
NAMES = ("healthcheck.service", "healthcheck-once.service", "healthcheck-once.timer")


@pytest.fixture
def installed_units(tmp_path) -> list[Path]:
    """The units with ExecStart pointing at this checkout's command (verify checks it exists)."""
    command = str(Path(sys.executable).with_name("healthcheck"))
    paths = []
    for name in NAMES:
        text = (UNITS / name).read_text().replace("/opt/healthcheck/bin/healthcheck", command)
        path = tmp_path / name
        path.write_text(text)
        paths.append(path)
    return paths


def test_systemd_analyze_verify_accepts_the_units(installed_units) -> None:
    analyze = require("systemd-analyze", package="systemd")
    done = subprocess.run(
        [analyze, "verify", *map(str, installed_units)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # no warnings either


@pytest.mark.parametrize("name", ["healthcheck.service", "healthcheck-once.service"])
def test_exposure_score_is_low(installed_units, name: str) -> None:
    analyze = require("systemd-analyze", package="systemd")
    unit = next(path for path in installed_units if path.name == name)
    done = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert match, done.stdout[-500:] + done.stderr
    score = float(match.group(1))
    print(f"{name}: systemd-analyze security exposure {score}")  # reported with -s / in the log
    assert score <= 2.0


def test_the_daemon_unit_keeps_its_promises() -> None:
    text = (UNITS / "healthcheck.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "User=healthcheck",  # the once unit shares the state directory: same name, same UID
        "StateDirectory=healthcheck",
        "ConfigurationDirectory=healthcheck",
        "EnvironmentFile=-/etc/healthcheck/secrets.env",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryMax=",
    ):
        assert line in text, line
