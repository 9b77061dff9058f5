"""The outbox (DESIGN "Delivery guarantees", Decision 3): a firing is recorded in Redis in
the same atomic step that decides it, so a publisher failure loses nothing, a redelivery
counts nothing twice, and the next periodic evaluation publishes the firing exactly once,
with the ids an undisturbed run gives it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
import pytest
import redis.asyncio

from svc.conformance import label_uuid
from svc.domain.automations import Automation
from svc.domain.firings import Act
from svc.engine import Outcome, Publisher
from tests.engine.support import Driver, at_us, automation, compound, proactive, reactive


class BusDown(ConnectionError):
    """What the publisher raises while NATS is unreachable."""


class FailingFirstCalls:
    """A publisher that fails its first `failures` calls, then publishes through `inner`."""

    def __init__(self, inner: Publisher, failures: int = 1):
        self.inner = inner
        self.failures = failures
        self.calls = 0

    async def publish(self, automation: Automation, out: Act) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise BusDown("the bus is down")
        await self.inner.publish(automation, out)


def break_publisher(driver: Driver, failures: int = 1) -> FailingFirstCalls:
    publisher = FailingFirstCalls(driver.h.engine.publisher, failures)
    driver.h.engine.publisher = publisher
    return publisher


async def handled_while_the_bus_is_down(driver: Driver, body: bytes) -> None:
    """`body` handled with the publisher failing: handle_message raises (so the message would
    not be acked), after the scripts decided and stored the firing."""
    break_publisher(driver)
    with pytest.raises(BusDown):
        await driver.h.engine.handle_message(body)


async def drained_once(driver: Driver, expected: list[dict[str, Any]]) -> None:
    """The next periodic evaluation publishes exactly `expected` and leaves every outbox
    empty; the one after publishes nothing more."""
    await driver.h.engine.periodic_evaluation()
    assert driver.h.take_actions() == expected
    # Redis drops a hash with its last field: an outbox left holding a firing is a key here
    assert await driver.state_keys(":outbox") == set()
    await driver.h.engine.periodic_evaluation()
    assert driver.h.take_actions() == []


async def undisturbed(
    redis_client: redis.asyncio.Redis, prefix: str, documents: list[dict], steps: list[dict]
) -> list[dict[str, Any]]:
    """What a run with a working publisher publishes for the same input."""
    driver = Driver(redis_client, prefix)
    await driver.start(*documents)
    for step in steps:
        await driver.h.publish_event(step)
    return driver.h.take_actions()


def outbox_key(driver: Driver, label: str, path: str = "trigger") -> str:
    loaded = driver.h.engine.automations[UUID(label_uuid(label))]
    trigger_id = driver.trigger_id(label, path)
    if trigger_id in loaded.event_keys:
        return loaded.event_keys[trigger_id].outbox
    return loaded.composite_keys[trigger_id].outbox


async def test_a_firing_survives_a_publisher_failure_and_is_published_once(
    driver: Driver, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """DESIGN "Delivery guarantees": handle_message raises (no ack); the firing stays in the
    trigger's outbox; a redelivery is a duplicate and counts nothing; the next periodic
    evaluation publishes it exactly once, with the same deterministic ids; a second one
    publishes nothing more."""
    documents = [
        automation("now", reactive()),
        automation("triples", reactive(threshold=3, within=600)),
    ]
    step = driver.step("event", 0)
    expected = await undisturbed(redis_client, f"{key_prefix}-calm", documents, [step])
    assert len(expected) == 1

    await driver.start(*documents)
    body = driver.body(step)
    await handled_while_the_bus_is_down(driver, body)
    assert driver.h.take_actions() == []
    records = await redis_client.hvals(outbox_key(driver, "now"))
    assert len(records) == 1
    record = orjson.loads(records[0])
    assert set(record) == {"id", "key", "event", "at", "triggered", "s", "e", "c"}
    assert (record["key"], int(record["at"])) == ("[]", at_us(0))
    assert orjson.loads(record["event"])["id"] == label_uuid("event")
    assert record["id"] == expected[0]["firing"]["id"]

    redelivered = await driver.h.engine.handle_message(body)
    assert redelivered.outcome == Outcome.duplicate
    assert (await driver.bucket("triples")).count == 1  # type: ignore[union-attr]

    await drained_once(driver, expected)


async def test_a_composite_firing_survives_a_publisher_failure_and_is_published_once(
    driver: Driver, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """DESIGN "Delivery guarantees": the crash comes after the composite script fired (the
    parent's firing is in the composite's outbox, the child's in its trigger's); the next
    periodic evaluation publishes the composite firing exactly once, with the same ids."""
    documents = [
        automation("all", compound([reactive(expect=("a",)), reactive(expect=("b",))], "all"))
    ]
    steps = [driver.step("a-0", 0, "a"), driver.step("b-1", 1, "b")]
    expected = await undisturbed(redis_client, f"{key_prefix}-calm", documents, steps)
    assert [a["firing"]["trigger"]["type"] for a in expected] == ["compound"]

    await driver.start(*documents)
    await driver.h.publish_event(steps[0])
    body = driver.body(steps[1])
    await handled_while_the_bus_is_down(driver, body)
    assert await redis_client.hlen(outbox_key(driver, "all", "trigger.1")) == 1
    assert await redis_client.hlen(outbox_key(driver, "all")) == 1

    assert (await driver.h.engine.handle_message(body)).outcome == Outcome.duplicate
    await drained_once(driver, expected)


async def test_a_nested_composite_firing_survives_a_publisher_failure(
    driver: Driver, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """DESIGN "Delivery guarantees" through two composite levels: the outer composite fired
    and crashed before publishing; draining publishes it once."""
    inner = compound([reactive(expect=("a",)), reactive(expect=("b",))], "all")
    documents = [automation("nested", compound([inner, reactive(expect=("c",))], "all"))]
    steps = [driver.step("c-0", 0, "c"), driver.step("a-1", 1, "a"), driver.step("b-2", 2, "b")]
    expected = await undisturbed(redis_client, f"{key_prefix}-calm", documents, steps)
    assert len(expected) == 1

    await driver.start(*documents)
    for step in steps[:2]:
        await driver.h.publish_event(step)
    await handled_while_the_bus_is_down(driver, driver.body(steps[2]))
    await drained_once(driver, expected)


async def test_a_proactive_firing_survives_a_publisher_failure(
    driver: Driver, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """DESIGN "Delivery guarantees" on the proactive path: the window fired, publishing
    failed; the next periodic evaluation publishes it once, and the window is not fired
    again."""
    documents = [automation("quiet", proactive(expect=("ping",), threshold=1, within=30))]
    calm = Driver(redis_client, f"{key_prefix}-calm")
    await calm.start(*documents)
    await calm.advance(30)
    expected = calm.h.take_actions()
    assert len(expected) == 1

    await driver.start(*documents)
    await driver.advance(25)
    break_publisher(driver)
    with pytest.raises(BusDown):
        await driver.advance(5)
    assert await redis_client.hlen(outbox_key(driver, "quiet")) == 1
    await drained_once(driver, expected)
    await driver.h.engine.evaluate_proactive_triggers()
    assert driver.h.take_actions() == []


async def test_firings_published_before_a_failure_are_not_published_again(
    driver: Driver, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """Decision 3 ("a firing is never published twice"): in a batch whose second firing
    fails to publish, the first, already published, is drained from its outbox; the next
    periodic evaluation publishes only the second. Together: each firing exactly once."""
    documents = [automation("every", reactive())]
    steps = [driver.step("one", 0), driver.step("two", 1)]
    expected = await undisturbed(redis_client, f"{key_prefix}-calm", documents, steps)
    assert len(expected) == 2

    await driver.start(*documents)
    publisher = FailingFirstCalls(driver.h.engine.publisher, failures=0)
    driver.h.engine.publisher = publisher

    async def second_call_fails(automation: Automation, out: Act) -> None:
        publisher.calls += 1
        if publisher.calls == 2:
            raise BusDown("the bus went down")
        await publisher.inner.publish(automation, out)

    publisher.publish = second_call_fails  # type: ignore[method-assign]
    with pytest.raises(BusDown):
        await driver.h.engine.handle_batch([driver.body(s) for s in steps])
    published = driver.h.take_actions()
    assert published == expected[:1]
    assert await redis_client.hlen(outbox_key(driver, "every")) == 1
    await driver.h.engine.periodic_evaluation()
    published += driver.h.take_actions()
    assert published == expected


async def test_a_compound_any_firing_survives_a_publisher_failure(
    driver: Driver, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """DESIGN "Delivery guarantees": a one-firing composite stores nothing; the child's
    outbox record alone brings the parent's firing back, with the same ids."""
    documents = [automation("any", compound([reactive(expect=("a",))], "any"))]
    steps = [driver.step("a-0", 0, "a")]
    expected = await undisturbed(redis_client, f"{key_prefix}-calm", documents, steps)
    await driver.start(*documents)
    await handled_while_the_bus_is_down(driver, driver.body(steps[0]))
    await drained_once(driver, expected)
