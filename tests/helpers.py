"""Small helpers shared by test modules: waiting on a condition, asking if a process lives."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

# Generous: the conditions waited on here depend on the kernel or on pid 1 reaping an
# orphan, and a loaded CI machine can be slow; a passing test never waits this long.
WAIT_TIMEOUT_S = 10.0
# Pause between two checks of the condition.
POLL_INTERVAL_S = 0.02


def wait_until(condition: Callable[[], bool], timeout_s: float = WAIT_TIMEOUT_S) -> None:
    """Poll `condition` until it holds; fail the test if it still does not after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{condition.__name__} still false after {timeout_s:g} s")
        time.sleep(POLL_INTERVAL_S)


def process_alive(pid: int) -> bool:
    """True while `pid` is a live process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[0] != "Z"
