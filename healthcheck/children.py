"""Waiting for a child process of ours to end, with a timeout, without sleeping.

`subprocess.Popen.wait(timeout)` polls `waitpid` between `time.sleep`s. Under libfaketime
0.9.10 (its upstream issue #426) that sleep fails with EINVAL, so a daemon run under a faked
wall clock could not stop its helper and exited 1 on SIGTERM. Linux tells a waiter when a
process ends through a pidfd that turns readable: one `poll` with the timeout, no sleep, and
no wake-ups in between (multiprocessing's join waits the same way, on a sentinel pipe).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess


def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The process's exit status once it has ended (reaped), or None if it is still running
    after `timeout` seconds."""
    if process.poll() is not None:
        return process.returncode
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfd here (old kernel), or already reaped
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(timeout)
        return None
    try:
        waiter = select.poll()
        waiter.register(pidfd, select.POLLIN)
        if not waiter.poll(max(0, round(timeout * 1000))):
            return None
    finally:
        os.close(pidfd)
    return process.wait()
