"""The expected triggered actions of a workload: the same engine, in-process, on a fake clock
that follows the events' publication times, without a crash, a second replica or a bus."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from redis.asyncio import Redis

from svc.conformance import GRANULARITY_S, InProcess
from svc.crash.workload import Workload

# Beyond the last proactive window: one more periodic round closes it.
SETTLE_S = 10.0


async def expected_actions(workload: Workload, client: Redis, prefix: str) -> list[dict[str, Any]]:
    """Every triggered action a calm run of `workload` publishes, in order.

    The clock jumps to each event's publication time; periodic and proactive evaluation run
    on their timer in between, as in the service."""
    run = InProcess(client, prefix, t0=workload.base)
    await run.start(workload.automations)
    period = timedelta(seconds=GRANULARITY_S)
    next_tick = workload.base + period

    async def until(moment: datetime) -> None:
        nonlocal next_tick
        while next_tick <= moment:
            run.clock.set(next_tick)
            await run.tick()
            next_tick += period
        run.clock.set(moment)

    for planned in workload.events:
        await until(workload.base + timedelta(seconds=planned.publish_at_s))
        await run.publish(orjson.dumps(planned.body))
    await until(workload.base + timedelta(seconds=workload.quiet_after_s + SETTLE_S))
    return run.take_actions()
