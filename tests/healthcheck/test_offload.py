"""The helper process that takes uptime reads and /metrics renders off the daemon's GIL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from healthcheck.offload import Offload, OffloadError

# The helper unpickles functions by module name: only importable ones travel (the daemon's
# are module-level functions of the package), so these tests use the standard library's.


@pytest.fixture
def helper():
    offload = Offload("test helper")
    yield offload
    offload.close()


def test_calls_run_in_one_other_process(helper: Offload) -> None:
    first = helper.call(os.getpid)
    assert helper.call(divmod, 7, 2) == (3, 1)
    assert helper.call(os.getpid) == first != os.getpid() and helper.pid == first


def test_an_exception_is_an_offload_error_and_the_process_lives_on(helper: Offload) -> None:
    before = helper.call(os.getpid)
    with pytest.raises(OffloadError, match="ValueError: invalid literal for int"):
        helper.call(int, "not a number")
    assert helper.call(os.getpid) == before


def test_a_killed_process_fails_one_call_then_is_replaced(helper: Offload) -> None:
    before = helper.call(os.getpid)
    os.kill(before, signal.SIGKILL)
    with pytest.raises(OffloadError, match="test helper process died"):
        helper.call(os.getpid)
    assert helper.call(os.getpid) not in (before, None)


def test_close_ends_the_process(helper: Offload) -> None:
    pid = helper.call(os.getpid)
    helper.close()
    assert helper.pid is None
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # reaped by close; give the kernel a moment
            os.kill(pid, 0)
            time.sleep(0.02)


def test_close_during_a_call_ends_it_at_once(helper: Offload) -> None:
    import threading

    failed: list[BaseException] = []

    def call() -> None:
        try:
            helper.call(time.sleep, 30)
        except OffloadError as exc:
            failed.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    while helper.pid is None:
        time.sleep(0.01)
    time.sleep(0.2)
    began = time.monotonic()
    helper.close()
    thread.join(10)
    assert not thread.is_alive() and failed and time.monotonic() - began < 5


_CHILDREN = """
import os, sys
from pathlib import Path
from healthcheck.offload import Offload

helper = Offload("test helper")
helper_pid = helper.call(os.getpid)
children = []
for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
        if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
            children.append(int(stat.parent.name))
    except (OSError, ValueError, IndexError):
        pass
print(helper_pid, *sorted(children))
helper.close()
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_the_helper_is_the_only_process_it_starts() -> None:
    """No multiprocessing resource tracker beside it (an interpreter of its own, ~13 MB of
    RSS): a fresh process, so no other test's processes are counted."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILDREN], capture_output=True, text=True, timeout=60, check=True
    )
    helper_pid, *children = (int(word) for word in done.stdout.split())
    assert children == [helper_pid]
