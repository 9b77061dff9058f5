"""Loading, disabling, deleting and resetting automations (SEMANTICS 12, Decision 6), checked
both by behaviour and by the keys left in Redis."""

from __future__ import annotations

from uuid import UUID

from svc.conformance import label_uuid
from tests.engine.support import (
    Driver,
    Fired,
    at_us,
    automation,
    compound,
    proactive,
    reactive,
)


def pairs(within: float = 60) -> dict:
    """Two events within `within` (a minute), per resource."""
    return reactive(threshold=2, within=within, for_each=("prefect.resource.id",))


async def generation(driver: Driver, label: str) -> str:
    record = await driver.h.state.generation(UUID(label_uuid(label)))
    assert record is not None
    return record.decode().split("|", 1)[0]


async def test_reloading_an_unchanged_automation_keeps_its_buckets(driver: Driver) -> None:
    """Decision 6: the same trigger tree keeps its state (and its keys)."""
    await driver.start(automation("pairs", pairs()))
    await driver.event("one", 0)
    keys_before = await driver.state_keys(str(driver.trigger_id("pairs")))
    await driver.load(automation("pairs", pairs()))
    assert await driver.state_keys(str(driver.trigger_id("pairs"))) == keys_before
    await driver.event("two", 1)
    assert driver.fired() == [Fired("pairs", "two", (("prefect.resource.id", "r-1"),))]


async def test_changing_only_the_name_or_actions_keeps_the_state(driver: Driver) -> None:
    """Decision 6: only the trigger tree decides the state generation."""
    await driver.start(automation("pairs", pairs()))
    await driver.event("one", 0)
    changed = {**automation("pairs", pairs(), actions=2), "name": "renamed"}
    await driver.load(changed)
    await driver.event("two", 1)
    assert [f.event for f in driver.fired()] == ["two", "two"]


async def test_changing_any_trigger_field_starts_fresh_and_deletes_the_old_keys(
    driver: Driver,
) -> None:
    """Decision 6: a changed trigger tree gets a new generation with fresh state, and every
    key of the old generation is deleted, not leaked."""
    await driver.start(automation("pairs", pairs()))
    await driver.event("one", 0)
    old = await generation(driver, "pairs")
    trigger_id = str(driver.trigger_id("pairs"))
    assert await driver.state_keys(trigger_id, old)
    await driver.load(automation("pairs", pairs(within=61)))
    new = await generation(driver, "pairs")
    assert new != old
    assert await driver.state_keys(trigger_id, old) == set()
    await driver.event("two", 1)
    assert driver.fired() == []
    assert (await driver.bucket("pairs")).count == 1  # type: ignore[union-attr]


async def test_changing_a_nested_trigger_deletes_every_old_key_of_the_tree(
    driver: Driver,
) -> None:
    """Decision 6: a change anywhere in the tree resets the whole automation, composite
    child firings included."""
    document = automation(
        "tree", compound([reactive(expect=("a",)), reactive(expect=("b",))], "all")
    )
    await driver.start(document)
    await driver.event("a-0", 0, "a")
    old = await generation(driver, "tree")
    composite_id = str(driver.trigger_id("tree"))
    assert await driver.state_keys(composite_id, old, ":children")
    changed = automation(
        "tree", compound([reactive(expect=("a",)), reactive(expect=("b", "c"))], "all")
    )
    await driver.load(changed)
    assert await driver.state_keys(old) == set()
    await driver.event("b-1", 1, "b")
    assert driver.fired() == []  # a-0's stored firing went with the old generation


async def test_disabling_then_reenabling_picks_the_surviving_state_up(driver: Driver) -> None:
    """SEMANTICS 12: disabling forgets the automation, its state stays; events meanwhile
    reach nothing; re-enabling (same trigger ids) counts on from the surviving bucket."""
    await driver.start(automation("pairs", pairs()))
    await driver.event("one", 0)
    await driver.load(automation("pairs", pairs(), enabled=False))
    await driver.event("while-disabled", 1)
    assert driver.fired() == []
    buckets = driver.h.state.keys.trigger(
        driver.trigger_id("pairs"), await generation(driver, "pairs")
    ).buckets
    assert await driver.client.hlen(buckets) == 1
    await driver.load(automation("pairs", pairs()))
    assert (await driver.bucket("pairs")).count == 1  # type: ignore[union-attr]
    await driver.event("two", 2)
    assert driver.fired() == [Fired("pairs", "two", (("prefect.resource.id", "r-1"),))]


async def test_forget_then_load_picks_the_surviving_state_up(driver: Driver) -> None:
    """SEMANTICS 12: Engine.forget (what a disable does on every replica) keeps the state."""
    await driver.start(automation("pairs", pairs()))
    await driver.event("one", 0)
    automation_id = UUID(label_uuid("pairs"))
    loaded = driver.h.engine.automations[automation_id].automation
    driver.h.engine.forget(automation_id)
    await driver.event("while-forgotten", 1)
    assert driver.fired() == []
    await driver.h.engine.load(loaded)
    await driver.event("two", 2)
    assert driver.fired() == [Fired("pairs", "two", (("prefect.resource.id", "r-1"),))]


async def test_delete_removes_every_state_key(driver: Driver) -> None:
    """SEMANTICS 3.1 and DESIGN "State in Redis": deleting an automation deletes its
    buckets, held events, seen marks, outboxes and child firings; nothing is left under
    any of its trigger ids, and its generation record is gone."""
    sla = proactive(
        after=("run.started",), expect=("run.completed",), within=60, threshold=2,
        for_each=("prefect.resource.id",),
    )
    tree = compound([sla, reactive(expect=("a",)), reactive(expect=("b",))], "all")
    await driver.start(automation("tree", tree))
    await driver.event("completed", 5, "run.completed")
    await driver.event("started", 0, "run.started")
    await driver.event("a-0", 0, "a")
    ids = [str(driver.trigger_id("tree", p)) for p in ("trigger", "trigger.0", "trigger.1")]
    assert all([await driver.state_keys(i) for i in ids])
    await driver.h.forget("tree")
    for trigger_id in ids + [str(driver.trigger_id("tree", "trigger.2"))]:
        assert await driver.state_keys(trigger_id) == set()
    assert await driver.h.state.generation(UUID(label_uuid("tree"))) is None
    assert UUID(label_uuid("tree")) not in driver.h.engine.automations


async def test_reset_unloads_automations_until_the_next_periodic_reconcile(
    driver: Driver,
) -> None:
    """SEMANTICS 12 (Prefect's reset()): the events clock and the loaded automations are
    cleared, trigger state is not; events before the next periodic evaluation reach no
    automation, and after it the surviving bucket counts on."""
    await driver.start(automation("pairs", pairs()))
    await driver.event("one", -30)
    assert await driver.h.state.clock_offset(at_us(0)) != 0
    await driver.h.engine.reset()
    assert driver.h.engine.automations == {}
    assert await driver.h.state.clock_offset(at_us(0)) == 0
    await driver.event("unseen", 1)
    await driver.advance(5)
    await driver.event("two", 2)
    assert driver.fired() == [Fired("pairs", "two", (("prefect.resource.id", "r-1"),))]


async def test_a_disabled_automations_expired_buckets_are_swept(driver: Driver) -> None:
    """SEMANTICS 9 step 4 and 12 (checked with Prefect 3.9.1's engine): the sweep deletes
    every expired bucket, whether its automation is loaded or not, so a bucket that expired
    while the automation was disabled does not count when it is enabled again, and a
    disabled automation's state does not outlive the sweep (DESIGN "State in Redis")."""
    document = automation("pairs", reactive(threshold=2))
    await driver.start(document)
    await driver.event("one", 0)
    await driver.load({**document, "enabled": False})
    await driver.advance(300)
    buckets = driver.h.state.keys.trigger(
        driver.trigger_id("pairs"), await generation(driver, "pairs")
    ).buckets
    assert await driver.client.hlen(buckets) == 0
    await driver.load(document)
    await driver.event("two", 300)
    assert driver.fired() == []
