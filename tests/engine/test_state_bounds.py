"""DESIGN "State in Redis": every key has a TTL or a sweep that bounds it; nothing grows
without limit. Behavioural expiry is decided by the engine's clock; Redis TTLs are only a
safety net well beyond the behavioural horizon."""

from __future__ import annotations

from uuid import UUID

from svc.conformance import label_uuid
from tests.engine.support import Driver, automation, compound, reactive

HOUR_S = 3600


def every_event() -> dict:
    return automation("all", reactive(expect=("x.*",)))


async def test_seen_marks_of_events_carry_a_safety_net_ttl(driver: Driver) -> None:
    """SEMANTICS 10 (seen marks count for 30 minutes of the engine's clock): the key itself
    expires long after, by Redis TTL."""
    await driver.start(every_event())
    await driver.event("one", 0, "x.a")
    ttl = await driver.client.pttl(driver.h.state.keys.seen(UUID(label_uuid("one"))))
    assert ttl > 30 * 60 * 1000


async def test_a_leaders_follower_set_is_bounded_when_the_leader_never_comes(
    driver: Driver,
) -> None:
    """SEMANTICS 10.4: a follower whose leader never comes is released as a lost follower;
    its leader's follower set (and the quirk 16.16 case, a log event's) must not stay
    forever: it carries a safety-net TTL well beyond the 15-minute wait."""
    await driver.start(every_event())
    await driver.event("lost", 0, "x.b", follows="never")
    await driver.advance(15 * 60)
    assert driver.fired_events() == ["lost"]
    keys = driver.h.state.keys
    assert await driver.client.hlen(keys.parked_events) == 0
    assert await driver.client.zcard(keys.waitlist) == 0
    followers = keys.followers(UUID(label_uuid("never")))
    assert not await driver.client.exists(followers) or (
        await driver.client.pttl(followers) > 15 * 60 * 1000
    )


async def test_per_trigger_seen_marks_are_swept_after_the_seen_horizon(driver: Driver) -> None:
    """Decision 3: a trigger's evaluated-event marks are kept for the seen horizon (30 min of
    the engine's clock) and then swept."""
    await driver.start(every_event())
    await driver.event("one", 0, "x.a")
    seen = driver.keys("all").seen
    assert await driver.client.zcard(seen) == 1
    driver.h.clock.advance(30 * 60 + 1)
    await driver.h.engine.periodic_evaluation()
    assert await driver.client.zcard(seen) == 0


async def test_a_composites_applied_child_firing_ids_are_trimmed(driver: Driver) -> None:
    """Decision 3: a composite remembers which child firings it applied, to apply each once
    (a crashed replica's outbox is drained at the next periodic evaluation); the record is
    trimmed by the periodic sweep once far past that, instead of growing with every child
    firing."""
    tree = compound([reactive(expect=("a",)), reactive(expect=("b",))], "all")
    await driver.start(automation("tree", tree))
    for i in range(3):
        await driver.event(f"a-{i}", i, "a")
    loaded = driver.h.engine.automations[UUID(label_uuid("tree"))]
    applied = loaded.composite_keys[driver.trigger_id("tree")].applied
    assert await driver.client.zcard(applied) == 3
    await driver.h.engine.periodic_evaluation()
    assert await driver.client.zcard(applied) == 3
    driver.h.clock.advance(24 * HOUR_S)
    await driver.event("a-late", 24 * HOUR_S, "a")
    await driver.h.engine.periodic_evaluation()
    assert await driver.client.zcard(applied) == 1
