"""Configuration that is hostile rather than wrong: `check-config` refuses it with exit 3 and
a message naming the file and the problem, never a traceback, minutes or gigabytes."""

from __future__ import annotations

import asyncio
import signal

import pytest
from polling import until

from healthcheck.safe_yaml import MAX_BYTES

ENDPOINT = "regions: {r: {endpoints: [{name: a, url: 'http://127.0.0.1:1/', %s}]}}\n"


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The classic: each level is `width` aliases of the one before, 9**9 values from 1 KB."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        aliases = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def deep_block(depth: int) -> str:
    """Block sequences nested on one line (`- - - x`): indented mappings would grow as depth²."""
    return "regions:\n" + "- " * depth + "x\n"


CASES = {
    "alias bomb": (billion_laughs(), "values with aliases expanded"),
    "alias bomb inside the regions": (
        billion_laughs() + "regions: {r: {endpoints: [{name: a, url: 'http://a/'}]}}\n",
        "values with aliases expanded",
    ),
    "an alias inside its own anchor": ("regions: &a {r: *a}\n", "inside its own anchor"),
    "nested 5,000 deep in block style": (deep_block(5000), "nested deeper than 64 levels"),
    "nested 5,000 deep in flow style": ("regions: " + "[" * 5000 + "]" * 5000, "nesting depth"),
    "a 5,000-digit number": (ENDPOINT % ("retries: " + "9" * 5000), "invalid YAML"),
    "an interval of 10^20 hours": (
        ENDPOINT % "interval: 99999999999999999999h",
        "regions.r.endpoints[0].interval: must be at most 1d, got '99999999999999999999h'",
    ),
    "a default timeout of a year": (
        "defaults: {timeout: 365d}\n" + ENDPOINT % "retries: 0",
        "defaults.timeout: must be at most 1d",
    ),
    "latency critical of a week": (
        ENDPOINT % "latency: {critical: 7d}",
        "regions.r.endpoints[0].latency.critical: must be at most 1d",
    ),
    "raw retention of two years": (
        "storage: {retention: {raw: 730d}}\n" + ENDPOINT % "retries: 0",
        "storage.retention.raw: must be at most 366d",
    ),
    "an alert window of a month": (
        "alerting: {rules: {flapping_window: 30d}}\n" + ENDPOINT % "retries: 0",
        "alerting.rules.flapping_window: must be at most 7d",
    ),
}


@pytest.mark.parametrize(("text", "message"), CASES.values(), ids=CASES.keys())
async def test_hostile_configuration_is_refused(run_cli, tmp_path, text: str, message: str) -> None:
    config = tmp_path / "regions.yaml"
    config.write_text(text)
    done = await run_cli("check-config", "--config", str(config))
    assert done.code == 3, done.stderr
    assert done.stderr.startswith(f"healthcheck: configuration error: {config}: ")
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1


async def test_a_file_past_the_size_limit_is_refused_unread(run_cli, tmp_path) -> None:
    config = tmp_path / "regions.yaml"
    with config.open("w") as file:
        file.write("# padding\n" * (MAX_BYTES // 10 + 1))
        file.write(ENDPOINT % "retries: 0")
    done = await run_cli("check-config", "--config", str(config))
    assert done.code == 3, done.stderr
    limit = f"larger than {MAX_BYTES // 2**20} MiB, the most accepted"
    assert f"{config}: the file is {limit}" in done.stderr


async def test_aliases_within_the_limits_still_work(run_cli, tmp_path) -> None:
    config = tmp_path / "regions.yaml"
    config.write_text(
        "defaults: &common {interval: 1m, timeout: 2s}\n"
        "regions: {r: {defaults: *common, endpoints: [{<<: *common, name: a, url: 'http://a/'}]}}\n"
    )
    done = await run_cli("check-config", "--config", str(config))
    assert done.code == 0, done.stderr


async def test_a_reload_of_an_alias_bomb_is_rejected_and_the_daemon_carries_on(
    start_daemon, follow_log, fleet, tmp_path
) -> None:
    """What would have got the service killed under MemoryMax=1G: a SIGHUP with a bomb."""
    config = tmp_path / "regions.yaml"
    config.write_text(
        f"storage: {{path: {tmp_path / 'hc.db'}}}\n"
        "exporter: {listen: '127.0.0.1:0'}\n"
        "defaults: {interval: 1s, timeout: 1s}\n"
        f"regions: {{r: {{endpoints: [{{name: a, url: '{fleet.http}/ok'}}]}}}}\n"
    )
    process = await start_daemon(config)
    log = follow_log(process)
    try:
        await until(lambda: log.events("listening"))
        config.write_text(billion_laughs())
        process.send_signal(signal.SIGHUP)
        await until(lambda: log.events("config_reload_failed"))
        assert "values with aliases expanded" in log.events("config_reload_failed")[0]["error"]
        assert process.returncode is None
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert log.other == []
