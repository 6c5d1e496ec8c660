"""`--shard K/N`: N daemons (or --once runs) split one configuration between them."""

from __future__ import annotations

import json

import pytest

from healthcheck.config import parse_config
from healthcheck.targets import Shard


def write_config(tmp_path, regions: dict) -> str:
    document = {
        # Latency limits a busy machine cannot cross on loopback: sharding is under test.
        "defaults": {
            "interval": "10s",
            "timeout": "1s",
            "retries": 0,
            "latency": {"warning": "900ms", "critical": "1s"},
        },
        "regions": {name: {"endpoints": endpoints} for name, endpoints in regions.items()},
    }
    path = tmp_path / "regions.yaml"
    path.write_text(json.dumps(document))
    return str(path)


def fleet_of(base: str, regions: int = 3, per_region: int = 12) -> dict:
    return {
        f"r{r}": [{"name": f"e{i}", "url": f"{base}/ok"} for i in range(per_region)]
        for r in range(regions)
    }


async def test_shards_split_once_between_them(run_cli, fleet, tmp_path) -> None:
    """Every endpoint is checked by exactly one of the N runs, and the split is stable."""
    config = write_config(tmp_path, fleet_of(fleet.http))
    seen: list[tuple[str, str]] = []
    for k in (1, 2, 3):
        done = await run_cli("--once", "--config", config, "--format", "json", "--shard", f"{k}/3")
        assert done.code == 0, done.stderr
        mine = [(r["region"], r["endpoint"]) for r in json.loads(done.stdout)["results"]]
        assert mine, f"shard {k}/3 got nothing out of 36 endpoints"
        again = await run_cli("--once", "--config", config, "--format", "json", "--shard", f"{k}/3")
        assert [(r["region"], r["endpoint"]) for r in json.loads(again.stdout)["results"]] == mine
        seen += mine
    assert sorted(seen) == sorted((f"r{r}", f"e{i}") for r in range(3) for i in range(12))


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "2/1"])
async def test_bad_shard_is_a_usage_error(run_cli, tmp_path, text) -> None:
    config = write_config(tmp_path, {"r": [{"name": "x", "url": "http://127.0.0.1:1/"}]})
    done = await run_cli("--once", "--config", config, "--shard", text)
    assert done.code == 3
    assert "--shard takes K/N" in done.stderr and repr(text) in done.stderr


def test_each_shard_gets_its_own_database_and_port(tmp_path) -> None:
    document = {
        "storage": {"path": str(tmp_path / "hc.db")},
        "exporter": {"listen": "127.0.0.1:9200"},
        "regions": {"r": {"endpoints": [{"name": f"e{i}", "url": "http://x/"} for i in range(40)]}},
    }
    config = parse_config(json.dumps(document), "test")
    shards = [config.only_shard(Shard(k, 4)) for k in (1, 2, 3, 4)]
    assert [s.storage.path for s in shards] == [
        str(tmp_path / f"hc.shard-{k}-of-4.db") for k in (1, 2, 3, 4)
    ]
    assert [s.exporter.port for s in shards] == [9200, 9201, 9202, 9203]
    assert sum(len(list(s.endpoints())) for s in shards) == 40
    whole = config.only_shard(Shard(1, 1))
    assert whole.storage.path == config.storage.path and len(list(whole.endpoints())) == 40
