"""Proactive EventTriggers, one test per behaviour of SEMANTICS 6.1, with the held `expect`
events of 6.2, the restart special case of 6 step 6 and proactive evaluation of 8. Time
moves only through the harness's fake clock, in the service's 5 s ticks."""

from __future__ import annotations

from tests.engine.support import LOOKBACK_S, Driver, Fired, at_us, automation, proactive

RUN = (("prefect.resource.id", "run-1"),)


def sla(threshold: int = 1, within: float = 60, **kwargs: object) -> dict:
    """After a run starts, expect it to complete within W, per run (the classic SLA)."""
    return proactive(
        after=("run.started",), expect=("run.completed",), threshold=threshold,
        within=within, for_each=("prefect.resource.id",), **kwargs,  # type: ignore[arg-type]
    )


def heartbeat(threshold: int = 1, within: float = 30, expect: tuple[str, ...] = ("hb",)) -> dict:
    """After a heartbeat, expect another (or `done`) within W, per run."""
    return proactive(
        after=("hb",), expect=expect, threshold=threshold, within=within,
        for_each=("prefect.resource.id",),
    )


async def assert_disarmed(driver: Driver, label: str, then_advance_s: float) -> None:
    """`label`'s trigger keeps no bucket, and nothing fires as the clock moves on."""
    assert await driver.bucket(label) is None
    await driver.advance(then_advance_s)
    assert driver.fired() == []


# ---------------------------------------------------------------- with after (SLA)


async def test_sla_after_event_arms_a_window_with_itself_as_last_event(driver: Driver) -> None:
    """SEMANTICS 6.1, proactive with after: the after event arms [occ, occ + W)."""
    await driver.start(automation("sla", sla()))
    await driver.event("started", 0, "run.started", resource="run-1")
    bucket = await driver.bucket("sla")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count, bucket.last_event) == (0, 60, 0, "started")


async def test_sla_fires_exactly_at_the_window_end_not_one_tick_before(driver: Driver) -> None:
    """SEMANTICS 6 step 4 and 8: proactive evaluation at as_of >= end with count < threshold
    fires (triggering event = the arming event) and disarms; at end - 5 s it does not."""
    await driver.start(automation("sla", sla()))
    await driver.event("started", 0, "run.started", resource="run-1")
    await driver.advance(55)
    assert driver.fired() == []
    await driver.advance(5)
    assert driver.fired() == [Fired("sla", "started", RUN)]
    await assert_disarmed(driver, "sla", then_advance_s=120)


async def test_sla_fires_at_the_first_tick_at_or_after_an_unaligned_end(driver: Driver) -> None:
    """SEMANTICS 8 step 5: the next run is lowered to the earliest bucket end, so a window
    ending at 62 fires at the 65 s tick, not at 60."""
    await driver.start(automation("sla", sla()))
    await driver.event("started", 2, "run.started", resource="run-1")
    await driver.advance(60)
    assert driver.fired() == []
    await driver.advance(5)
    assert driver.fired() == [Fired("sla", "started", RUN)]


async def test_sla_expected_event_in_the_window_satisfies_it_and_it_is_removed(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1 and 8 step 4: reaching the threshold satisfies the bucket; the next
    proactive evaluation deletes it without firing."""
    await driver.start(automation("sla", sla()))
    await driver.event("started", 0, "run.started", resource="run-1")
    await driver.event("completed", 10, "run.completed", resource="run-1")
    await driver.advance(55)
    assert (await driver.bucket("sla")).count == 1  # type: ignore[union-attr]
    await driver.advance(5)
    await assert_disarmed(driver, "sla", then_advance_s=60)


async def test_sla_below_threshold_fires_with_the_latest_counted_event(driver: Driver) -> None:
    """SEMANTICS 8 notes: a proactive firing's triggering event is the bucket's last event,
    the latest counted event when there is one."""
    await driver.start(automation("sla", sla(threshold=2)))
    await driver.event("started", 0, "run.started", resource="run-1")
    await driver.event("completed", 10, "run.completed", resource="run-1")
    await driver.advance(60)
    assert driver.fired() == [Fired("sla", "completed", RUN)]


async def test_sla_expected_event_at_the_window_end_fires_on_the_reactive_path(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1 (derived): an expected event with occurred >= end, processed before the
    proactive evaluation ran, fires the trigger itself and disarms it."""
    await driver.start(automation("sla", sla()))
    await driver.event("started", 0, "run.started", resource="run-1")
    await driver.event("too-late", 60, "run.completed", resource="run-1")
    assert driver.fired() == [Fired("sla", "too-late", RUN)]
    await assert_disarmed(driver, "sla", then_advance_s=120)


async def test_sla_expected_event_just_before_the_window_end_satisfies_it(
    driver: Driver,
) -> None:
    """SEMANTICS 4.1: end - 1 microsecond is still inside [start, end)."""
    await driver.start(automation("sla", sla()))
    await driver.event("started", 0, "run.started", resource="run-1")
    await driver.event("just-in-time", 60 - 0.000001, "run.completed", resource="run-1")
    await driver.advance(120)
    assert driver.fired() == []


async def test_after_event_after_the_closed_window_does_not_rearm(driver: Driver) -> None:
    """SEMANTICS 6.1 and quirk 16.9: an after-only event that finds the expired window only
    ensures it (no change); the proactive evaluation fires the old window, with the old
    arming event, and nothing is re-armed."""
    await driver.start(automation("sla", sla()))
    await driver.event("started", 0, "run.started", resource="run-1")
    await driver.event("started-again", 70, "run.started", resource="run-1")
    bucket = await driver.bucket("sla")
    assert bucket is not None and (bucket.start, bucket.end) == (0, 60)
    await driver.advance(60)
    assert driver.fired() == [Fired("sla", "started", RUN)]
    await driver.advance(300)
    assert driver.fired() == []


async def test_after_and_expected_event_after_the_closed_window_fires_it_without_rearming(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1 and quirk 16.9: an event both `after` and `expect` arriving after an
    un-fired expired window fires it (triggering event: itself) and is not used to re-arm."""
    await driver.start(automation("beats", heartbeat()))
    await driver.event("hb-0", 0, "hb", resource="run-1")
    await driver.event("hb-late", 40, "hb", resource="run-1")
    assert driver.fired() == [Fired("beats", "hb-late", RUN)]
    await assert_disarmed(driver, "beats", then_advance_s=300)


async def test_proactive_evaluation_runs_on_the_events_clock_when_behind(
    driver: Driver,
) -> None:
    """SEMANTICS 8 step 1 and 11: as_of = wall + offset. An arming event that occurred 100 s
    before it was processed makes the offset -100 s, so its window [-100, -40) fires at wall
    time 60, not as soon as the wall clock passes -40."""
    await driver.start(automation("sla", sla()))
    await driver.event("old-start", -100, "run.started", resource="run-1")
    assert await driver.h.state.clock_offset(at_us(0)) == -100_000_000
    # reloading an unchanged automation keeps its state and clears its next proactive run,
    # so the trigger is evaluated at every tick from now on
    await driver.load(automation("sla", sla()))
    await driver.advance(55)
    assert driver.fired() == []
    await driver.advance(5)
    assert driver.fired() == [Fired("sla", "old-start", RUN)]


# ---------------------------------------------------------------- the restart special case


async def test_heartbeat_restart_pushes_the_deadline_forward(driver: Driver) -> None:
    """SEMANTICS 6 step 6: an event both `after` and `expect` that satisfies the window
    restarts it from its own occurred; silence then fires W after the last heartbeat."""
    await driver.start(automation("beats", heartbeat()))
    for at in (0, 10, 20):
        await driver.event(f"hb-{at}", at, "hb", resource="run-1")
    bucket = await driver.bucket("beats")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count, bucket.last_event) == (20, 50, 0, "hb-20")
    assert bucket.last_operation == "start_new_bucket[update]"
    await driver.advance(45)
    assert driver.fired() == []
    await driver.advance(5)
    assert driver.fired() == [Fired("beats", "hb-20", RUN)]


async def test_restart_keeps_an_expect_only_last_event_not_earlier_than_the_restarting_one(
    driver: Driver,
) -> None:
    """SEMANTICS 6 step 6 (3.9; checked with Prefect 3.9.1's engine): `done` (occurred 15)
    was counted before `hb` (occurred 10) restarted the window; the restarted window keeps
    `done` as its last event, and counts it from the held events (count 1 of 2), so it fires
    at 40 with `done` as triggering event."""
    await driver.start(automation("beats", heartbeat(threshold=2, expect=("hb", "done"))))
    await driver.event("hb-0", 0, "hb", resource="run-1")
    await driver.event("done-15", 15, "done", resource="run-1")
    await driver.event("hb-10", 10, "hb", resource="run-1")
    bucket = await driver.bucket("beats")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count, bucket.last_event) == (10, 40, 1, "done-15")
    await driver.advance(35)
    assert driver.fired() == []
    await driver.advance(5)
    assert driver.fired() == [Fired("beats", "done-15", RUN)]


async def test_restart_takes_the_restarting_event_when_the_last_one_is_earlier(
    driver: Driver,
) -> None:
    """SEMANTICS 6 step 6: `done` occurred (5) before the restarting `hb` (10), so the new
    window [10, 40) neither keeps it as last event nor counts it; it fires with `hb`."""
    await driver.start(automation("beats", heartbeat(threshold=2, expect=("hb", "done"))))
    await driver.event("hb-0", 0, "hb", resource="run-1")
    await driver.event("done-5", 5, "done", resource="run-1")
    await driver.event("hb-10", 10, "hb", resource="run-1")
    bucket = await driver.bucket("beats")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count, bucket.last_event) == (10, 40, 0, "hb-10")
    await driver.advance(40)
    assert driver.fired() == [Fired("beats", "hb-10", RUN)]


async def test_restart_never_keeps_an_after_event_as_last_event(driver: Driver) -> None:
    """SEMANTICS 6 step 6: only an expected, non-`after` previous last event is kept; a
    previous heartbeat (both after and expect) at the same instant is replaced."""
    await driver.start(automation("beats", heartbeat()))
    await driver.event("hb-0", 0, "hb", resource="run-1")
    await driver.event("hb-10-a", 10, "hb", resource="run-1")
    await driver.event("hb-10-b", 10, "hb", resource="run-1")
    bucket = await driver.bucket("beats")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.last_event) == (10, 40, "hb-10-b")


async def test_heartbeat_older_than_the_restarted_window_is_too_early(driver: Driver) -> None:
    """SEMANTICS 6 step 2: after a restart at 20, a heartbeat that occurred at 10 falls before
    the window and changes nothing."""
    await driver.start(automation("beats", heartbeat()))
    await driver.event("hb-0", 0, "hb", resource="run-1")
    await driver.event("hb-20", 20, "hb", resource="run-1")
    await driver.event("hb-10", 10, "hb", resource="run-1")
    bucket = await driver.bucket("beats")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count, bucket.last_event) == (20, 50, 0, "hb-20")


# ---------------------------------------------------------------- held expect events (6.2)


async def test_expect_evaluated_before_its_after_event_is_counted_when_the_window_opens(
    driver: Driver,
) -> None:
    """SEMANTICS 6.2 (oracle sample 07): a completion processed before the start that opens
    its window is held, and the window starts with it counted, so the SLA does not fire;
    a run that only started fires."""
    await driver.start(automation("sla", sla()))
    await driver.event("c-completed", 5, "run.completed", resource="run-c")
    await driver.event("c-started", 0, "run.started", resource="run-c")
    await driver.event("d-started", 0, "run.started", resource="run-d")
    buckets = await driver.buckets("sla")
    assert buckets['["run-c"]'].count == 1
    assert buckets['["run-d"]'].count == 0
    await driver.advance(60)
    assert driver.fired() == [Fired("sla", "d-started", (("prefect.resource.id", "run-d"),))]


async def test_held_event_outside_the_window_that_opens_later_is_not_counted(
    driver: Driver,
) -> None:
    """SEMANTICS 6.2: only held events with start <= occurred < end count; one at exactly
    the window's end does not."""
    await driver.start(automation("sla", sla()))
    await driver.event("at-end", 60, "run.completed", resource="run-1")
    await driver.event("before", -0.000001, "run.completed", resource="run-1")
    await driver.event("started", 0, "run.started", resource="run-1")
    assert (await driver.bucket("sla")).count == 0  # type: ignore[union-attr]
    await driver.event("at-start", 0, "run.completed", resource="run-1")
    assert (await driver.bucket("sla")).count == 1  # type: ignore[union-attr]


async def held_occurred(driver: Driver, automation_label: str) -> list[float]:
    """The occurred times (seconds after T0) of the held events of a trigger, in order."""
    from tests.engine.support import seconds_of

    members = await driver.client.zrange(driver.keys(automation_label).held, 0, -1)
    return [seconds_of(int(m.split(b"\0")[1])) for m in members]


async def test_held_events_older_than_the_horizon_before_the_newest_are_dropped(
    driver: Driver,
) -> None:
    """SEMANTICS 6.2 bounds: when an event is held, held events of its key that occurred
    more than max(2 x 15 min, within) before the newest held one are dropped (strictly)."""
    await driver.start(automation("sla", sla()))
    horizon = 2 * LOOKBACK_S
    await driver.event("c-0", 0, "run.completed", resource="run-1")
    await driver.event("c-edge", horizon, "run.completed", resource="run-1")
    assert await held_occurred(driver, "sla") == [0, horizon]
    await driver.event("c-past", horizon + 1, "run.completed", resource="run-1")
    assert await held_occurred(driver, "sla") == [horizon, horizon + 1]
    # the dropped event no longer counts for a window that opens over it
    await driver.event("started", -1, "run.started", resource="run-1")
    assert (await driver.bucket("sla")).count == 0  # type: ignore[union-attr]


async def test_held_event_horizon_is_at_least_within(driver: Driver) -> None:
    """SEMANTICS 6.2 bounds: a window longer than 30 min keeps held events `within` back."""
    await driver.start(automation("sla", sla(within=3600)))
    await driver.event("c-0", 0, "run.completed", resource="run-1")
    await driver.event("c-3600", 3600, "run.completed", resource="run-1")
    assert await held_occurred(driver, "sla") == [0, 3600]
    await driver.event("c-3601", 3601, "run.completed", resource="run-1")
    assert await held_occurred(driver, "sla") == [3600, 3601]


async def test_each_slot_keeps_only_its_first_and_last_threshold_held_events(
    driver: Driver,
) -> None:
    """SEMANTICS 6.2 bounds: within each epoch-aligned slot `within` wide only the earliest
    and latest `threshold` held events are kept (T0 is aligned to 60 s)."""
    await driver.start(automation("sla", sla(threshold=2)))
    for at in (10, 50, 20, 40, 30):
        await driver.event(f"c-{at}", at, "run.completed", resource="run-1")
    assert await held_occurred(driver, "sla") == [10, 20, 40, 50]
    await driver.event("next-slot", 60, "run.completed", resource="run-1")
    assert await held_occurred(driver, "sla") == [10, 20, 40, 50, 60]


async def test_held_events_are_swept_30_min_after_they_were_held(driver: Driver) -> None:
    """SEMANTICS 6.2: periodic evaluation deletes held events held (wall clock) more than
    30 min ago, unless a bucket of their key is still open."""
    await driver.start(automation("sla", sla()))
    await driver.event("c-0", 0, "run.completed", resource="run-1")
    await driver.advance(2 * LOOKBACK_S)
    assert await held_occurred(driver, "sla") == [0]
    await driver.advance(5)
    assert await held_occurred(driver, "sla") == []


async def test_held_events_of_a_key_with_an_open_bucket_are_not_swept(driver: Driver) -> None:
    """SEMANTICS 6.2: a bucket of the key with end > now keeps its held events."""
    await driver.start(automation("sla", sla(threshold=2, within=7200)))
    await driver.event("started", 0, "run.started", resource="run-1")
    await driver.event("c-10", 10, "run.completed", resource="run-1")
    await driver.event("c-other", 10, "run.completed", resource="run-2")
    await driver.advance(2 * LOOKBACK_S + 5)
    assert await held_occurred(driver, "sla") == [10]  # run-2's is gone, run-1's stays
    assert (await driver.buckets("sla"))['["run-1"]'].count == 1


async def test_a_held_event_delivered_again_is_not_counted_twice(driver: Driver) -> None:
    """SEMANTICS 6.2 and Decision 3: an event already held is not evaluated again."""
    await driver.start(automation("sla", sla(threshold=2)))
    step = driver.step("c-5", 5, "run.completed", resource="run-1")
    await driver.h.publish_event(step)
    await driver.event("started", 0, "run.started", resource="run-1")
    await driver.h.publish_event(step)
    assert (await driver.bucket("sla")).count == 1  # type: ignore[union-attr]


# ---------------------------------------------------------------- without after, for_each


def absence(threshold: int = 2, within: float = 30) -> dict:
    return proactive(
        expect=("x.ping",), threshold=threshold, within=within,
        for_each=("prefect.resource.id",),
    )


async def test_first_event_of_a_key_opens_a_backdated_window_counting_itself(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1, proactive without after, with for_each: [occ - 15 min, occ + W), 1."""
    await driver.start(automation("pings", absence()))
    await driver.event("ping", 7, "x.ping", resource="run-1")
    bucket = await driver.bucket("pings")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count) == (7 - LOOKBACK_S, 37, 1)


async def test_key_below_threshold_fires_at_the_end_then_every_window_of_silence(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1: at the end, count < threshold fires with the last event, and a new
    window [max(end, as_of), +W) with count 0 and no last event starts, so silence fires
    every W."""
    await driver.start(automation("pings", absence()))
    await driver.event("ping", 0, "x.ping", resource="run-1")
    await driver.advance(25)
    assert driver.fired() == []
    await driver.advance(5)
    assert driver.fired() == [Fired("pings", "ping", RUN)]
    bucket = await driver.bucket("pings")
    assert bucket is not None
    assert (bucket.start, bucket.end, bucket.count, bucket.last_event) == (30, 60, 0, None)
    await driver.advance(30)
    assert driver.fired() == [Fired("pings", None, RUN)]
    await driver.advance(30)
    assert driver.fired() == [Fired("pings", None, RUN)]


async def test_satisfied_key_is_deleted_at_the_next_evaluation_and_never_fires(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1 and 8 step 4: a satisfied bucket is deleted; the key then has no bucket
    until its next event."""
    await driver.start(automation("pings", absence()))
    await driver.event("p1", 0, "x.ping", resource="run-1")
    await driver.event("p2", 1, "x.ping", resource="run-1")
    await driver.advance(25)
    assert await driver.bucket("pings") is not None
    await driver.advance(5)
    await assert_disarmed(driver, "pings", then_advance_s=120)


async def test_threshold_one_absence_trigger_with_for_each_never_fires(driver: Driver) -> None:
    """SEMANTICS 6.1: the event that creates a key's bucket already satisfies it."""
    await driver.start(automation("pings", absence(threshold=1)))
    await driver.event("p1", 0, "x.ping", resource="run-1")
    await driver.advance(300)
    assert driver.fired() == []


# ---------------------------------------------------------------- global bucket


async def test_global_bucket_fires_every_window_without_events(driver: Driver) -> None:
    """SEMANTICS 6.1 (Prefect's 1-in-30 s test): with no events the trigger fires at +30 and
    +60 with no triggering event, never at the tick before."""
    trigger = proactive(expect=("x.ping",), threshold=1, within=30)
    await driver.start(automation("quiet", trigger))
    await driver.advance(25)
    assert driver.fired() == []
    await driver.advance(5)
    assert driver.fired() == [Fired("quiet", None)]
    await driver.advance(25)
    assert driver.fired() == []
    await driver.advance(5)
    assert driver.fired() == [Fired("quiet", None)]


async def test_global_bucket_counts_events_and_fires_with_the_last_one(driver: Driver) -> None:
    """SEMANTICS 6.1: events count into the ensured global bucket [as_of, as_of + W); below
    threshold at the end it fires with its last event."""
    trigger = proactive(expect=("x.ping",), threshold=2, within=30)
    await driver.start(automation("quiet", trigger))
    bucket = await driver.bucket("quiet")
    assert bucket is not None and (bucket.start, bucket.end, bucket.count) == (0, 30, 0)
    await driver.event("ping", 10, "x.ping")
    await driver.advance(30)
    assert driver.fired() == [Fired("quiet", "ping")]


async def test_satisfied_global_bucket_is_replaced_at_the_next_evaluation(
    driver: Driver,
) -> None:
    """SEMANTICS 8 steps 3-5: a satisfied global bucket is removed and the next evaluation
    ensures a fresh window from its own as_of."""
    trigger = proactive(expect=("x.ping",), threshold=1, within=30)
    await driver.start(automation("quiet", trigger))
    await driver.event("ping", 10, "x.ping")
    await driver.advance(30)
    assert driver.fired() == []
    await driver.advance(30)
    bucket = await driver.bucket("quiet")
    assert bucket is not None and (bucket.start, bucket.end, bucket.count) == (60, 90, 0)
    await driver.advance(30)
    assert driver.fired() == [Fired("quiet", None)]


async def test_after_trigger_without_for_each_is_self_armed_by_proactive_evaluation(
    driver: Driver,
) -> None:
    """SEMANTICS 6.1 and quirk 16.8 (checked with Prefect 3.9.1's engine): the global bucket
    is ensured even with `after`, so the trigger fires at +30 with no event at all; the
    fired bucket is removed and the next one is ensured at the next run (+60), so it fires
    again at +90 and +150."""
    trigger = proactive(after=("x.start",), expect=("x.done",), threshold=1, within=30)
    await driver.start(automation("armed", trigger))
    await driver.advance(25)
    assert driver.fired() == []
    await driver.advance(5)
    assert driver.fired() == [Fired("armed", None)]
    await driver.advance(55)
    assert driver.fired() == []
    await driver.advance(5)
    assert driver.fired() == [Fired("armed", None)]
    await driver.advance(60)
    assert driver.fired() == [Fired("armed", None)]
