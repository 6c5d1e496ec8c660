"""External programs some tests drive (promtool, Prometheus, Alertmanager, Chromium)."""

from __future__ import annotations

import os
import shutil

import pytest


def require(*names: str, package: str) -> str:
    """The first of `names` on PATH. Missing: the test fails under CI=true (.ci/run installs
    the Debian `package`, listed in .ci/packages.txt) and is skipped, with the reason, elsewhere."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    reason = f"{names[0]} is not installed (Debian package {package})"
    if os.environ.get("CI", "").lower() in {"true", "1", "yes"}:
        pytest.fail(f"{reason}; CI installs it through .ci/packages.txt", pytrace=False)
    pytest.skip(reason)
