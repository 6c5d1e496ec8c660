"""Screenshots of the status page for the README: the demo fleet's overview and detail views.

    .venv/bin/python deploy/screenshots.py [--out docs/screenshots] [--chromium PATH]

It writes 30 days of simulated history for the demo fleet's endpoints into a scratch database
(through the storage layer, as the daemon would: raw rows and hourly/daily rollups), runs
`healthcheck demo --db` on it so the live checks carry on from there, waits until every
endpoint has been checked, and has headless Chromium take PNGs of the overview, an endpoint
(eu-west/api: failing now, with an outage three days ago), a region (ap: a regional failure)
and the endpoint on a 390 px wide phone in dark mode. Nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from healthcheck.config import parse_config
from healthcheck.demo import demo_config_text
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.status import classify
from healthcheck.targets import Endpoint
from storage.schema import connect
from storage.writer import write_batch

DAY, HOUR = 86400, 3600
STEP = 600  # one simulated check every 10 minutes
DAYS = 30
SHOTS = (
    # file, path, width, height, dark
    ("overview.png", "/", 1280, 1900, False),
    ("endpoint.png", "/endpoints/eu-west/api", 1280, 2100, False),
    ("region.png", "/regions/ap", 1280, 1500, False),
    ("endpoint-phone-dark.png", "/endpoints/eu-west/api", 390, 2300, True),
)
BASE_MS = {"http": 38.0, "tcp": 1.8, "dns": 0.9}


def _down(endpoint: Endpoint, ts: float, now: float) -> ErrorClass | None:
    """The outages of the simulated past: eu-west/api fails now and did for 40 minutes three
    days ago; all of ap was down for an hour six days ago and is down now."""
    failing_api = ts > now - 2 * HOUR or now - 3 * DAY <= ts < now - 3 * DAY + 2400
    if (endpoint.region, endpoint.name) == ("eu-west", "api") and failing_api:
        return ErrorClass.HTTP_STATUS
    ap_down = ts > now - HOUR or now - 6 * DAY <= ts < now - 6 * DAY + HOUR
    if endpoint.region == "ap" and ap_down:
        return ErrorClass.CONNECTION_REFUSED
    if endpoint.region == "edge":
        return ErrorClass.CONDITION_FAILED
    return None


def seed(path: str, now: float) -> int:
    """DAYS of checks for every demo endpoint, up to `now`; how many were written."""
    config = parse_config(demo_config_text(1, 2), "<demo fleet>")
    noise = random.Random(7)  # the same pictures on every run
    batch = []
    for endpoint in config.endpoints():
        base = BASE_MS.get(endpoint.kind, 10.0) * (9.5 if endpoint.region == "us-east" else 1)
        ts = now - DAYS * DAY
        while ts < now - 60:
            error = _down(endpoint, ts, now)
            daily = 1 + 0.35 * math.sin(2 * math.pi * (ts % DAY) / DAY)
            latency_ms = base * daily * noise.lognormvariate(0, 0.25)
            if error is ErrorClass.HTTP_STATUS:
                latency_ms = base * 0.6
            result = ProbeResult(
                endpoint.region,
                endpoint.name,
                endpoint.kind,
                error is None,
                latency_ms / 1000,
                ts,
                error=error,
                error_text=None if error is None else f"{error.value} (simulated)",
                http_status=500 if error is ErrorClass.HTTP_STATUS else None,
            )
            batch.append((result, classify(result, endpoint)))
            ts += STEP
    db = connect(path)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        write_batch(db, batch, {})
    db.conn.close()
    return len(batch)


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback only
        answer: dict[str, object] = json.load(response)
        return answer


def wait_for_checks(base: str, deadline: float) -> None:
    """Until every endpoint of the demo has a status from a live check."""
    while time.monotonic() < deadline:
        try:
            status = _get(base + "api/v1/status")
        except OSError:
            time.sleep(0.5)
            continue
        regions = status.get("regions")
        assert isinstance(regions, list)
        rows = [e for region in regions for e in region["endpoints"]]
        if rows and all(row["status"] != "unknown" for row in rows):
            return
        time.sleep(0.5)
    sys.exit("the demo did not check every endpoint in time")


def screenshot(chromium: str, url: str, png: Path, size: tuple[int, int], dark: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="hc-shot-") as profile:
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            "--virtual-time-budget=8000",
            f"--screenshot={png}",
        ]
        if dark:
            flags.append("--blink-settings=preferredColorScheme=0")  # 0: dark
        command = [chromium, *flags, url]  # our own binary and loopback URL
        subprocess.run(command, check=True, capture_output=True, timeout=120)  # noqa: S603


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/screenshots", help="folder for the PNGs")
    parser.add_argument("--chromium", default=None, help="Chromium binary (default: on PATH)")
    args = parser.parse_args()
    chromium = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium on PATH (apt-get install chromium), or pass --chromium")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hc-screenshots-") as scratch:
        db = os.path.join(scratch, "demo.db")
        written = seed(db, time.time())
        print(f"seeded {written} simulated checks into {db}", flush=True)
        demo = subprocess.Popen(  # noqa: S603 - this Python, our own arguments
            [sys.executable, "-m", "healthcheck", "demo", "--db", db, "--refresh", "3600"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert demo.stderr is not None
            base = None
            for line in demo.stderr:
                found = re.search(r"on (http://[0-9.]+:\d+/)", line)
                if found:
                    base = found.group(1)
                    break
            if base is None:
                sys.exit(f"the demo exited ({demo.wait()}) before it served its page")
            threading.Thread(target=demo.stderr.read, daemon=True).start()  # keep it unblocked
            wait_for_checks(base, time.monotonic() + 60)
            for name, path, width, height, dark in SHOTS:
                screenshot(chromium, base + path.lstrip("/"), out / name, (width, height), dark)
                print(f"{out / name}: {base}{path.lstrip('/')} at {width}x{height}", flush=True)
        finally:
            os.killpg(demo.pid, signal.SIGTERM)
            demo.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
