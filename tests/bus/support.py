"""Shared by the bus tests: waiting for the server by polling to a deadline, and a valid
automation document."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.helpers import POLL_INTERVAL_S, WAIT_TIMEOUT_S


async def eventually(
    condition: Callable[[], Awaitable[bool] | bool], timeout_s: float = WAIT_TIMEOUT_S
) -> None:
    """Poll `condition` (sync or async) until it holds; fail the test at the deadline.

    The loop yields to the event loop between checks, so the code under test keeps running.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"{getattr(condition, '__name__', condition)} still false after {timeout_s:g} s"
            )
        await asyncio.sleep(POLL_INTERVAL_S)


def automation_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": "tell me",
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": ["prefect.flow-run.Failed"],
            "threshold": 1,
        },
        "actions": [{"type": "send-notification"}],
    }
    return {**document, **overrides}
