"""The active set (svc/state/lua/touch-1.lua): the periodic evaluation visits the state of the
automations that have some, not every loaded automation (DESIGN, "Performance principles"),
and sweeps exactly what it swept before (SEMANTICS 9)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from svc.conformance import label_uuid
from svc.state.store import Call, ScriptCall
from tests.engine.support import Driver, automation, proactive, reactive


class ScriptCounter:
    """The first key (a trigger's buckets) of each call of one script the engine sends."""

    def __init__(self, driver: Driver, script: str):
        self.called: list[str] = []
        state = driver.h.engine.state
        wanted = getattr(state.scripts, script)
        original = state.call_many

        async def counting(calls: list[Call]) -> list[Any]:
            self.called += [
                c.keys[0] for c in calls if isinstance(c, ScriptCall) and c.script is wanted
            ]
            return await original(calls)

        state.call_many = counting  # type: ignore[method-assign]


def quiet(label: str) -> dict[str, Any]:
    return automation(label, reactive(expect=(f"{label}.never",)))


async def active(driver: Driver) -> set[str]:
    _, ids = await driver.h.engine.state.active()
    return {driver.label(i) or "" for i in ids}


async def test_periodic_evaluation_sweeps_only_automations_with_state(driver: Driver) -> None:
    """After the first (full) pass, a periodic run sweeps the triggers of the automations
    whose scripts ran, not those of the idle ones."""
    await driver.start(
        automation("busy", reactive(expect=("x.ping",), threshold=2, within=60)),
        *(quiet(f"idle-{i}") for i in range(20)),
    )
    await driver.event("ping-1", 1, "x.ping")
    assert await active(driver) == {"busy"}
    counter = ScriptCounter(driver, "sweep")
    await driver.h.tick()
    busy = driver.keys("busy").buckets
    assert set(counter.called) == {busy}


async def test_an_automation_left_without_state_leaves_the_active_set(driver: Driver) -> None:
    """Once its buckets are swept and its seen marks have aged out, an automation is no
    longer visited; its next event makes it active again."""
    await driver.start(automation("busy", reactive(expect=("x.ping",), threshold=2, within=60)))
    await driver.event("ping-1", 1, "x.ping")
    await driver.h.advance(3 * 3600)  # past the bucket's end, its buffer and the seen horizon
    assert await driver.state_keys(str(driver.trigger_id("busy"))) == set()
    await driver.h.tick()
    assert await active(driver) == set()
    await driver.event("ping-2", 3 * 3600 + 1, "x.ping")
    assert await active(driver) == {"busy"}


async def test_the_scan_of_all_automations_finds_state_the_active_set_missed(
    driver: Driver,
) -> None:
    """State whose automation is not in the active set (an older version wrote it, or a
    Redis Cluster node took the script but not the touch) is found by the periodic
    evaluation's look at every automation, a page per run (GENERATIONS_PAGE), and swept."""
    await driver.start(
        automation("busy", reactive(expect=("x.ping",), threshold=2, within=60)),
        *(quiet(f"idle-{i}") for i in range(5)),
    )
    await driver.event("ping-1", 1, "x.ping")
    await driver.client.delete(driver.h.engine.state.keys.active)
    await driver.h.tick()
    assert await active(driver) == {"busy"}
    await driver.h.advance(600)
    assert await driver.bucket("busy") is None


async def test_a_page_of_all_automations_is_looked_at_per_run(driver: Driver) -> None:
    """The look at every automation costs a page per run, not all of them at once."""
    await driver.start(*(quiet(f"idle-{i}") for i in range(30)))
    engine = driver.h.engine
    looked: list[int] = []
    scan = engine.state.scan_generations

    async def counted(cursor: int, count: int) -> Any:
        found = await scan(cursor, 10)
        looked.append(len(found[1]))
        return found

    engine.state.scan_generations = counted  # type: ignore[method-assign]
    for _ in range(4):
        await driver.h.tick()
    assert all(n <= 20 for n in looked) and sum(looked) >= 30


async def test_a_disabled_automations_state_is_still_swept(driver: Driver) -> None:
    """SEMANTICS 9, 12: an automation not loaded here keeps being swept while it has state
    (found from its generation record), as Prefect's sweep deletes every expired bucket."""
    document = automation("paused", reactive(expect=("x.ping",), threshold=2, within=60))
    await driver.start(document)
    await driver.event("ping-1", 1, "x.ping")
    await driver.load({**document, "enabled": False})
    assert UUID(label_uuid("paused")) not in driver.h.engine.automations
    assert await active(driver) == {"paused"}
    await driver.h.advance(600)
    assert await driver.state_keys(str(driver.trigger_id("paused")), "buckets") == set()


# -- proactive evaluation looks only at triggers that can have something to evaluate --


def sla(label: str) -> dict[str, Any]:
    return automation(
        label,
        proactive(
            after=(f"{label}.started",), expect=(f"{label}.done",), within=60,
            for_each=("prefect.resource.id",),
        ),
    )


async def test_proactive_triggers_with_for_each_and_no_state_cost_no_script_call(
    driver: Driver,
) -> None:
    """A proactive trigger with for_each whose automation has no state has no bucket to
    evaluate: no script is called for it, and it does not join the active set. A global
    bucket (no for_each) is the script's to keep: that trigger is evaluated anyway."""
    await driver.start(
        *(sla(f"idle-{i}") for i in range(10)),
        sla("armed"),
        automation("global", proactive(expect=("g.done",), within=60)),
    )
    await driver.event("armed-1", 1, "armed.started", resource="run-1")
    counter = ScriptCounter(driver, "proactive")
    await driver.h.advance(65)  # every trigger comes due again; "armed" ends at 61
    assert set(counter.called) == {driver.keys("armed").buckets, driver.keys("global").buckets}
    assert await active(driver) == {"armed", "global"}
    assert sorted(f.automation for f in driver.fired()) == ["armed", "global"]


async def test_state_the_active_set_missed_makes_its_proactive_trigger_due_at_once(
    driver: Driver,
) -> None:
    """A trigger skipped for want of state is looked at again after its `within`; state the
    active set missed, once the periodic evaluation finds it, is evaluated at once."""
    await driver.start(sla("sla"))
    await driver.h.tick()  # looked at with no state: next look after 60 s
    await driver.event("started", 6, "sla.started", resource="run-1")
    await driver.client.delete(driver.h.engine.state.keys.active)  # the touch was lost
    counter = ScriptCounter(driver, "proactive")
    await driver.h.advance(5)  # the periodic evaluation finds the state, then proactive
    assert await active(driver) == {"sla"}
    assert counter.called == [driver.keys("sla").buckets]
    await driver.h.advance(65)  # the window [6, 66) closes
    assert [f.automation for f in driver.fired()] == ["sla"]
