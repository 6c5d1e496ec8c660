"""wait_exit: a child's exit status once it ends, None while it runs, no sleeping in between."""

from __future__ import annotations

import subprocess
import sys

from healthcheck.children import wait_exit


def _child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)


def test_an_ended_child_is_reaped_with_its_status() -> None:
    process = _child("import sys; sys.exit(3)")
    assert wait_exit(process, 60) == 3
    assert process.returncode == 3


def test_a_running_child_is_none_after_the_timeout_and_left_running() -> None:
    process = _child("import sys; sys.stdin.read()")  # runs until its stdin closes
    try:
        assert wait_exit(process, 0.05) is None
        assert process.poll() is None
    finally:
        assert process.stdin is not None
        process.stdin.close()
    assert wait_exit(process, 60) == 0


def test_an_already_reaped_child_gives_its_status_again() -> None:
    process = _child("pass")
    process.wait()
    assert wait_exit(process, 0) == 0
