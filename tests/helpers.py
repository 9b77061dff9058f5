"""Small helpers shared by test modules: waiting on a condition (`wait_until` for plain
tests, `eventually` for tests on the event loop), asking if a process lives, and the
timeout for JetStream API calls."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

# Generous: what is waited on (a firing, a KV watch change, a consumer's acks, pid 1 reaping
# an orphan) takes milliseconds to a second; the margin is for a loaded 2-core CI machine,
# and a passing test never waits this long.
WAIT_TIMEOUT_S = 20.0
# Pause between two checks of the condition.
POLL_INTERVAL_S = 0.02
# For nats.py's JetStream API calls, whose default is 5 s: creating and deleting file-backed
# streams on a loaded machine can take longer, and a passing test never waits this long.
JS_API_TIMEOUT_S = 30.0


def _awaited(condition: Callable[..., object], what: str | None) -> str:
    return what or getattr(condition, "__name__", repr(condition))


def wait_until(
    condition: Callable[[], T], what: str | None = None, *, timeout_s: float = WAIT_TIMEOUT_S
) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail the test,
    saying `what` was awaited (else the condition's name), if it still does not after
    timeout_s. It sleeps the thread: on the event loop, use `eventually`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {timeout_s:g} s for {_awaited(condition, what)}")
        time.sleep(POLL_INTERVAL_S)


async def eventually(
    condition: Callable[[], Awaitable[T] | T],
    what: str | None = None,
    *,
    timeout_s: float = WAIT_TIMEOUT_S,
) -> T:
    """`wait_until` for tests on the event loop: `condition` may be sync or async, and the
    loop runs the code under test between checks."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {timeout_s:g} s for {_awaited(condition, what)}")
        await asyncio.sleep(POLL_INTERVAL_S)


def process_alive(pid: int) -> bool:
    """True while `pid` is a live process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[0] != "Z"
