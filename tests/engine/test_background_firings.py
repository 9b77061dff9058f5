"""Publishing firings in the background (Engine.publish_in_background, as the service runs
it): intake goes on to the next batch while the firings of the one before are published, in
order; `take_batch_firings` says when a batch's are out, or how they failed; and whatever
else publishes or changes what a firing touches waits for them first."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.engine.support import Driver, automation, reactive


class GatedPublisher:
    """Holds every publish until released; records what was published, in order."""

    def __init__(self, driver: Driver) -> None:
        self.inner = driver.h.engine.publisher
        self.gate = asyncio.Event()
        self.started: list[str] = []
        self.fail_next = False
        driver.h.engine.publisher = self  # type: ignore[assignment]

    async def publish(self, automation: Any, out: Any) -> None:
        event_id = out.actions[0]["triggering_event"]["id"]
        self.started.append(event_id)
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("NATS went away")
        await self.inner.publish(automation, out)


async def every_event_fires(driver: Driver) -> None:
    trigger = reactive(expect=("x.ping",), threshold=1, within=0, for_each=("prefect.resource.id",))
    await driver.start(automation("each", trigger))
    driver.h.engine.publish_in_background = True


def bodies(driver: Driver, tag: str, count: int) -> list[bytes]:
    return [
        driver.body(driver.step(f"{tag}-{i}", i, "x.ping", resource=f"{tag}-run-{i}"))
        for i in range(count)
    ]


async def two_batches(
    driver: Driver, size: int
) -> tuple[GatedPublisher, asyncio.Future[None], asyncio.Future[None]]:
    """Batches "a" and "b" of `size` events each handled, every firing held at the gate:
    (the gate, the first batch's firings, the second's)."""
    await every_event_fires(driver)
    engine, gated = driver.h.engine, GatedPublisher(driver)
    await engine.handle_batch(bodies(driver, "a", size))
    first = engine.take_batch_firings()
    await engine.handle_batch(bodies(driver, "b", size))  # not held up by the first batch's
    second = engine.take_batch_firings()
    assert first is not None and second is not None
    assert not first.done() and not second.done()
    return gated, first, second


async def test_intake_goes_on_while_the_firings_before_are_published_in_order(
    driver: Driver,
) -> None:
    gated, first, second = await two_batches(driver, 2)
    assert driver.h.engine.take_batch_firings() is None  # each batch's once

    gated.gate.set()
    await asyncio.wait_for(second, timeout=10)
    assert first.done() and first.exception() is None
    assert driver.fired_events() == ["a-0", "a-1", "b-0", "b-1"]
    # drained from the outboxes once published
    assert not await driver.client.hgetall(driver.keys("each").outbox)


async def test_a_batch_whose_firings_failed_is_told_and_they_stay_in_the_outbox(
    driver: Driver,
) -> None:
    gated, failing, later = await two_batches(driver, 1)
    gated.fail_next = True
    gated.gate.set()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(failing, timeout=10)
    await asyncio.wait_for(later, timeout=10)  # the next batch's are still published
    assert driver.fired_events() == ["b-0"]
    assert len(await driver.client.hgetall(driver.keys("each").outbox)) == 1
    # the periodic drain publishes what is left, once
    await driver.h.engine.periodic_evaluation()
    assert driver.fired_events() == ["a-0"]


async def test_periodic_evaluation_and_admin_changes_wait_for_firings_under_way(
    driver: Driver,
) -> None:
    await every_event_fires(driver)
    engine, gated = driver.h.engine, GatedPublisher(driver)
    await engine.handle_batch(bodies(driver, "a", 1))
    firings = engine.take_batch_firings()
    assert firings is not None
    waiting = [
        asyncio.ensure_future(engine.periodic_evaluation()),
        asyncio.ensure_future(engine.reset_state()),
    ]
    for _ in range(20):
        await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)  # the firing is still being published
    gated.gate.set()
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=10)
    assert firings.done()
    # published once: the periodic drain did not publish it again meanwhile
    assert driver.fired_events() == ["a-0"]
