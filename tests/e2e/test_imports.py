"""The real CLI loads the heavy libraries only for a configuration that uses them."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import yaml

HEAVY = ("numpy", "onnxruntime", "apprise", "sqlite_utils", "grpc")

# Runs `healthcheck ARGS` as `python -m healthcheck` does, then writes the heavy top-level
# modules it ended up with to the file named by argv[1].
WRAPPER = f"""
import json, runpy, sys
out, sys.argv = sys.argv[1], ["healthcheck", *sys.argv[2:]]
try:
    runpy.run_module("healthcheck", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
with open(out, "w") as f:
    json.dump({{"code": code, "heavy": heavy}}, f)
"""


async def loaded(tmp_path, *args: str) -> dict:
    """Run the CLI with ARGS; its exit code and the heavy modules it imported."""
    out = tmp_path / "loaded.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRAPPER,
        str(out),
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return json.loads(out.read_text())


def write_config(tmp_path, endpoints: list[dict], **top) -> str:
    document = {
        # Limits a busy machine cannot cross on loopback: imports are under test, not latency.
        "defaults": {
            "interval": "10s",
            "timeout": "2s",
            "retries": 0,
            "latency": {"warning": "1s", "critical": "2s"},
        },
        **top,
        "regions": {"r": {"endpoints": endpoints}},
    }
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


async def test_check_config_and_once_on_an_http_config_load_none(fleet, tmp_path) -> None:
    config = write_config(
        tmp_path,
        [
            {"name": "api", "url": f"{fleet.http}/ok"},
            {"name": "db", "kind": "tcp", "address": fleet.http.removeprefix("http://")},
        ],
    )
    assert await loaded(tmp_path, "check-config", "--config", config) == {"code": 0, "heavy": []}
    assert await loaded(tmp_path, "--once", "--config", config) == {"code": 0, "heavy": []}


async def test_a_bad_config_is_refused_without_them(tmp_path) -> None:
    config = write_config(tmp_path, [{"name": "api", "url": "gopher://a/"}])
    assert await loaded(tmp_path, "check-config", "--config", config) == {"code": 3, "heavy": []}


async def test_alerting_channels_load_apprise_only(tmp_path) -> None:
    config = write_config(
        tmp_path,
        [{"name": "api", "url": "http://a.example/"}],
        alerting={"channels": {"team": {"url": "json://127.0.0.1:9/hook"}}},
    )
    done = await loaded(tmp_path, "check-config", "--config", config)
    assert done == {"code": 0, "heavy": ["apprise"]}


async def test_an_inference_config_loads_numpy_but_not_the_runtime(tmp_path) -> None:
    endpoint = {
        "name": "triton",
        "kind": "inference",
        "url": "http://127.0.0.1:9",
        "model_name": "canary",
        "inputs": [{"name": "x", "datatype": "INT8", "shape": [2], "data": [1, 2]}],
        "expected": [{"name": "y", "shape": [2], "data": [1.0, 2.0]}],
    }
    config = write_config(tmp_path, [endpoint])
    done = await loaded(tmp_path, "check-config", "--config", config)
    assert done["code"] == 0 and "onnxruntime" not in done["heavy"]


async def test_grpc_is_loaded_by_a_grpc_check_alone(tmp_path, closed_port) -> None:
    config = write_config(
        tmp_path, [{"name": "rpc", "kind": "grpc", "address": f"127.0.0.1:{closed_port}"}]
    )
    assert await loaded(tmp_path, "check-config", "--config", config) == {"code": 0, "heavy": []}
    assert await loaded(tmp_path, "--once", "--config", config) == {"code": 2, "heavy": ["grpc"]}
