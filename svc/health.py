"""Whether this replica's dependencies answer: while Redis or NATS does not, intake pauses
and the health service reports NOT_SERVING; both come back by themselves once it answers
again (DESIGN "Delivery guarantees": "the consumer stops fetching, retries with backoff").

The monitor only observes. Nothing is acked while a dependency is down because intake acks a
batch only after its effects are durable; the monitor spares the failing fetch-handle-nak
round trips and tells load balancers and orchestrators.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

logger = logging.getLogger(__name__)

Check = Callable[[], Awaitable[object]]


class DependencyMonitor:
    """Runs each named check every `interval_s` (each bounded by `timeout_s`).

    `available` is set while every check passes. `failing` names the failing dependencies
    with their last error. `on_change(available)` is awaited on each transition.
    """

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        interval_s: float,
        timeout_s: float,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
    ):
        self.checks = dict(checks)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.on_change = on_change
        self.available = asyncio.Event()
        self.failing: dict[str, str] = {}
        self._checked = False

    async def check(self) -> bool:
        """Run every check once; update `available` and report a transition."""
        names = list(self.checks)
        errors = await asyncio.gather(*(self._one(self.checks[n]) for n in names))
        failing = {n: e for n, e in zip(names, errors, strict=True) if e is not None}
        for name in failing.keys() - self.failing.keys():
            logger.warning("%s is unreachable (%s): intake paused, health NOT_SERVING",
                           name, failing[name])
        for name in self.failing.keys() - failing.keys():
            logger.info("%s answers again", name)
        was_available, first = self.available.is_set(), not self._checked
        self.failing, self._checked = failing, True
        if failing:
            self.available.clear()
        else:
            self.available.set()
        if (first or was_available != (not failing)) and self.on_change is not None:
            await self.on_change(not failing)
        return not failing

    async def _one(self, check: Check) -> str | None:
        try:
            await asyncio.wait_for(check(), timeout=self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of a check means "not available"
            return repr(exc) if not isinstance(exc, TimeoutError) else "no answer in time"
        return None

    async def run(self, stopping: asyncio.Event) -> None:
        """Check every interval until `stopping` is set."""
        while not stopping.is_set():
            await self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self.interval_s)
