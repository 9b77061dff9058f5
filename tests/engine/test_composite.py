"""Composite triggers (compound and sequence), SEMANTICS 3.4 and 7.2, with Decision 1:
a child firing's time is the event time that caused it, so `within` and sequence order are
decided by `occurred`, never by when a worker processed the event."""

from __future__ import annotations

from tests.engine.support import (
    Driver,
    Fired,
    automation,
    compound,
    proactive,
    reactive,
    sequence,
)

US = 0.000001


def on(name: str, **kwargs: object) -> dict:
    """An immediate reactive child that fires on every event named `name`."""
    return reactive(expect=(name,), **kwargs)  # type: ignore[arg-type]


def composite_fired(driver: Driver) -> list[tuple[str, str | None]]:
    return [(f.trigger_type, f.event) for f in driver.fired()]


# ---------------------------------------------------------------- compound


async def test_compound_any_fires_on_each_child_firing_without_storing_it(
    driver: Driver,
) -> None:
    """SEMANTICS 7.2 step 1: one expected firing fires the parent at once, with the child's
    triggering event and no stored child firing."""
    await driver.start(automation("any", compound([on("a"), on("b")], "any")))
    await driver.event("a-1", 0, "a")
    await driver.event("b-1", 1, "b")
    assert composite_fired(driver) == [("compound", "a-1"), ("compound", "b-1")]
    assert await driver.state_keys(":children") == set()


async def test_compound_all_fires_once_every_child_fired(driver: Driver) -> None:
    """SEMANTICS 3.4 and 7.2 step 2: `all` waits for every child; the firing carries the
    completing child's triggering event."""
    await driver.start(automation("all", compound([on("a"), on("b"), on("c")], "all")))
    await driver.event("a-1", 0, "a")
    await driver.event("b-1", 1, "b")
    assert driver.fired() == []
    await driver.event("c-1", 2, "c")
    assert composite_fired(driver) == [("compound", "c-1")]
    # the stored firings were consumed: the next round needs all three again
    await driver.event("a-2", 3, "a")
    await driver.event("b-2", 4, "b")
    assert driver.fired() == []


async def test_compound_firing_has_empty_triggering_labels_even_with_for_each_children(
    driver: Driver,
) -> None:
    """SEMANTICS 3.4 and quirk 16.15: composites never produce triggering labels, and child
    firings do not correlate by resource."""
    child = {"for_each": ("prefect.resource.id",)}
    await driver.start(automation("all", compound([on("a", **child), on("b", **child)], "all")))
    await driver.event("a-1", 0, "a", resource="run-1")
    await driver.event("b-2", 1, "b", resource="run-2")
    assert driver.fired() == [Fired("all", "b-2", (), "compound")]


async def test_compound_firing_lists_the_child_firings_that_caused_it(driver: Driver) -> None:
    """SEMANTICS 3.6: a composite firing's triggering_firings are the child firings read."""
    await driver.start(automation("all", compound([on("a"), on("b")], "all")))
    await driver.event("a-1", 0, "a")
    await driver.event("b-1", 1, "b")
    (action,) = driver.h.take_actions()
    children = action["firing"]["triggering_firings"]
    assert sorted(driver.label(c["triggering_event"]["id"]) for c in children) == ["a-1", "b-1"]
    assert {c["trigger"]["id"] for c in children} == {
        str(driver.trigger_id("all", "trigger.0")), str(driver.trigger_id("all", "trigger.1"))
    }


async def test_compound_within_counts_a_child_exactly_within_before_as_in_time(
    driver: Driver,
) -> None:
    """SEMANTICS 7.2 step 2.2 with Decision 1: stored firings expire when their event time is
    strictly older than the new firing's minus `within`; exactly `within` apart still fires."""
    await driver.start(automation("all", compound([on("a"), on("b")], "all", within=10)))
    await driver.event("a-0", 0, "a")
    await driver.event("b-10", 10, "b")
    assert composite_fired(driver) == [("compound", "b-10")]


async def test_compound_within_expires_a_child_one_microsecond_too_old(driver: Driver) -> None:
    """SEMANTICS 7.2 step 2.2 with Decision 1: the expiry is strict and by event time."""
    await driver.start(automation("all", compound([on("a"), on("b")], "all", within=10)))
    await driver.event("a-0", 0, "a")
    await driver.event("b-late", 10 + US, "b")
    assert driver.fired() == []
    await driver.event("a-again", 11, "a")
    assert composite_fired(driver) == [("compound", "a-again")]


async def test_compound_within_uses_event_time_not_processing_time(driver: Driver) -> None:
    """Decision 1: events 14 minutes apart do not satisfy a 5-second compound even when they
    are processed one right after the other (Prefect, on wall-clock time, would fire)."""
    await driver.start(automation("all", compound([on("a"), on("b")], "all", within=5)))
    await driver.event("a-0", 0, "a")
    await driver.event("b-840", 840, "b")
    assert driver.fired() == []


async def test_compound_without_within_never_expires_stored_firings(driver: Driver) -> None:
    """SEMANTICS 7.2 consequences: with `within` null stored firings never expire."""
    await driver.start(automation("all", compound([on("a"), on("b")], "all", within=None)))
    await driver.event("a-0", 0, "a")
    await driver.advance(3600)
    await driver.event("b-late", 86_400, "b")
    assert composite_fired(driver) == [("compound", "b-late")]


async def test_compound_require_n_fires_at_n_and_consumes_every_firing_it_read(
    driver: Driver,
) -> None:
    """SEMANTICS 7.2: require=2 of 3 fires at the second child; the firings read are
    consumed, so the third child starts the next round alone."""
    trigger = compound([on("a"), on("b"), on("c")], 2)
    await driver.start(automation("two", trigger))
    await driver.event("a-1", 0, "a")
    await driver.event("a-2", 1, "a")  # replaces a-1: still one stored firing
    assert driver.fired() == []
    await driver.event("b-1", 2, "b")
    (action,) = driver.h.take_actions()
    children = action["firing"]["triggering_firings"]
    assert sorted(driver.label(c["triggering_event"]["id"]) for c in children) == ["a-2", "b-1"]
    await driver.event("c-1", 3, "c")
    assert driver.fired() == []
    await driver.event("a-3", 4, "a")
    assert composite_fired(driver) == [("compound", "a-3")]


async def test_compound_require_n_with_one_event_firing_every_child(driver: Driver) -> None:
    """SEMANTICS 7.2: children are applied one at a time; an event that fires all three
    children of a require=2 compound fires it once, and the third child's firing is stored
    for the next round."""
    trigger = compound([on("x"), on("x"), on("x")], 2)
    await driver.start(automation("two", trigger))
    await driver.event("x-1", 0, "x")
    assert composite_fired(driver) == [("compound", "x-1")]
    children = await driver.state_keys(":children")
    assert len(children) == 1
    assert await driver.client.hlen(children.pop()) == 1
    # children are applied in declaration order: x-2's first child pairs with the stored
    # third one and fires, its second is stored, its third pairs with that and fires
    await driver.event("x-2", 1, "x")
    assert composite_fired(driver) == [("compound", "x-2"), ("compound", "x-2")]
    assert await driver.state_keys(":children") == set()


# ---------------------------------------------------------------- sequence


def abc(within: float | None = None) -> dict:
    return sequence([on("a"), on("b"), on("c")], within=within)


async def sequence_given(driver: Driver, names: str) -> None:
    """The a-b-c sequence started, then one event per letter of `names`, in that order, a
    second apart: `abac` sends a-0, b-1, a-2, c-3."""
    await driver.start(automation("seq", abc()))
    for at, name in enumerate(names):
        await driver.event(f"{name}-{at}", at, name)


async def test_sequence_in_order_fires(driver: Driver) -> None:
    """SEMANTICS 3.4: every child present once, ordered by firing time as declared."""
    await sequence_given(driver, "abc")
    assert composite_fired(driver) == [("sequence", "c-2")]


async def test_sequence_out_of_order_does_not_fire(driver: Driver) -> None:
    """SEMANTICS 3.4: b before a is not the declared order."""
    await sequence_given(driver, "bac")
    assert driver.fired() == []


async def test_sequence_repeated_first_step_after_the_second_breaks_it(driver: Driver) -> None:
    """SEMANTICS 7.2 consequences: A, B, A, C fails (A's latest firing is after B's)."""
    await sequence_given(driver, "abac")
    assert driver.fired() == []


async def test_sequence_repeated_middle_step_still_fires(driver: Driver) -> None:
    """SEMANTICS 7.2 consequences: A, B, B, C succeeds."""
    await sequence_given(driver, "abbc")
    assert composite_fired(driver) == [("sequence", "c-3")]


async def test_sequence_order_is_event_time_not_processing_order(driver: Driver) -> None:
    """Decision 1: events that occurred in order but are processed out of order satisfy the
    sequence; the completing child's event is the triggering event."""
    await driver.start(automation("seq", abc()))
    await driver.event("c-2", 2, "c")
    await driver.event("a-0", 0, "a")
    assert driver.fired() == []
    await driver.event("b-1", 1, "b")
    assert composite_fired(driver) == [("sequence", "b-1")]


async def test_sequence_needs_strictly_increasing_event_times(driver: Driver) -> None:
    """Decision 1: each step must be strictly later than the previous one; two events at the
    same instant do not make two steps."""
    await driver.start(automation("seq", sequence([on("a"), on("b")])))
    await driver.event("a-5", 5, "a")
    await driver.event("b-5", 5, "b")
    assert driver.fired() == []
    await driver.event("b-later", 5 + US, "b")
    assert composite_fired(driver) == [("sequence", "b-later")]


async def test_one_event_can_never_satisfy_two_steps_of_a_sequence(driver: Driver) -> None:
    """Decision 1: a sequence whose two children match the same event does not fire on that
    event (Prefect's xfail: there it depends on candidate order). Children are evaluated in
    declaration order, so each later event moves the first step along with the second, and
    such a sequence never fires."""
    await driver.start(automation("seq", sequence([on("x"), on("x")])))
    for i in range(3):
        await driver.event(f"x-{i}", i, "x")
    assert driver.fired() == []


async def test_sequence_within_uses_event_time(driver: Driver) -> None:
    """Decision 1: a 5-second sequence is not satisfied by events 14 minutes apart, however
    quickly they are processed; events inside 5 s are."""
    await driver.start(automation("seq", sequence([on("a"), on("b")], within=5)))
    await driver.event("a-0", 0, "a")
    await driver.event("b-840", 840, "b")
    assert driver.fired() == []
    await driver.event("a-900", 900, "a")
    await driver.event("b-905", 905, "b")
    assert composite_fired(driver) == [("sequence", "b-905")]


async def test_sequence_single_child_fires_at_once(driver: Driver) -> None:
    """SEMANTICS 7.2 step 1: a one-child sequence expects one firing."""
    await driver.start(automation("seq", sequence([on("a")])))
    await driver.event("a-0", 0, "a")
    assert composite_fired(driver) == [("sequence", "a-0")]


async def test_proactive_child_firing_time_is_its_clock_adjusted_as_of(driver: Driver) -> None:
    """Decision 1: a proactive child's firing time is the as_of of the evaluation that fired
    it (here 30), so a later step must have occurred after 30, whenever it is processed."""
    quiet = proactive(expect=("ping",), threshold=1, within=30)
    await driver.start(automation("seq", sequence([quiet, on("b")])))
    await driver.advance(30)
    assert driver.fired() == []  # the proactive child fired; the sequence waits for b
    await driver.event("b-29", 29, "b")
    assert driver.fired() == []
    await driver.event("b-31", 31, "b")
    assert composite_fired(driver) == [("sequence", "b-31")]


# ---------------------------------------------------------------- nesting


async def test_nested_compound_any_fires_through_every_level(driver: Driver) -> None:
    """SEMANTICS 7.2 step 3 (conformance 024): a parent firing is dispatched like a child's."""
    trigger = compound([compound([on("a")], "any"), on("b")], "any")
    await driver.start(automation("nested", trigger))
    await driver.event("a-0", 0, "a")
    assert composite_fired(driver) == [("compound", "a-0")]


async def test_compound_all_of_a_sequence_and_an_event_trigger(driver: Driver) -> None:
    """SEMANTICS 7.2 step 3: the inner sequence's firing is a child firing of the outer
    compound, timed by the event that completed it."""
    trigger = compound([sequence([on("a"), on("b")]), on("c")], "all", within=60)
    await driver.start(automation("nested", trigger))
    await driver.event("c-0", 0, "c")
    await driver.event("a-10", 10, "a")
    assert driver.fired() == []
    await driver.event("b-20", 20, "b")
    (action,) = driver.h.take_actions()
    assert action["firing"]["trigger"]["type"] == "compound"
    assert driver.label(action["triggering_event"]["id"]) == "b-20"
    inner = [c for c in action["firing"]["triggering_firings"] if c["trigger"]["type"] == "sequence"]
    assert len(inner) == 1 and len(inner[0]["triggering_firings"]) == 2


async def test_nested_sequence_firing_too_old_for_the_outer_within_expires(
    driver: Driver,
) -> None:
    """Decision 1 through nesting: the inner sequence fired at event time 20, so a sibling at
    81 is more than the outer `within` (60) later."""
    trigger = compound([sequence([on("a"), on("b")]), on("c")], "all", within=60)
    await driver.start(automation("nested", trigger))
    await driver.event("a-10", 10, "a")
    await driver.event("b-20", 20, "b")
    await driver.event("c-81", 81, "c")
    assert driver.fired() == []


async def test_sequence_with_a_nested_compound_step(driver: Driver) -> None:
    """SEMANTICS 7.2 (conformance 043): sequence [a, all(b, c), d]."""
    trigger = sequence([on("a"), compound([on("b"), on("c")], "all"), on("d")])
    await driver.start(automation("nested", trigger))
    await driver.event("a-0", 0, "a")
    await driver.event("c-1", 1, "c")
    await driver.event("b-2", 2, "b")
    await driver.event("d-3", 3, "d")
    assert composite_fired(driver) == [("sequence", "d-3")]


async def test_compound_within_holds_whatever_order_the_children_are_processed_in(
    driver: Driver,
) -> None:
    """Decision 1: `within` is measured on event times, so children that occurred 100 s
    apart never satisfy a 10-second compound, whichever of them is processed first."""
    await driver.start(
        automation("ab", compound([on("a"), on("b")], "all", within=10)),
        automation("ba", compound([on("c"), on("d")], "all", within=10)),
    )
    await driver.event("a-0", 0, "a")
    await driver.event("b-100", 100, "b")
    await driver.event("d-100", 100, "d")
    await driver.event("c-0", 0, "c")
    assert driver.fired() == []


async def test_sequence_within_holds_whatever_order_the_steps_are_processed_in(
    driver: Driver,
) -> None:
    """Decision 1: a 10-second sequence is not satisfied by steps 100 s apart in event time,
    even when the later step is processed first."""
    await driver.start(automation("seq", sequence([on("a"), on("b")], within=10)))
    await driver.event("b-100", 100, "b")
    await driver.event("a-0", 0, "a")
    assert driver.fired() == []
    await driver.event("a-95", 95, "a")
    assert composite_fired(driver) == [("sequence", "a-95")]
