"""What the daemon's own process uses (RSS, open fds, CPU), read from /proc."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    rss_bytes: int
    open_fds: int | None
    cpu_seconds: float


def usage() -> ProcessUsage:
    """This process now; open fds only where /proc is mounted."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            rss = int(statm.read().split()[1]) * _PAGE
    except OSError:  # no /proc: the peak, which is what getrusage offers
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        fds: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = None
    times = os.times()
    return ProcessUsage(rss, fds, times.user + times.system)
