"""`healthcheck --once`, `check-config` and `demo` as a user runs them."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
import yaml
from timeouts import timeout_row_text

MIXED_TIMEOUT = "1s"


def write_config(tmp_path, regions: dict, **top) -> str:
    document = {
        "defaults": {"interval": "10s", "timeout": MIXED_TIMEOUT, "retries": 0},
        **top,
        "regions": {name: {"endpoints": endpoints} for name, endpoints in regions.items()},
    }
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def mixed_fleet(fleet, closed_port: int) -> dict:
    tls_pinned = {"ca_file": fleet.ca_file}
    return {
        "us-west": [
            {"name": "api", "url": f"{fleet.http}/ok", "conditions": ["[BODY].status == UP"]},
            {"name": "slow", "url": f"{fleet.http}/slow"},
            {"name": "tls-ok", "url": f"{fleet.https_valid}/ok", "tls": tls_pinned},
            {"name": "db", "kind": "tcp", "address": fleet.http.removeprefix("http://")},
        ],
        "eu-west": [
            {"name": "error", "url": f"{fleet.http}/fail"},
            {
                "name": "down-body",
                "url": f"{fleet.http}/down",
                "conditions": ["[BODY].status == UP"],
            },
            {"name": "hang", "url": f"{fleet.http}/hang"},
            {"name": "expired", "url": f"{fleet.https_expired}/ok", "tls": tls_pinned},
            {"name": "nxdomain", "url": "http://no-such-host.invalid/"},
        ],
        "ap": [
            {"name": "api", "url": f"http://127.0.0.1:{closed_port}/"},
            {"name": "db", "kind": "tcp", "address": f"127.0.0.1:{closed_port}"},
        ],
    }


EXPECTED = {
    ("us-west", "api"): ("healthy", None),
    ("us-west", "slow"): ("degraded", None),
    ("us-west", "tls-ok"): ("healthy", None),
    ("us-west", "db"): ("healthy", None),
    ("eu-west", "error"): ("unhealthy", "http_status"),
    ("eu-west", "down-body"): ("unhealthy", "condition_failed"),
    ("eu-west", "hang"): ("unhealthy", "timeout"),
    ("eu-west", "expired"): ("unhealthy", "tls"),
    ("eu-west", "nxdomain"): ("unhealthy", "dns"),
    ("ap", "api"): ("unhealthy", "connection_refused"),
    ("ap", "db"): ("unhealthy", "connection_refused"),
}


async def test_once_json_reports_every_case(run_cli, fleet, tmp_path, closed_port) -> None:
    config = write_config(tmp_path, mixed_fleet(fleet, closed_port))
    done = await run_cli("--once", "--config", config, "--format", "json")
    assert done.code == 2, done.stderr
    document = json.loads(done.stdout)
    by_name = {(r["region"], r["endpoint"]): r for r in document["results"]}
    # A timeout, or on a busy machine the prober fault a CLI starved through it makes of one.
    hang = by_name[("eu-west", "hang")]
    assert timeout_row_text(hang, 1.0).startswith("no answer within 1s"), hang
    seen = {key: (r["status"], r["error"]) for key, r in by_name.items()}
    seen[("eu-west", "hang")] = (hang["status"], "timeout")
    assert seen == EXPECTED
    for result in document["results"]:
        assert set(result) >= {
            "region",
            "endpoint",
            "kind",
            "status",
            "ok",
            "latency_ms",
            "http_status",
            "error",
            "conditions",
        }
        assert result["ok"] is (result["error"] is None)
    assert by_name[("eu-west", "error")]["http_status"] == 500
    assert by_name[("us-west", "api")]["conditions"] == [
        {
            "condition": "[BODY].status == UP",
            "passed": True,
            "detail": by_name[("us-west", "api")]["conditions"][0]["detail"],
        }
    ]
    assert by_name[("us-west", "tls-ok")]["cert_expiry"] is not None
    assert "expired" in by_name[("eu-west", "expired")]["error_detail"]
    regions = document["regions"]
    assert regions["us-west"]["status"] == "degraded" and not regions["us-west"]["regional_failure"]
    assert regions["eu-west"]["status"] == "unhealthy" and regions["eu-west"]["regional_failure"]
    assert regions["ap"] == {
        "status": "unhealthy",
        "regional_failure": True,
        "endpoints": 2,
        "healthy": 0,
        "degraded": 0,
        "unhealthy": 2,
    }


async def test_once_table_and_region_filter(run_cli, fleet, tmp_path, closed_port) -> None:
    config = write_config(tmp_path, mixed_fleet(fleet, closed_port))
    done = await run_cli("--once", "--config", config, "--region", "ap")
    assert done.code == 2
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["REGION", "ENDPOINT", "KIND", "STATUS", "LATENCY", "HTTP", "DETAIL"]
    rows = [line.split() for line in lines[1:] if line.startswith("ap ")]
    assert [(row[1], row[3]) for row in rows] == [("api", "unhealthy"), ("db", "unhealthy")]
    assert "region ap: unhealthy (0/2 healthy)  REGIONAL FAILURE" in done.stdout
    assert "us-west" not in done.stdout


async def test_exit_codes_healthy_and_degraded(run_cli, fleet, tmp_path) -> None:
    # Limits a busy machine cannot cross by accident: only /slow's own 200 ms may cross 100 ms.
    fast = {"warning": "900ms", "critical": "1s"}
    healthy = write_config(
        tmp_path, {"r": [{"name": "a", "url": f"{fleet.http}/ok", "latency": fast}]}
    )
    assert (await run_cli("--once", "--config", healthy)).code == 0
    slow_limits = {"warning": "100ms", "critical": "5s"}
    slow = write_config(
        tmp_path, {"r": [{"name": "a", "url": f"{fleet.http}/slow", "latency": slow_limits}]}
    )
    done = await run_cli("--once", "--config", slow)
    assert done.code == 1
    assert "latency" in done.stdout and "over warning 100ms" in done.stdout


async def test_bad_config_exits_3_names_the_key_and_probes_nothing(
    run_cli, fleet, tmp_path
) -> None:
    config = write_config(
        tmp_path,
        {
            "us-west": [
                {"name": "a", "url": f"{fleet.http}/ok"},
                {"name": "b", "url": f"{fleet.http}/ok", "timeout": "soon"},
            ]
        },
    )
    done = await run_cli("--once", "--config", config, "--format", "json")
    assert done.code == 3
    assert done.stdout == ""
    assert "regions.us-west.endpoints[1].timeout" in done.stderr
    assert config in done.stderr and "expected a duration" in done.stderr
    assert fleet.hits == []


async def test_unknown_region_and_missing_file_exit_3(run_cli, tmp_path) -> None:
    done = await run_cli("--once", "--config", str(tmp_path / "absent.yaml"))
    assert done.code == 3 and "cannot read the file" in done.stderr
    config = write_config(tmp_path, {"r": [{"name": "a", "url": "http://a.example/"}]})
    done = await run_cli("--once", "--config", config, "--region", "mars")
    assert done.code == 3 and "'mars'" in done.stderr


async def test_check_config(run_cli, tmp_path) -> None:
    config = write_config(
        tmp_path,
        {
            "r": [
                {"name": "a", "url": "http://a.example/"},
                {"name": "b", "kind": "tcp", "address": "b:1"},
            ]
        },
    )
    done = await run_cli("check-config", "--config", config)
    assert done.code == 0
    assert "valid: 1 regions, 2 endpoints (http 1, tcp 1)" in done.stdout
    done = await run_cli("check-config", "--config", config, "--format", "json")
    assert json.loads(done.stdout)["kinds"] == {"http": 1, "tcp": 1}
    bad = write_config(tmp_path, {"r": [{"name": "a", "url": "gopher://a/"}]})
    done = await run_cli("check-config", "--config", bad)
    assert done.code == 3 and "regions.r.endpoints[0].url" in done.stderr


async def test_check_config_takes_the_file_as_its_argument(run_cli, tmp_path) -> None:
    good = write_config(tmp_path, {"r": [{"name": "a", "url": "http://a.example/"}]})
    done = await run_cli("check-config", str(good))
    assert done.code == 0 and "valid: 1 regions, 1 endpoints" in done.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: {r: {endpoints: [{name: a, url: 'gopher://a/'}]}}\n")
    done = await run_cli("check-config", str(bad))
    assert done.code == 3 and "regions.r.endpoints[0].url" in done.stderr
    done = await run_cli("check-config", "--config", str(good), str(bad))
    assert done.code == 3 and "two configuration files" in done.stderr


async def test_secrets_never_reach_the_output(run_cli, fleet, tmp_path, closed_port) -> None:
    token = "tkn-0123456789abcdef"
    config = write_config(
        tmp_path,
        {
            "r": [
                {
                    "name": "auth",
                    "url": f"{fleet.http}/auth",
                    "headers": {"Authorization": "Bearer ${TOKEN}"},
                },
                {"name": "query", "url": f"http://127.0.0.1:{closed_port}/?key=${{TOKEN}}"},
                {"name": "nohost", "url": "http://${TOKEN}.invalid/"},
            ]
        },
    )
    for fmt in ("json", "table"):
        done = await run_cli("--once", "--config", config, "--format", fmt, env={"TOKEN": token})
        assert done.code == 2
        assert token not in done.stdout + done.stderr
    assert "***" in done.stdout  # the unresolvable host's name was scrubbed, not dropped


async def test_demo_once_shows_every_status(run_cli) -> None:
    done = await run_cli("demo", "--once", "--format", "json")
    assert done.code == 2, done.stderr
    document = json.loads(done.stdout)
    statuses = {r["status"] for r in document["results"]}
    assert statuses == {"healthy", "degraded", "unhealthy"}
    errors = {r["error"] for r in document["results"]}
    assert {"http_status", "connection_refused", "condition_failed"} <= errors
    assert document["regions"]["ap"]["regional_failure"] is True
    assert document["regions"]["us-west"]["status"] == "healthy"


async def test_demo_once_with_db_stores_the_round_in_that_file(run_cli, tmp_path) -> None:
    db = tmp_path / "new-folder" / "demo.db"
    done = await run_cli("demo", "--once", "--db", str(db), "--format", "json")
    assert done.code == 2, done.stderr  # the demo fleet has unhealthy endpoints on purpose
    checked = {(r["region"], r["endpoint"]) for r in json.loads(done.stdout)["results"]}
    with sqlite3.connect(db) as connection:
        stored = set(
            connection.execute(
                "SELECT region, endpoint FROM targets"
                " JOIN results ON results.target_id = targets.id"
            )
        )
    assert stored == checked and len(checked) == 11


DEMO_ENDPOINTS = {
    ("us-west", "api"),
    ("us-west", "db"),
    ("us-east", "api"),
    ("us-east", "web"),
    ("eu-west", "api"),
    ("eu-west", "web"),
    ("ap", "api"),
    ("ap", "db"),
    ("edge", "api"),
    ("global", "api"),
    ("global", "resolver"),
}


async def test_every_demo_table_lists_every_region_and_endpoint(run_cli) -> None:
    # Edge's only endpoint is due last in the first 3 s interval (its spread offset is 2.8 s):
    # the tables printed before then show it, and others, as not checked yet.
    done = await run_cli("demo", "--refresh", "0.2", "--duration", "4", "--log-level", "ERROR")
    assert done.code == 0, done.stderr
    tables = [t for t in done.stdout.split("REGION ")[1:] if "overall:" in t]
    assert len(tables) >= 3, done.stdout
    unknown_rows = set()
    for table in tables:
        lines = table.splitlines()[1:]
        rows = [line.split() for line in lines[: lines.index("")]]
        assert {(row[0], row[1]) for row in rows} == DEMO_ENDPOINTS, table
        unknown_rows |= {(row[0], row[1]) for row in rows if row[3] == "unknown"}
        regions = [line.split(":")[0] for line in lines if line.startswith("region ")]
        assert regions == [
            f"region {r}" for r in ("us-west", "us-east", "eu-west", "ap", "edge", "global")
        ]
    assert ("edge", "api") in unknown_rows
    edge = next(line for line in tables[0].splitlines() if line.startswith("edge "))
    assert edge.split() == ["edge", "api", "http", "unknown", "-", "-", "not", "checked", "yet"]
    assert "region edge: unknown (not checked yet)" in tables[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--record"], "--record goes with --once"),
        (["silence", "add", "--for", "0s", "--reason", "x"], "must last longer than 0s"),
        (
            ["silence", "add", "--for", "1h", "--rule", "endpoint_dwn", "--reason", "x"],
            "--rule 'endpoint_dwn' is not a rule",
        ),
    ],
)
async def test_usage_mistakes_exit_3_and_say_what_is_wrong(
    run_cli, tmp_path, args, message
) -> None:
    config = write_config(tmp_path, {"r": [{"name": "a", "url": "http://a.example/"}]})
    done = await run_cli(*args, "--config", config)
    assert done.code == 3, done.stderr
    assert message in done.stderr


async def test_an_unknown_rule_lists_each_rule_once(run_cli, tmp_path) -> None:
    config = write_config(tmp_path, {"r": [{"name": "a", "url": "http://a.example/"}]})
    args = ["routes", "test", "--region", "r", "--severity", "critical", "--rule", "nope"]
    done = await run_cli(*args, "--config", config)
    assert done.code == 3, done.stderr
    listed = done.stderr.split("rules are ", 1)[1].strip().splitlines()[0].split(", ")
    assert {"endpoint_down", "regional_failure", "canary"} <= set(listed)
    assert len(listed) == len(set(listed)), listed


async def test_once_json_never_shows_a_secret_used_in_conditions(run_cli, fleet, tmp_path) -> None:
    token = "s3cr3t-tok-98765"
    config = write_config(
        tmp_path,
        {
            "r": [
                {
                    "name": "a",
                    "url": f"{fleet.http}/ok",
                    "headers": {"Authorization": "Bearer ${TOKEN}"},
                    "conditions": ["[BODY].status == ${TOKEN}"],
                }
            ]
        },
    )
    done = await run_cli(
        "--once", "--config", config, "--format", "json", env={**os.environ, "TOKEN": token}
    )
    assert done.code == 2  # the condition fails: the body says UP
    assert token not in done.stdout + done.stderr
    result = json.loads(done.stdout)["results"][0]
    assert result["conditions"][0]["condition"] == "[BODY].status == ***"


MANY = 1000


async def test_once_over_many_fast_endpoints_is_all_healthy(run_cli, fleet, tmp_path) -> None:
    """1,000 endpoints of a server that answers at once, default settings (warning 100 ms):
    every verdict healthy. Fired 500 at a time, --once measured its own queue (p50 274 ms)
    and called every one degraded; a busy or shared core must not make it do so either."""
    endpoints = [{"name": f"e{i}", "url": f"{fleet.http}/ok?e={i}"} for i in range(MANY)]
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump({"regions": {"many": {"endpoints": endpoints}}}))
    done = await run_cli("--once", "--config", str(path), "--format", "json", timeout=300)
    document = json.loads(done.stdout)
    statuses = {r["endpoint"]: (r["status"], r["error_detail"]) for r in document["results"]}
    not_healthy = {name: seen for name, seen in statuses.items() if seen[0] != "healthy"}
    assert not not_healthy, not_healthy
    assert len(statuses) == MANY and done.code == 0, done.stderr
    assert document["regions"]["many"]["healthy"] == MANY


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_once_runs_on_either_event_loop(run_cli, fleet, tmp_path, loop) -> None:
    config = write_config(
        tmp_path,
        {"r": [{"name": "a", "url": f"{fleet.http}/ok", "conditions": ["[BODY].status == UP"]}]},
    )
    done = await run_cli(
        "--once", "--config", config, "--format", "json", env={"HEALTHCHECK_EVENT_LOOP": loop}
    )
    assert done.code == 0, done.stderr
    assert "/ok" in fleet.hits


async def test_an_unknown_event_loop_exits_3_and_probes_nothing(run_cli, fleet, tmp_path) -> None:
    config = write_config(tmp_path, {"r": [{"name": "a", "url": f"{fleet.http}/ok"}]})
    done = await run_cli("--once", "--config", config, env={"HEALTHCHECK_EVENT_LOOP": "trio"})
    assert done.code == 3
    assert "HEALTHCHECK_EVENT_LOOP='trio'" in done.stderr and "asyncio, uvloop, auto" in done.stderr
    assert "never awaited" not in done.stderr and "Warning" not in done.stderr, done.stderr
    assert fleet.hits == []
    # check-config, run "with the same environment the service gets", says so too
    checked = await run_cli("check-config", config, env={"HEALTHCHECK_EVENT_LOOP": "trio"})
    assert checked.code == 3 and "HEALTHCHECK_EVENT_LOOP='trio'" in checked.stderr
