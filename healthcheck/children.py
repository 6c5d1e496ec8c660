"""Child interpreters of ours: started on a socketpair, and waited for without sleeping.

`start_child` runs a fresh interpreter (fork+exec: thread-safe where the parent has threads)
on `boot`, a line of Python that gets the child's end of a socketpair as its first argument
and this source tree's root as its second; the parent talks to it with multiprocessing's
Connection (pickles, length-framed), as multiprocessing's spawn did over its Pipe, without the
resource tracker every spawn also started (an interpreter of its own, ~13 MB of RSS). Only the
child holds its end: the parent gone, it reads EOF and ends.

`wait_exit` waits for a child to end.

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
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

# The root the packages are imported from: appended to the child's sys.path, so whatever the
# parent was started with (a venv, a source tree) finds the same code and nothing is shadowed.
ROOT = str(Path(__file__).resolve().parent.parent)


def start_child(boot: str) -> tuple[subprocess.Popen[bytes], Connection]:
    """A fresh interpreter running `boot` (argv[1]: its socket's fd, argv[2]: ROOT), and the
    Connection to it."""
    ours, theirs = socket.socketpair()  # what multiprocessing's Pipe(duplex=True) is
    try:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our fixed code
            [sys.executable, "-c", boot, str(theirs.fileno()), ROOT],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()  # only the child holds this end
    return process, Connection(ours.detach())


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
