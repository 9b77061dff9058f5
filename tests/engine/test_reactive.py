"""Reactive EventTriggers, one test per behaviour of SEMANTICS 6.1 (and 5.2, 6), with the
window edges tested on purpose: an event exactly at a window's start counts, one exactly at
its end rolls over, and first windows reach back exactly the 15-minute lookback."""

from __future__ import annotations

from tests.engine.support import LOOKBACK_S, Driver, Fired, automation, reactive

US = 0.000001  # one microsecond, in seconds: the resolution of event times


# ---------------------------------------------------------------- immediate (within = 0)


async def test_immediate_trigger_fires_on_every_expected_event_and_keeps_no_bucket(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1, reactive immediate: the first event's bucket is counted, fires and is
    removed; nothing else remains."""
    await driver.start(automation("spiders", reactive()))
    await driver.event("walk-1", 0)
    await driver.event("walk-2", 10)
    assert driver.fired() == [Fired("spiders", "walk-1"), Fired("spiders", "walk-2")]
    assert await driver.buckets("spiders") == {}


async def test_immediate_trigger_ignores_unexpected_names_and_other_resources(
    driver: Driver,
) -> None:
    """SEMANTICS 2.6, 2.7 and 5.2 step 4: only covered, expected events count."""
    await driver.start(automation("spiders", reactive(match={"class": "Arachnida"})))
    await driver.event("other-name", 0, "x.other", labels={"class": "Arachnida"})
    await driver.event("other-class", 1, labels={"class": "Mammalia"})
    await driver.event("no-class", 2)
    assert driver.fired() == []
    await driver.event("spider", 3, labels={"class": "Arachnida"})
    assert driver.fired() == [Fired("spiders", "spider")]


async def test_immediate_first_bucket_reaches_back_the_lookback_and_ends_at_the_event(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1, reactive immediate: the first event's bucket is [occ - 15 min, occ]."""
    await driver.start(automation("pairs", reactive(threshold=2)))
    await driver.event("first", 100)
    bucket = await driver.bucket("pairs")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count) == (100 - LOOKBACK_S, 100, 1)
    assert bucket.last_event == "first"


async def test_immediate_threshold_counts_across_events_ignoring_the_window_end(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1, immediate with threshold > 1 (derived): the bucket is not removed when
    it does not fire, and an immediate trigger counts events after the bucket's end."""
    await driver.start(automation("triples", reactive(threshold=3)))
    await driver.event("a", 0)
    await driver.event("b", 20)
    assert driver.fired() == []
    assert (await driver.bucket("triples")).count == 2  # type: ignore[union-attr]
    await driver.event("c", 40)
    assert driver.fired() == [Fired("triples", "c")]
    assert await driver.buckets("triples") == {}


async def test_immediate_event_exactly_at_the_bucket_start_counts(driver: Driver) -> None:
    """SEMANTICS 6 step 2 and 6.1: `start <= occurred` is in the bucket; the first bucket
    starts exactly 15 minutes before the event that created it."""
    await driver.start(automation("pairs", reactive(threshold=2)))
    await driver.event("creates", 0)
    await driver.event("at-start", -LOOKBACK_S)
    assert driver.fired() == [Fired("pairs", "at-start")]


async def test_immediate_event_before_the_bucket_start_is_ignored(driver: Driver) -> None:
    """SEMANTICS 6.1, reactive immediate: an event more than 15 minutes before the event that
    created the bucket is too early and changes nothing."""
    await driver.start(automation("pairs", reactive(threshold=2)))
    await driver.event("creates", 0)
    await driver.event("too-early", -LOOKBACK_S - US)
    assert driver.fired() == []
    bucket = await driver.bucket("pairs")
    assert bucket is not None and (bucket.count, bucket.last_event) == (1, "creates")


async def test_immediate_threshold_bucket_lives_until_the_sweep_60_s_after_its_end(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1 (derived) and quirk 16.6: counts accumulate until the sweep removes the
    bucket, `expired_bucket_buffer` (60 s) after its end (the first event's occurred)."""
    await driver.start(automation("pairs", reactive(threshold=2)))
    await driver.event("first", 0)
    await driver.advance(59)
    assert await driver.bucket("pairs") is not None
    await driver.advance(1)
    assert await driver.bucket("pairs") is None
    await driver.event("second", 60)
    assert driver.fired() == []
    assert (await driver.bucket("pairs")).count == 1  # type: ignore[union-attr]


async def test_immediate_threshold_met_before_the_sweep_fires(driver: Driver) -> None:
    """SEMANTICS 6.1: within the sweep's 60 s, a later event still completes the count."""
    await driver.start(automation("pairs", reactive(threshold=2)))
    await driver.event("first", 0)
    await driver.advance(59)
    await driver.event("second", 59)
    assert driver.fired() == [Fired("pairs", "second")]


# ---------------------------------------------------------------- within > 0, no after


async def test_first_window_is_backdated_by_the_lookback_and_ends_within_after_the_event(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1, reactive with within: the first event opens [occ - 15 min, occ + W)."""
    await driver.start(automation("bursts", reactive(threshold=3, within=10)))
    await driver.event("first", 100)
    bucket = await driver.bucket("bursts")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count) == (100 - LOOKBACK_S, 110, 1)
    assert bucket.last_operation == "increment_bucket[update]"


async def test_event_exactly_at_the_backdated_start_of_the_first_window_counts(
    driver: Driver,
) -> None:
    """SEMANTICS 5.2 step 4.3 and quirk 16.4: out-of-order events of the same burst count in
    the first window, up to exactly 15 minutes before the event that opened it."""
    await driver.start(automation("pairs", reactive(threshold=2, within=10)))
    await driver.event("opens", 0)
    await driver.event("at-edge", -LOOKBACK_S)
    assert driver.fired() == [Fired("pairs", "at-edge")]


async def test_event_before_the_backdated_start_of_the_first_window_is_ignored(
    driver: Driver,
) -> None:
    """SEMANTICS 6 step 2 and quirk 16.4: one microsecond before the backdated start is too
    early."""
    await driver.start(automation("pairs", reactive(threshold=2, within=10)))
    await driver.event("opens", 0)
    await driver.event("past-edge", -LOOKBACK_S - US)
    assert driver.fired() == []
    assert (await driver.bucket("pairs")).count == 1  # type: ignore[union-attr]


async def test_threshold_fires_as_soon_as_reached_then_waits_out_the_cooldown(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1: threshold 3 in 10 s, events at t, t+1, t+2 fire; t+3 and t+4 fall
    before the cooldown window, which starts where the old window ended, and are ignored."""
    await driver.start(automation("bursts", reactive(threshold=3, within=10)))
    for i in range(5):
        await driver.event(f"e{i}", i)
    assert driver.fired() == [Fired("bursts", "e2")]
    bucket = await driver.bucket("bursts")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count) == (10, 20, 0)


async def test_event_exactly_at_the_cooldown_start_counts(driver: Driver) -> None:
    """SEMANTICS 4.1: an event at `t` is in the window iff start <= t < end; the cooldown
    window [10, 20) counts an event at exactly 10 (and one just before it is too early)."""
    await driver.start(automation("pairs", reactive(threshold=2, within=10)))
    await driver.event("a", 0)
    await driver.event("b", 5)
    assert driver.fired() == [Fired("pairs", "b")]
    await driver.event("just-before", 10 - US)
    assert (await driver.bucket("pairs")).count == 0  # type: ignore[union-attr]
    await driver.event("at-start", 10)
    await driver.event("last-inside", 20 - US)
    assert driver.fired() == [Fired("pairs", "last-inside")]


async def test_event_exactly_at_the_window_end_rolls_over_instead_of_counting(
    driver: Driver,
) -> None:
    """SEMANTICS 6 steps 3 and 7: an event at exactly `end` is outside the window: the count
    is discarded and the event is counted in the next window [end, end + W)."""
    await driver.start(automation("pairs", reactive(threshold=2, within=10)))
    await driver.event("a", 0)
    await driver.event("at-end", 10)
    assert driver.fired() == []
    bucket = await driver.bucket("pairs")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count) == (10, 20, 1)
    assert bucket.last_event == "at-end"


async def test_event_one_microsecond_before_the_window_end_counts(driver: Driver) -> None:
    """SEMANTICS 4.1: the last instant inside [start, end)."""
    await driver.start(automation("pairs", reactive(threshold=2, within=10)))
    await driver.event("a", 0)
    await driver.event("inside", 10 - US)
    assert driver.fired() == [Fired("pairs", "inside")]


async def test_late_event_rolls_the_window_to_its_own_occurred(driver: Driver) -> None:
    """SEMANTICS 6 step 7: the next window starts at max(end, occurred), not at `end`."""
    await driver.start(automation("pairs", reactive(threshold=2, within=10)))
    await driver.event("a", 0)
    await driver.event("late", 55)
    bucket = await driver.bucket("pairs")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count) == (55, 65, 1)


async def test_event_in_the_future_fires_again_after_rolling_over(driver: Driver) -> None:
    """SEMANTICS 6.1 ("events arriving in the future"): threshold 1 in 10 s fires at t and
    again at t + 999 s: the count is discarded, the event counts in the new window."""
    await driver.start(automation("ones", reactive(threshold=1, within=10)))
    await driver.event("now", 0)
    await driver.event("future", 999)
    assert driver.fired() == [Fired("ones", "now"), Fired("ones", "future")]


async def test_each_bucketing_key_has_its_own_window_and_labels(driver: Driver) -> None:
    """SEMANTICS 3.3: for_each keys each get a bucket; the firing's triggering labels map the
    sorted for_each labels to the key."""
    trigger = reactive(threshold=2, within=60, for_each=("prefect.resource.id",))
    await driver.start(automation("per-run", trigger))
    await driver.event("a1", 0, resource="run-a")
    await driver.event("b1", 1, resource="run-b")
    await driver.event("a2", 2, resource="run-a")
    assert driver.fired() == [
        Fired("per-run", "a2", (("prefect.resource.id", "run-a"),)),
    ]
    assert set(await driver.buckets("per-run")) == {'["run-a"]', '["run-b"]'}


async def test_unexpected_event_does_not_touch_the_window(driver: Driver) -> None:
    """SEMANTICS 5.2 step 4: an event that is covered (index, resource) but not expected
    changes nothing (conformance 016)."""
    await driver.start(automation("pairs", reactive(expect=("x.*",), threshold=2, within=10)))
    await driver.event("a", 0, "x.one")
    await driver.event("unrelated", 1, "y.one")
    bucket = await driver.bucket("pairs")
    assert bucket is not None and (bucket.count, bucket.last_event) == (1, "a")


# ---------------------------------------------------------------- with after


def armed(threshold: int = 1, within: float = 10, **kwargs: object) -> dict:
    return reactive(
        after=("x.start",), expect=("x.happened",), threshold=threshold, within=within,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_after_event_arms_a_window_from_its_own_occurred(driver: Driver) -> None:
    """SEMANTICS 6.1, reactive with after: the after event arms [occ, occ + W), count 0, with
    itself as last event; it is not backdated."""
    await driver.start(automation("after", armed()))
    await driver.event("start", 100, "x.start")
    bucket = await driver.bucket("after")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count, bucket.last_event) == (100, 110, 0, "start")
    assert bucket.last_operation == "ensure_bucket[insert]"
    assert driver.fired() == []


async def test_rearming_while_armed_does_not_move_the_window(driver: Driver) -> None:
    """SEMANTICS 4.1 ensure and 6.1: an existing bucket keeps its window, count and (since
    3.9) its last event."""
    await driver.start(automation("after", armed(threshold=2)))
    await driver.event("start", 0, "x.start")
    await driver.event("counted", 1)
    await driver.event("start-again", 5, "x.start")
    bucket = await driver.bucket("after")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count, bucket.last_event) == (0, 10, 1, "counted")


async def test_expected_events_in_the_armed_window_fire_at_threshold_and_disarm(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1: reaching the threshold fires and removes the bucket; the trigger stays
    disarmed until the next after event."""
    await driver.start(automation("after", armed(threshold=2)))
    await driver.event("start", 0, "x.start")
    await driver.event("one", 0)
    await driver.event("two", 9)
    assert driver.fired() == [Fired("after", "two")]
    assert await driver.bucket("after") is None
    await driver.event("unarmed", 9.5)
    assert await driver.bucket("after") is None


async def test_expected_event_exactly_at_the_armed_window_end_disarms_without_firing(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1: an expected event at or after `end` disarms without firing."""
    await driver.start(automation("after", armed(threshold=2)))
    await driver.event("start", 0, "x.start")
    await driver.event("one", 1)
    await driver.event("at-end", 10)
    assert driver.fired() == []
    assert await driver.bucket("after") is None


async def test_expected_event_just_before_the_armed_window_end_fires(driver: Driver) -> None:
    """SEMANTICS 4.1: [start, end) includes end - 1 microsecond."""
    await driver.start(automation("after", armed(threshold=2)))
    await driver.event("start", 0, "x.start")
    await driver.event("one", 1)
    await driver.event("last-instant", 10 - US)
    assert driver.fired() == [Fired("after", "last-instant")]


async def test_expected_event_exactly_at_the_arming_event_counts(driver: Driver) -> None:
    """SEMANTICS 4.1: the armed window starts at the after event's occurred, inclusive."""
    await driver.start(automation("after", armed()))
    await driver.event("start", 5, "x.start")
    await driver.event("before", 5 - US)
    assert driver.fired() == []
    await driver.event("same-instant", 5)
    assert driver.fired() == [Fired("after", "same-instant")]


async def test_expected_event_of_an_unarmed_trigger_is_not_evaluated(driver: Driver) -> None:
    """SEMANTICS 5.2 step 4.5: an expected event for an after-trigger that is not armed
    creates nothing and fires nothing (a reactive trigger does not hold events)."""
    await driver.start(automation("after", armed()))
    await driver.event("orphan", 0)
    await driver.event("start", 1, "x.start")
    assert driver.fired() == []
    assert (await driver.bucket("after")).count == 0  # type: ignore[union-attr]


async def test_within_zero_after_trigger_fires_on_any_later_event_until_the_sweep(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1 and quirk 16.6: with within 0 the armed bucket [occ, occ] counts a later
    expected event regardless of its end (not an earlier one), and only the sweep, 60 s after
    the arming event, disarms it."""
    await driver.start(automation("after", armed(threshold=1, within=0)))
    await driver.event("start", 0, "x.start")
    await driver.event("too-early", -US)
    assert driver.fired() == []
    await driver.advance(55)
    await driver.event("late", 55)
    assert driver.fired() == [Fired("after", "late")]

    await driver.event("start-2", 55, "x.start")
    await driver.advance(59)
    assert await driver.bucket("after") is not None
    await driver.advance(1)
    assert await driver.bucket("after") is None
    await driver.event("after-sweep", 116)
    assert driver.fired() == []


async def test_within_zero_after_trigger_is_disarmed_by_a_counted_event_below_threshold(
    driver: Driver,
) -> None:
    """SEMANTICS 6 steps 6-7, checked with Prefect 3.9.1's engine: a counted event that does
    not reach the threshold finds the window [occ, occ] closed (now < end never holds), so
    the bucket is removed; with threshold 2 such a trigger never fires. (SEMANTICS 6.1 says
    later events count "until the sweep": that holds for threshold 1 only.)"""
    await driver.start(automation("after", armed(threshold=2, within=0)))
    await driver.event("start", 0, "x.start")
    await driver.event("one", 30)
    assert await driver.bucket("after") is None
    await driver.event("two", 50)
    await driver.event("start-2", 100, "x.start")
    await driver.event("same-instant", 100)
    await driver.event("same-instant-2", 100)
    assert driver.fired() == []


async def test_same_event_in_after_and_expect_with_within_zero_never_fires(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1 (Prefect's test_same_event_in_expect_and_after_never_reacts_immediately):
    each event arms at -1, counts itself to 0, and disarms."""
    trigger = reactive(after=("x.beat",), expect=("x.beat",), threshold=1, within=0)
    await driver.start(automation("beats", trigger))
    for i in range(4):
        await driver.event(f"beat-{i}", i, "x.beat")
    assert driver.fired() == []


async def test_same_event_in_after_and_expect_fires_on_every_second_event_in_the_window(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1: with within > 0 and threshold 1 the second event fires, the third
    re-arms, the fourth fires."""
    trigger = reactive(after=("x.beat",), expect=("x.beat",), threshold=1, within=60)
    await driver.start(automation("beats", trigger))
    for i in range(4):
        await driver.event(f"beat-{i}", i, "x.beat")
    assert driver.fired() == [Fired("beats", "beat-1"), Fired("beats", "beat-3")]


async def test_threshold_zero_with_after_and_empty_expect_fires_on_the_arming_event(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1 (derived): an empty expect expects the after event too; it arms at -1,
    counts itself to 0, and 0 >= 0 fires."""
    trigger = reactive(after=("x.start",), expect=(), threshold=0, within=60)
    await driver.start(automation("zero", trigger))
    await driver.event("start", 0, "x.start")
    assert driver.fired() == [Fired("zero", "start")]


# ---------------------------------------------------------------- threshold 0 quirk


async def test_threshold_zero_fires_twice_on_one_event_after_an_expired_window(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1 and quirk 16.7 (checked with Prefect 3.9.1's engine): an event after an
    expired window fires once for the old window (0 >= 0) and once more after rolling over
    and counting itself; the next window is then [40, 50), where an event fires once."""
    await driver.start(automation("zero", reactive(threshold=0, within=10)))
    await driver.event("first", 0)
    assert driver.fired() == [Fired("zero", "first")]
    await driver.event("late", 30)
    assert driver.fired() == [Fired("zero", "late"), Fired("zero", "late")]
    await driver.event("cooldown", 35)
    assert driver.fired() == []
    await driver.event("inside", 45)
    assert driver.fired() == [Fired("zero", "inside")]


async def test_threshold_zero_double_firing_has_two_distinct_firing_ids(
    driver: Driver,
) -> None:
    """Decision 3: the two firings of one event are two firings, with distinct deterministic
    ids, so downstream dedupe on `id` does not merge them."""
    await driver.start(automation("zero", reactive(threshold=0, within=10)))
    await driver.event("first", 0)
    driver.h.take_actions()
    await driver.event("late", 30)
    actions = driver.h.take_actions()
    assert len({a["firing"]["id"] for a in actions}) == 2
    assert len({a["id"] for a in actions}) == 2
