"""The trigger index against a scan of every loaded trigger (SEMANTICS 2.7, STYLE "Tests")."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

import svc.domain.index as index_module
from svc.domain.index import TriggerIndex
from svc.domain.names import EventNamePatterns, name_is_interesting


@dataclass(frozen=True)
class FakeEvent:
    event: str
    tag: int = 0


@dataclass(frozen=True)
class FakeTrigger:
    """Stands in for an event trigger: name coverage as EventTrigger's, and a resource
    coverage that rejects some event tags."""

    id: int
    patterns: EventNamePatterns
    rejected_tags: frozenset[int] = frozenset()

    def covers(self, event: FakeEvent) -> bool:
        return self.patterns.covers(event.event) and event.tag not in self.rejected_tags


def trigger(
    trigger_id: int,
    expect: Iterable[str] = (),
    after: Iterable[str] = (),
    rejected_tags: Iterable[int] = (),
) -> FakeTrigger:
    patterns = EventNamePatterns(expect=frozenset(expect), after=frozenset(after))
    return FakeTrigger(trigger_id, patterns, frozenset(rejected_tags))


def ids(triggers: Iterable[FakeTrigger]) -> list[int]:
    return [t.id for t in triggers]


def index_of(*triggers: FakeTrigger) -> TriggerIndex[FakeTrigger]:
    index: TriggerIndex[FakeTrigger] = TriggerIndex()
    for t in triggers:
        index.add(t)
    return index


# -- behaviour --


def test_exact_prefix_middle_and_catch_all_keys() -> None:
    index = index_of(
        trigger(1, {"prefect.flow-run.Completed"}),
        trigger(2, {"prefect.flow-run.*"}),
        trigger(3, {"prefect.*.Completed"}),
        trigger(4),
        trigger(5, {"prefect.task-run.*"}),
    )
    assert ids(index.candidates("prefect.flow-run.Completed")) == [1, 2, 3, 4]
    assert ids(index.candidates("prefect.task-run.Failed")) == [4, 5]
    assert ids(index.candidates("other")) == [4]


def test_candidates_come_once_each_in_the_order_of_addition() -> None:
    index = index_of(
        trigger(3, {"a.*", "a.b"}, {"*.b"}),
        trigger(1, {"a.b"}),
        trigger(2, {"*"}),
    )
    assert ids(index.candidates("a.b")) == [3, 1, 2]


def test_adding_the_same_id_replaces_the_trigger_and_its_keys() -> None:
    index = index_of(trigger(1, {"old"}), trigger(2, {"*"}))
    index.add(trigger(1, {"new.*"}))
    assert len(index) == 2
    assert ids(index.candidates("old")) == [2]
    # A replaced trigger counts as added last.
    assert ids(index.candidates("new.x")) == [2, 1]
    assert index.get(1) == trigger(1, {"new.*"})


def test_remove_forgets_every_key_and_ignores_unknown_ids() -> None:
    index = index_of(trigger(1, {"a", "b.*"}, {"c?"}), trigger(2, {"b.*"}))
    index.remove(1)
    index.remove(1)
    index.remove(99)
    assert 1 not in index
    assert 2 in index
    assert index.get(1) is None
    assert ids(index.candidates("a")) == []
    assert ids(index.candidates("b.x")) == [2]
    assert ids(index.candidates("c1")) == []


def test_clear_empties_the_index() -> None:
    index = index_of(trigger(1, {"a"}), trigger(2))
    index.clear()
    assert len(index) == 0
    assert index.candidates("a") == []
    index.add(trigger(3, {"a"}))
    assert ids(index.candidates("a")) == [3]


def test_interested_applies_name_coverage_and_resource_coverage() -> None:
    """An index hit is not enough: `foo.*` reaches `foo.` but does not cover it (2.7)."""
    index = index_of(
        trigger(1, {"foo.*"}),
        trigger(2, {"foo."}, rejected_tags={7}),
        trigger(3, {"foo?"}),
    )
    assert ids(index.candidates("foo.")) == [1, 2, 3]
    assert ids(index.interested(FakeEvent("foo."))) == [2]
    assert ids(index.interested(FakeEvent("foo.", tag=7))) == []


def test_trigger_without_expect_is_interested_in_after_and_other_events() -> None:
    index = index_of(trigger(1, after={"started"}))
    assert ids(index.interested(FakeEvent("started"))) == [1]
    assert ids(index.interested(FakeEvent("anything"))) == [1]


def test_lookup_examines_a_handful_of_patterns_among_100_000_triggers() -> None:
    """The work of a lookup does not grow with triggers that cannot match (STYLE, 17)."""
    index: TriggerIndex[FakeTrigger] = TriggerIndex()
    for i in range(50_000):
        index.add(trigger(i, {f"exact.{i}.done"}))
        index.add(trigger(100_000 + i, {f"prefix.{i}.*"}))
    index.add(trigger(-1))
    assert len(index) == 100_001

    def lookup(name: str) -> tuple[list[int], int]:
        before = index.stats.patterns_tested
        found = ids(index.candidates(name))
        return found, index.stats.patterns_tested - before

    # The catch-all is the one wildcard of the empty prefix; it is always tested.
    assert lookup("exact.31337.done") == ([31337, -1], 1)
    assert lookup("prefix.4242.x") == ([104242, -1], 2)
    assert lookup("prefix.4242") == ([-1], 1)
    assert lookup("nothing.at.all") == ([-1], 1)


def test_a_names_candidates_are_remembered_until_the_index_changes() -> None:
    """Repeated names cost one dict lookup; any add, remove or clear forgets what was
    remembered, so a lookup always answers for the index as it stands."""
    index = index_of(trigger(1, {"x.a"}))
    first = index.candidates("x.a")
    assert ids(first) == [1]
    tested = index.stats.patterns_tested
    assert index.candidates("x.a") is first  # remembered: no pattern tested again
    assert index.stats.patterns_tested == tested
    index.add(trigger(2, {"x.*"}))
    assert ids(index.candidates("x.a")) == [1, 2]
    index.remove(1)
    assert ids(index.candidates("x.a")) == [2]
    index.clear()
    assert index.candidates("x.a") == []


def test_the_remembered_names_are_bounded() -> None:
    index = index_of(trigger(1))  # the catch-all: every name has a candidate
    for i in range(index_module.NAMES_REMEMBERED + 10):
        assert ids(index.candidates(f"name.{i}")) == [1]
    assert len(index._remembered) <= index_module.NAMES_REMEMBERED


# -- against the brute-force scan --

KEYS = st.one_of(
    st.sampled_from(["a", "a.b", "ab", "a.*", "a*", "*.b", "a.*.b", "*", "a?", "[ab]", "a[", "!a"]),
    st.text(alphabet="ab.*?[]1!", max_size=5),
)
NAMES = st.one_of(
    st.sampled_from(["a", "a.b", "ab", "a.", "a.b.b", "a?", "a[", "!a", "b", ""]),
    st.text(alphabet="ab.*?[]1!", max_size=6),
)
TRIGGERS = st.builds(
    trigger,
    trigger_id=st.integers(0, 11),  # more than FEW_TRIGGERS under one key, at times
    expect=st.frozensets(KEYS, max_size=3),
    after=st.frozensets(KEYS, max_size=2),
    rejected_tags=st.frozensets(st.integers(0, 2), max_size=2),
)
OPERATIONS = st.lists(st.one_of(TRIGGERS, st.integers(0, 11)), max_size=40)
EVENTS = st.lists(st.builds(FakeEvent, NAMES, st.integers(0, 2)), min_size=1, max_size=4)


def scan(loaded: dict[int, FakeTrigger], event: FakeEvent) -> list[FakeTrigger]:
    return [
        t
        for t in loaded.values()
        if name_is_interesting(t.patterns, event.event) and t.covers(event)
    ]


@given(operations=OPERATIONS, events=EVENTS)
def test_index_agrees_with_a_scan_of_every_trigger(
    operations: list[FakeTrigger | int], events: list[FakeEvent]
) -> None:
    index: TriggerIndex[FakeTrigger] = TriggerIndex()
    loaded: dict[int, FakeTrigger] = {}  # in order of addition, like the index
    for operation in operations:
        if isinstance(operation, FakeTrigger):
            index.add(operation)
            loaded.pop(operation.id, None)
            loaded[operation.id] = operation
        else:
            index.remove(operation)
            loaded.pop(operation, None)
        for event in events:
            assert index.interested(event) == scan(loaded, event)
            hits = [t for t in loaded.values() if t.patterns.index_hit(event.event)]
            assert index.candidates(event.event) == hits
    assert len(index) == len(loaded)
    assert all(trigger_id in index for trigger_id in loaded)
