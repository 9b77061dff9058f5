"""The causal-ordering gate (SEMANTICS 10, Decision 5): followers wait for their leader in
Redis, are processed right after it (in `occurred` order), are released as lost followers 15
minutes after they were received, and stop recursing past depth 20. Duplicates are dropped.

Each test uses an immediate trigger that fires on every event, so the order of the firings
is the order in which events were evaluated."""

from __future__ import annotations

import pytest
import redis.asyncio

from svc.engine import Outcome
from tests.engine.support import LOOKBACK_S, Driver, automation, reactive


def every_event() -> dict:
    return automation("all", reactive(expect=("x.*",)))


def pairs() -> dict:
    return automation("pairs", reactive(expect=("x.*",), threshold=2))


async def test_follower_before_leader_is_parked_then_processed_right_after_it(
    driver: Driver,
) -> None:
    """SEMANTICS 10.1 steps 3 and 6: a follower whose leader was not seen is parked (acked,
    not evaluated); the leader's evaluation releases it at once."""
    await driver.start(every_event())
    (result,) = await driver.deliver(driver.step("follower", 1, "x.b", follows="leader"))
    assert result.outcome == Outcome.parked
    assert driver.fired_events() == []
    await driver.event("leader", 0, "x.a")
    assert driver.fired_events() == ["leader", "follower"]


async def test_follower_of_a_seen_leader_proceeds(driver: Driver) -> None:
    """SEMANTICS 10.1 step 3: the leader already seen, the follower is evaluated at once."""
    await driver.start(every_event())
    await driver.event("leader", 0, "x.a")
    (result,) = await driver.deliver(driver.step("follower", 1, "x.b", follows="leader"))
    assert result.outcome == Outcome.evaluated
    assert driver.fired_events() == ["leader", "follower"]


async def test_parked_followers_are_released_in_occurred_order(driver: Driver) -> None:
    """SEMANTICS 10.1 step 6: the leader's parked followers, in `occurred` order, whatever
    order they arrived in."""
    await driver.start(every_event())
    for label, at in (("f-3", 3), ("f-1", 1), ("f-2", 2)):
        await driver.event(label, at, "x.b", follows="leader")
    assert driver.fired_events() == []
    await driver.event("leader", 0, "x.a")
    assert driver.fired_events() == ["leader", "f-1", "f-2", "f-3"]


async def test_follower_received_15_minutes_ago_does_not_wait(driver: Driver) -> None:
    """SEMANTICS 10.1 step 3: an event received at least the lookback ago proceeds."""
    await driver.start(every_event())
    await driver.event("old", 0, "x.b", follows="missing", received_at=-LOOKBACK_S)
    assert driver.fired_events() == ["old"]


async def test_follower_received_just_under_15_minutes_ago_waits(driver: Driver) -> None:
    """SEMANTICS 10.1 step 3: one microsecond short of the lookback still waits."""
    await driver.start(every_event())
    await driver.event(
        "recent", 0, "x.b", follows="missing", received_at=-LOOKBACK_S + 0.000001
    )
    assert driver.fired_events() == []


async def test_lost_follower_is_released_by_periodic_evaluation_15_minutes_after_received(
    driver: Driver,
) -> None:
    """SEMANTICS 10.4: a follower whose leader never comes is evaluated by the periodic
    evaluation once its `received` is 15 minutes old, and only then."""
    await driver.start(every_event())
    await driver.event("lost", 0, "x.b", follows="never")
    await driver.advance(LOOKBACK_S - 5)
    assert driver.fired_events() == []
    await driver.advance(5)
    assert driver.fired_events() == ["lost"]
    await driver.advance(60)
    await driver.event("never", 1, "x.a")
    assert driver.fired_events() == ["never"]  # the lost follower is not evaluated twice


async def test_lost_followers_are_released_in_occurred_order(driver: Driver) -> None:
    """SEMANTICS 10.4: lost followers are evaluated in `occurred` order."""
    await driver.start(every_event())
    await driver.event("l-2", 2, "x.b", follows="never-a")
    await driver.event("l-1", 1, "x.b", follows="never-b")
    await driver.advance(LOOKBACK_S)
    assert driver.fired_events() == ["l-1", "l-2"]


async def test_a_chain_longer_than_the_depth_limit_is_cut_after_21_levels(
    driver: Driver,
) -> None:
    """SEMANTICS 10.1 step 1 and 10.5: a chain e1 <- e2 <- ... <- e25 delivered in reverse
    before its root e0: the root and 20 levels of followers (e0..e20) are processed when the
    root arrives, the rest wait as lost followers and come 15 minutes later, once each."""
    await driver.start(every_event())
    for i in range(25, 0, -1):
        await driver.event(f"e{i}", i, "x.b", follows=f"e{i - 1}")
    assert driver.fired_events() == []
    await driver.event("e0", 0, "x.a")
    assert driver.fired_events() == [f"e{i}" for i in range(21)]
    await driver.advance(LOOKBACK_S - 5)
    assert driver.fired_events() == []
    await driver.advance(5)
    assert driver.fired_events() == [f"e{i}" for i in range(21, 26)]


async def test_follower_of_a_log_event_waits_the_full_lookback(driver: Driver) -> None:
    """SEMANTICS 10.3 and quirk 16.16: log events are dropped at intake and never marked
    seen, so their follower is evaluated only as a lost follower."""
    await driver.start(every_event())
    (log,) = await driver.deliver(driver.step("log", 0, "prefect.log.write"))
    assert log.outcome == Outcome.skipped
    await driver.event("after-log", 1, "x.b", follows="log")
    await driver.advance(LOOKBACK_S - 5)
    assert driver.fired_events() == []
    await driver.advance(5)
    assert driver.fired_events() == ["after-log"]


# ---------------------------------------------------------------- duplicates


async def test_a_duplicate_is_dropped_and_never_counted_twice(driver: Driver) -> None:
    """SEMANTICS 5.1 step 5 and Decision 3: a redelivered event is dropped as seen."""
    await driver.start(pairs())
    step = driver.step("once", 0, "x.a")
    (first,) = await driver.deliver(step)
    (again,) = await driver.deliver(step)
    assert (first.outcome, again.outcome) == (Outcome.evaluated, Outcome.duplicate)
    assert driver.fired_events() == []
    await driver.event("twice", 1, "x.a")
    assert driver.fired_events() == ["twice"]


async def test_a_duplicate_in_the_same_batch_is_dropped(driver: Driver) -> None:
    """SEMANTICS 5.1 step 5: the second copy in one batch is a duplicate of the first."""
    await driver.start(pairs())
    step = driver.step("once", 0, "x.a")
    results = await driver.deliver(step, step)
    assert [r.outcome for r in results] == [Outcome.evaluated, Outcome.duplicate]
    assert driver.fired_events() == []


async def test_a_parked_follower_delivered_twice_is_evaluated_once(driver: Driver) -> None:
    """Decision 3: duplicates of a parked follower are parked once and counted once."""
    await driver.start(pairs())
    step = driver.step("follower", 1, "x.b", follows="leader")
    await driver.deliver(step)
    await driver.deliver(step)
    await driver.event("leader", 0, "x.a")
    assert driver.fired_events() == ["follower"]  # leader + follower = 2, exactly once
    (late,) = await driver.deliver(step)
    assert late.outcome == Outcome.duplicate


async def test_a_follower_released_then_delivered_again_is_dropped(driver: Driver) -> None:
    """Decision 3: a released follower is marked seen like any other evaluated event."""
    await driver.start(every_event())
    step = driver.step("follower", 1, "x.b", follows="leader")
    await driver.deliver(step)
    await driver.event("leader", 0, "x.a")
    (again,) = await driver.deliver(step)
    assert again.outcome == Outcome.duplicate
    assert driver.fired_events() == ["leader", "follower"]


# ---------------------------------------------------------------- batches


async def run_one_by_one(driver: Driver, steps: list[dict]) -> list[str]:
    for step in steps:
        await driver.deliver(step)
    return [a["id"] for a in driver.h.take_actions()]


async def run_as_batch(driver: Driver, steps: list[dict]) -> list[str]:
    await driver.deliver(*steps)
    return [a["id"] for a in driver.h.take_actions()]


def leader_and_followers(driver: Driver) -> list[dict]:
    return [
        driver.step("leader", 0, "x.a"),
        driver.step("f-2", 2, "x.b", follows="leader"),
        driver.step("f-1", 1, "x.b", follows="leader"),
        driver.step("other", 3, "x.c"),
    ]


@pytest.mark.parametrize("order", ["leader-first", "followers-first", "interleaved"])
async def test_a_batch_gives_the_same_firings_as_one_by_one_delivery(
    redis_client: redis.asyncio.Redis, key_prefix: str, order: str
) -> None:
    """SEMANTICS 10.1 and 5.1: Engine.handle_batch with a leader and its followers, in any
    order, publishes the same triggered actions, in the same order, as delivering the same
    messages one at a time (ids are deterministic, Decision 3)."""
    alone = Driver(redis_client, f"{key_prefix}-alone")
    batch = Driver(redis_client, f"{key_prefix}-batch")
    automations = [every_event(), pairs()]
    await alone.start(*automations)
    await batch.start(*automations)
    leader, f2, f1, other = leader_and_followers(alone)
    steps = {
        "leader-first": [leader, f2, f1, other],
        "followers-first": [f2, f1, other, leader],
        "interleaved": [f2, leader, other, f1],
    }[order]
    expected = await run_one_by_one(alone, steps)
    assert len(expected) == 4 + 2  # every event, and pairs fires on the 2nd and 4th
    assert await run_as_batch(batch, steps) == expected


async def test_a_follower_of_a_leader_parked_in_the_same_batch_is_parked_too(
    driver: Driver,
) -> None:
    """SEMANTICS 10.1: in one batch, a follower whose leader (earlier in the batch) has to
    wait waits with it, and both are released, in order, when the root arrives."""
    await driver.start(every_event())
    results = await driver.deliver(
        driver.step("middle", 1, "x.b", follows="root"),
        driver.step("last", 2, "x.c", follows="middle"),
    )
    assert [r.outcome for r in results] == [Outcome.parked, Outcome.parked]
    await driver.event("root", 0, "x.a")
    assert driver.fired_events() == ["root", "middle", "last"]


async def test_a_chain_in_one_batch_waits_behind_its_parked_root(driver: Driver) -> None:
    """SEMANTICS 10.1 step 3, transitively: in one batch, a -> b -> c where a's leader is
    missing: b waits for a, so c waits for b, and all come, in order, after the root."""
    await driver.start(every_event())
    results = await driver.deliver(
        driver.step("a", 1, "x.b", follows="root"),
        driver.step("b", 2, "x.c", follows="a"),
        driver.step("c", 3, "x.d", follows="b"),
        driver.step("free", 4, "x.e"),
    )
    assert [r.outcome for r in results] == [Outcome.parked] * 3 + [Outcome.evaluated]
    assert driver.fired_events() == ["free"]
    await driver.event("root", 0, "x.a")
    assert driver.fired_events() == ["root", "a", "b", "c"]


async def test_a_batch_releases_earlier_parked_followers_before_later_events(
    driver: Driver,
) -> None:
    """SEMANTICS 10.1 step 6: a leader's parked followers are evaluated right after it, before
    the events that come after the leader in the same batch."""
    await driver.start(every_event())
    await driver.event("early", 1, "x.b", follows="leader")
    await driver.deliver(driver.step("leader", 0, "x.a"), driver.step("next", 2, "x.c"))
    assert driver.fired_events() == ["leader", "early", "next"]
