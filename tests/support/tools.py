"""External programs and libraries some tests drive (promtool, Prometheus, Alertmanager,
Chromium, libfaketime)."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest


def require(*names: str, package: str) -> str:
    """The first of `names` on PATH. Missing: the test fails under CI=true (.ci/run installs
    the Debian `package`, listed in .ci/packages.txt) and is skipped, with the reason, elsewhere."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    _missing(f"{names[0]} is not installed (Debian package {package})")


def require_file(*patterns: str, package: str) -> str:
    """The first file matching one of the glob `patterns` (a library to preload, say);
    missing, as for `require`: failed under CI=true, skipped with the reason elsewhere."""
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    _missing(f"{Path(patterns[0]).name} is not installed (Debian package {package})")


def _missing(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() in {"true", "1", "yes"}:
        pytest.fail(f"{reason}; CI installs it through .ci/packages.txt", pytrace=False)
    pytest.skip(reason)
