"""Fuzzing: the config loader only ever raises ConfigError, the API never answers 500."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta

import pytest
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthcheck.config import parse_config
from healthcheck.daemon import Daemon, open_writer
from healthcheck.errors import ConfigError
from healthcheck.front import HttpFront

# Keys the loader knows, so generated documents get past the first "unknown key" most of the time.
KEYS = [
    "defaults", "regions", "endpoints", "name", "url", "kind", "interval", "timeout", "retries",
    "latency", "warning", "critical", "headers", "conditions", "method", "tls", "verify",
    "ca_file", "address", "hostname", "storage", "path", "exporter", "listen", "alerting",
    "channels", "routes", "rules", "silences", "scheduler", "max_concurrency", "jitter", "sla",
    "target", "alerts", "enabled", "model", "golden", "require_gpu", "tolerance", "atol",
    "inputs", "expected", "model_name", "shape", "data", "datatype", "expected_status",
    "max_body", "follow_redirects", "retention", "raw", "vantage", "failure_threshold",
    "raw_rows", "rollups", "max_queue", "tick", "rate_limit", "auth", "protect_metrics",
    "labels", "metric_labels", "public_url", "match", "continue", "team", "severity",
]  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=30)
    | st.sampled_from(["30s", "0s", "-1s", "1e309", "http://127.0.0.1:1/", "${X}", "$$", "onnx"])
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)

SLOW = timedelta(seconds=2)


def only_config_errors(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml", {"X": "secret-value-123"})
    except ConfigError as exc:
        assert "secret-value-123" not in str(exc)


# A generous deadline, not none: a pathological input must not take seconds to refuse
# (a true hang is cut by pytest-timeout).
@settings(max_examples=300, deadline=SLOW, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS)
def test_any_document_is_a_config_or_a_config_error(document) -> None:
    only_config_errors(yaml.safe_dump(document))


@settings(max_examples=300, deadline=SLOW)
@given(text=st.text(max_size=300))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    only_config_errors(text)


@st.composite
def aliased_documents(draw) -> str:
    """Anchors and aliases nested at random, up to 12 levels of 12: from harmless to alias
    bombs of 12**12 values, placed where the loader reads endpoints, defaults or nowhere."""
    levels, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    leaf = draw(st.sampled_from(["x", "{name: a, url: 'http://a/'}", "{interval: 1s}", "[]"]))
    lines = [f"a0: &a0 {leaf}"]
    for level in range(1, levels):
        aliases = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} " + draw(st.sampled_from(["[{}]", "{{k: [{}]}}"])))
        lines[-1] = lines[-1].format(aliases)
    top = f"*a{levels - 1}"
    lines.append(
        draw(
            st.sampled_from(
                [
                    f"regions: {{r: {{endpoints: {top}}}}}",
                    f"regions: {{r: {{defaults: {top}, endpoints: [{{name: a, url: 'http://a/'}}]}}}}",
                    f"defaults: {{headers: {{x: {top}}}}}",
                    f"storage: {top}",
                ]
            )
        )
    )
    return "\n".join(f"x{line}" if line.startswith("a") else line for line in lines)


@settings(max_examples=100, deadline=SLOW)
@given(text=aliased_documents())
def test_aliases_nested_at_random_are_a_config_or_a_config_error(text: str) -> None:
    only_config_errors(text)


@pytest.fixture(scope="module")
def api_base(tmp_path_factory):
    """A real daemon on its own loop in a thread, with a loopback target, for sync fuzzing."""
    tmp = tmp_path_factory.mktemp("fuzz")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    found: dict[str, str] = {}

    async def main() -> None:
        app = web.Application()

        async def ok(_request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app.router.add_get("/", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        target = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        text = yaml.safe_dump(
            {
                "defaults": {"interval": "200ms", "timeout": "150ms", "retries": 0},
                "storage": {"path": str(tmp / "hc.db")},
                "exporter": {"listen": "127.0.0.1:0"},
                "regions": {"us": {"endpoints": [{"name": "api", "url": target}]}},
            }
        )
        config = parse_config(text, str(tmp / "regions.yaml"), {})
        daemon = Daemon(config, open_writer(config.storage), front=HttpFront)
        task = asyncio.create_task(daemon.run(stop))
        deadline = asyncio.get_running_loop().time() + 20
        while daemon.listening is None or daemon.storage.stats.written < 3:  # some results
            assert asyncio.get_running_loop().time() < deadline, "daemon did not get going"
            await asyncio.sleep(0.02)
        host, port = daemon.listening
        found["base"] = f"http://{host}:{port}"
        ready.set()
        await task
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield found["base"]
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


PATHS = ["/api/v1/status", "/api/v1/sla/status", "/api/v1/alerts", "/api/v1/results"]
PARAMS = ["region", "endpoint", "window", "state", "severity", "limit", "cursor", "since", "x"]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(PATHS),
    query=st.lists(
        st.tuples(st.sampled_from(PARAMS), st.text(max_size=40) | st.integers().map(str)),
        max_size=4,
    ),
)
def test_api_query_parameters_never_give_a_500(api_base: str, path: str, query) -> None:
    url = f"{api_base}{path}?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status, kind = response.status, response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        status, kind = exc.code, exc.headers.get_content_type()
    assert status in (200, 400), (url, status)
    assert kind == "application/json"
