"""Several engines on one Redis (DESIGN "Scale", Decision 3): two engines evaluating the same
stream concurrently, each event delivered to both, duplicated, in different orders and
batches, publish together exactly what one engine alone publishes."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
import redis.asyncio

from svc.engine import Engine, Outcome
from svc.state.scripts import Script
from svc.state.store import Call, ScriptCall
from tests.engine.support import Driver, automation, compound, proactive, reactive
from tests.helpers import eventually

KEYS = 8
PER_KEY = 4


def documents() -> list[dict[str, Any]]:
    """Triggers whose outcome does not depend on the order events are evaluated in."""
    return [
        # fires once per event
        automation("every", reactive(expect=("x.ping",))),
        # three pings per run within an hour: once per run (the cooldown window outlasts
        # the stream), whichever three are evaluated first
        automation(
            "three",
            reactive(
                expect=("x.ping",), threshold=3, within=3600,
                for_each=("prefect.resource.id",),
            ),
        ),
        # every child fires exactly once in the stream
        automation(
            "all",
            compound(
                [reactive(expect=("x.start",)), reactive(expect=("x.stop",)),
                 reactive(expect=("x.ping",), match={"prefect.resource.id": "run-0"})],
                "all",
            ),
        ),
    ]


def stream(driver: Driver) -> list[dict[str, Any]]:
    steps = [driver.step("start", 0, "x.start", resource="run-0")]
    for key in range(KEYS):
        for i in range(PER_KEY):
            # run-0's pings: the compound's third child fires on the first one evaluated
            if key == 0 and i > 0:
                continue
            steps.append(driver.step(f"ping-{key}-{i}", 1 + i, "x.ping", resource=f"run-{key}"))
    steps.append(driver.step("stop", 10, "x.stop", resource="run-0"))
    # a follower and its leader, delivered in both orders below
    steps.append(driver.step("leader", 11, "x.ping", resource="run-leader"))
    steps.append(driver.step("follower", 12, "x.ping", resource="run-leader", follows="leader"))
    return steps


def summary(actions: Sequence[dict[str, Any]]) -> tuple[Counter, Counter]:
    """(multiset of triggered action ids of the order-free triggers, multiset of
    (automation, triggering labels) of every triggered action)."""
    ids = Counter(a["id"] for a in actions if a["automation"]["name"] != "three")
    firings = Counter(
        (a["automation"]["name"], tuple(sorted(a["triggering_labels"].items())))
        for a in actions
    )
    return ids, firings


@pytest.fixture
async def second_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """Another connection pool, as another replica would have."""
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def solo_run(client: redis.asyncio.Redis, prefix: str) -> list[dict[str, Any]]:
    driver = Driver(client, prefix)
    await driver.start(*documents())
    for step in stream(driver):
        await driver.deliver(step)
    return driver.h.take_actions()


async def feed(driver: Driver, steps: list[dict[str, Any]], batch: int) -> None:
    for start in range(0, len(steps), batch):
        await driver.deliver(*steps[start : start + batch])


@pytest.mark.parametrize("seed", [1, 7, 42])
async def test_two_engines_publish_together_what_one_engine_publishes(
    redis_client: redis.asyncio.Redis,
    second_client: redis.asyncio.Redis,
    key_prefix: str,
    seed: int,
) -> None:
    """Decision 3 and DESIGN "Scale": the same stream through two engines sharing one key
    prefix, each event delivered to both (one of them twice), forwards in batches of 3 and
    shuffled in batches of 4 or one by one, concurrently: the multiset of triggered action
    ids equals one engine's alone, and every outbox is drained."""
    expected = await solo_run(redis_client, f"{key_prefix}-solo")
    expected_ids, expected_firings = summary(expected)
    shared = f"{key_prefix}-duo"
    one = Driver(redis_client, shared)
    two = Driver(second_client, shared)
    steps = stream(one)
    pings = [step for step in steps if step["event"] == "x.ping"]
    assert sum(expected_ids.values()) == len(pings) + 1  # every ping, and the compound once
    assert expected_firings[("three", (("prefect.resource.id", "run-1"),))] == 1

    await one.start(*documents())
    await two.start(*documents())
    shuffled = steps[:]
    random.Random(seed).shuffle(shuffled)
    await asyncio.gather(
        feed(one, steps + steps[::-1], batch=3),
        feed(two, shuffled, batch=4),
        feed(two, shuffled[::-1], batch=1),
    )
    published = one.h.take_actions() + two.h.take_actions()
    ids, firings = summary(published)
    assert ids == expected_ids
    assert firings == expected_firings
    assert await one.state_keys(":outbox") == set()  # Redis drops a hash with its last field
    await asyncio.gather(one.h.tick(), two.h.tick())
    assert one.h.take_actions() + two.h.take_actions() == []


async def test_fifty_concurrent_deliveries_of_one_event_evaluate_it_once(
    driver: Driver,
) -> None:
    """SEMANTICS 5.1 (the dedupe test): 50 concurrent deliveries of the same event id run
    the evaluation exactly once: one firing, one count."""
    await driver.start(
        automation("every", reactive(expect=("x.ping",))),
        automation("pairs", reactive(expect=("x.ping",), threshold=2, within=600)),
    )
    body = driver.body(driver.step("ping", 0, "x.ping"))
    results = await asyncio.gather(*(driver.h.engine.handle_message(body) for _ in range(50)))
    assert all(r.outcome in (Outcome.evaluated, Outcome.duplicate) for r in results)
    assert [a["automation"]["name"] for a in driver.h.take_actions()] == ["every"]
    assert (await driver.bucket("pairs")).count == 1  # type: ignore[union-attr]


async def test_fifty_concurrent_deliveries_across_two_engines_evaluate_it_once(
    redis_client: redis.asyncio.Redis, second_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """SEMANTICS 5.1 and Decision 3 across replicas, a parked follower included."""
    one = Driver(redis_client, key_prefix)
    two = Driver(second_client, key_prefix)
    docs = [automation("every", reactive(expect=("x.*",)))]
    await one.start(*docs)
    await two.start(*docs)
    follower = one.body(one.step("follower", 1, "x.b", follows="leader"))
    leader = one.body(one.step("leader", 0, "x.a"))
    deliveries = [
        (one if i % 2 else two).h.engine.handle_message(follower if i % 3 else leader)
        for i in range(50)
    ]
    await asyncio.gather(*deliveries)
    published = one.h.take_actions() + two.h.take_actions()
    assert sorted(one.label(a["triggering_event"]["id"]) for a in published) == [
        "follower", "leader"
    ]


def disabling_after(engine: Engine, script: Script) -> Callable[[Sequence[Call]], Awaitable[list]]:
    """A stand-in for engine.state.call_many that, once a round trip running `script` has
    returned, forgets the engine's one automation: an admin disable landing while an
    evaluation awaits Redis."""
    original = engine.state.call_many
    (automation_id,) = engine.automations

    async def disable_meanwhile(calls: Sequence[Call]) -> list[Any]:
        results = await original(calls)
        if any(isinstance(c, ScriptCall) and c.script is script for c in calls):
            engine.forget(automation_id)
        return results

    return disable_meanwhile


async def test_an_automation_disabled_while_its_evaluation_is_in_flight(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DESIGN "Delivery guarantees": an admin change (here a disable, which forgets the
    automation) can land while an evaluation awaits Redis; what the scripts decided before
    it is still published, and the message is not failed for it."""
    await driver.start(automation("every", reactive(expect=("x.ping",))))
    engine = driver.h.engine
    disable_meanwhile = disabling_after(engine, engine.state.scripts.reactive)
    monkeypatch.setattr(engine.state, "call_many", disable_meanwhile)
    (result,) = await driver.deliver(driver.step("ping", 0, "x.ping"))
    assert result.outcome == Outcome.evaluated
    assert [driver.label(a["triggering_event"]["id"]) for a in driver.h.take_actions()] == [
        "ping"
    ]


async def test_an_automation_disabled_while_its_proactive_evaluation_is_in_flight(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, on the proactive path: the window that fired is published, once."""
    await driver.start(automation("quiet", proactive(expect=("x.ping",), within=30)))
    engine = driver.h.engine
    disable_meanwhile = disabling_after(engine, engine.state.scripts.proactive)
    await driver.advance(25)
    monkeypatch.setattr(engine.state, "call_many", disable_meanwhile)
    await driver.advance(5)
    assert [a["automation"]["name"] for a in driver.h.take_actions()] == ["quiet"]
    monkeypatch.undo()
    await driver.advance(60)
    assert driver.h.take_actions() == []


# ---------------------------------------------------------------- firings of one batch


class SlowPublisher:
    """Holds every publish until released, and notes when each began and ended."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.log: list[tuple[str, str]] = []
        self.release = asyncio.Event()

    async def publish(self, automation: Any, out: Any) -> None:
        name = automation.name
        self.log.append(("begin", name))
        await self.release.wait()
        await self.inner.publish(automation, out)
        self.log.append(("end", name))


async def test_one_batch_publishes_its_firings_at_once_in_order(driver: Driver) -> None:
    """Engine._fire_decided: the firings a batch decided do not wait for each other's
    publish (a batch costs about one publish round trip); they begin in the order decided."""
    await driver.start(
        automation("a", reactive(expect=("x.ping",))),
        automation("b", reactive(expect=("x.ping",))),
    )
    slow = SlowPublisher(driver.h.engine.publisher)
    driver.h.engine.publisher = slow
    steps = [driver.step(f"ping-{i}", i, "x.ping") for i in range(2)]
    delivery = asyncio.ensure_future(driver.deliver(*steps))
    await eventually(lambda: len(slow.log) >= 4, "all four publishes to begin")
    assert slow.log == [("begin", "a"), ("begin", "b"), ("begin", "a"), ("begin", "b")]
    slow.release.set()
    await delivery
    assert driver.fired_events() == ["ping-0", "ping-0", "ping-1", "ping-1"]


async def test_child_firings_reach_their_composite_one_at_a_time_in_order(
    driver: Driver,
) -> None:
    """SEMANTICS 7.2: a composite applies its children's firings in the order decided, each
    once the one before is applied, even when a batch decides several at once."""
    await driver.start(
        automation("pair", compound([reactive(expect=("x.ping",)), reactive(expect=("x.pong",))],
                                    "all")),
    )
    engine = driver.h.engine
    log: list[str] = []
    original = engine.evaluate_composite

    async def logged(loaded: Any, parent: Any, child: Any) -> Any:
        log.append(f"begin {driver.label(child.triggering_event['id'])}")
        await asyncio.sleep(0.01)  # room for another child firing to overtake, were it let
        result = await original(loaded, parent, child)
        log.append("end")
        return result

    engine.evaluate_composite = logged  # type: ignore[method-assign]
    await driver.deliver(
        driver.step("ping-0", 0, "x.ping"), driver.step("pong-1", 1, "x.pong"),
        driver.step("ping-2", 2, "x.ping"),
    )
    assert log == ["begin ping-0", "end", "begin pong-1", "end", "begin ping-2", "end"]
    assert driver.fired_events() == ["pong-1"]
