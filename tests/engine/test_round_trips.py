"""What a fetched batch costs in Redis round trips (DESIGN "Performance principles": one
round trip per batch where possible, never one per event per trigger).

Round trips are counted where requests leave the client: every `send_packed_command` of a
connection is one request (a single command, or a whole pipeline) answered before the
engine goes on, so one round trip.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from tests.engine.support import Driver, automation, reactive

# A batch costs: the seen check, the gate (clock tick, parking, follower check), one
# pipeline of trigger scripts and seen marks, and one to drain outboxes when it fired.
MOST_ROUND_TRIPS_PER_BATCH = 6


class RoundTrips:
    """Counts requests sent to Redis while installed."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    counter = RoundTrips()
    send = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        counter.count += 1
        await send(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    yield counter


async def batch_cost(driver: Driver, round_trips: RoundTrips, size: int, tag: str) -> int:
    """Round trips of one batch of `size` events, each for its own bucketing key."""
    bodies = [
        driver.body(driver.step(f"{tag}-{i}", i, "x.ping", resource=f"{tag}-run-{i}"))
        for i in range(size)
    ]
    before = round_trips.count
    results = await driver.h.engine.handle_batch(bodies)
    assert len(results) == size
    return round_trips.count - before


@pytest.mark.parametrize("threshold", [2, 1], ids=["counting", "firing"])
async def test_a_batch_costs_a_few_round_trips_whatever_its_size(
    driver: Driver, round_trips: RoundTrips, threshold: int
) -> None:
    """DESIGN "Performance principles": a batch of events each touching a different bucket of
    a reactive trigger costs a small constant number of round trips, the same for 10 events
    as for 100 (counting: no firing; firing: every event fires and its outbox is drained)."""
    trigger = reactive(
        expect=("x.ping",), threshold=threshold, within=600, for_each=("prefect.resource.id",)
    )
    await driver.start(automation("per-run", trigger))
    await batch_cost(driver, round_trips, 10, "warm-up")  # the pool opens its connection
    small = await batch_cost(driver, round_trips, 10, "small")
    large = await batch_cost(driver, round_trips, 100, "large")
    print(f"round trips per batch (threshold {threshold}): 10 events {small}, 100 events {large}")
    assert small == large
    assert large <= MOST_ROUND_TRIPS_PER_BATCH
    fired = len(driver.h.take_actions())
    assert fired == (0 if threshold == 2 else 10 + 10 + 100)
