"""Decoding the next batch while Redis evaluates this one (Engine.meanwhile and
decode_ahead, docs/performance.md): a batch decoded ahead is evaluated exactly as it would
have been, its messages are not decoded twice, and a batch decoded ahead for other messages,
or a failure while decoding ahead, changes nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import svc.engine.engine as engine_module
from svc.engine.engine import Outcome
from tests.engine.support import Driver, automation, reactive


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every message body the engine decodes, in order (the state-change events the harness
    feeds back included: `ours` leaves those out)."""
    seen: list[bytes] = []
    decode = engine_module.decode_event

    def counting(body: bytes, **kwargs: Any) -> Any:
        seen.append(body)
        return decode(body, **kwargs)

    monkeypatch.setattr(engine_module, "decode_event", counting)
    return seen


def ours(decodes: list[bytes], *batches: list[bytes]) -> list[bytes]:
    mine = {body for b in batches for body in b}
    return [body for body in decodes if body in mine]


async def pairs(driver: Driver) -> None:
    """Fires on every second x.ping of a resource within a second (then cools down until
    that second's end)."""
    trigger = reactive(
        expect=("x.ping",), threshold=2, within=1, for_each=("prefect.resource.id",)
    )
    await driver.start(automation("pairs", trigger))


def batch(driver: Driver, tag: str, start: float) -> list[bytes]:
    return [
        driver.body(driver.step(f"{tag}-{i}", start + i / 10, "x.ping", resource=f"run-{i % 3}"))
        for i in range(6)
    ]


async def test_a_batch_decoded_ahead_is_evaluated_as_it_would_have_been(
    driver: Driver, decodes: list[bytes]
) -> None:
    await pairs(driver)
    engine = driver.h.engine
    first = batch(driver, "a", 0)
    log = driver.body(driver.step("log", 101, "prefect.log.write"))
    second = [*batch(driver, "b", 100), b"{not json", log]
    engine.meanwhile = lambda: engine.decode_ahead(second)
    await engine.handle_batch(first)
    engine.meanwhile = None
    # the second batch was decoded while the first was out
    assert ours(decodes, first, second) == first + second

    results = await engine.handle_batch(second)
    await driver.h.feed_back()
    assert ours(decodes, first, second) == first + second  # and not again
    assert [r.outcome for r in results] == [Outcome.evaluated] * 6 + [
        Outcome.dead_letter,
        Outcome.skipped,
    ]
    assert results[6].reason
    assert driver.fired_events() == ["a-3", "a-4", "a-5", "b-3", "b-4", "b-5"]


async def test_a_batch_decoded_ahead_for_other_messages_is_not_used(
    driver: Driver, decodes: list[bytes]
) -> None:
    await pairs(driver)
    engine = driver.h.engine
    first, second = batch(driver, "a", 0), batch(driver, "b", 100)
    engine.decode_ahead(second)
    await engine.handle_batch(first)  # not the batch decoded ahead: decoded now
    await engine.handle_batch(second)  # and that one was dropped then: decoded again
    assert ours(decodes, first, second) == second + first + second
    # equal bytes are not enough: it must be the very messages decoded ahead
    third = batch(driver, "c", 200)
    engine.decode_ahead(third)
    copies = [bytes(bytearray(body)) for body in third]
    await engine.handle_batch(copies)
    await driver.h.feed_back()
    assert ours(decodes, third, copies) == third + copies
    assert driver.fired_events() == ["a-3", "a-4", "a-5", "b-3", "b-4", "b-5", "c-3", "c-4", "c-5"]


async def test_a_failure_while_decoding_ahead_leaves_the_batch_alone(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    await pairs(driver)
    engine = driver.h.engine

    def failing() -> None:
        raise RuntimeError("no next batch today")

    engine.meanwhile = failing
    with caplog.at_level(logging.ERROR, logger="svc.engine.engine"):
        results = await engine.handle_batch(batch(driver, "a", 0))
    await driver.h.feed_back()
    assert [r.outcome for r in results] == [Outcome.evaluated] * 6
    assert driver.fired_events() == ["a-3", "a-4", "a-5"]
    assert "decoding the next batch ahead failed" in caplog.text


async def test_an_automation_loaded_or_forgotten_after_decoding_ahead_counts(
    driver: Driver, decodes: list[bytes]
) -> None:
    """The interested triggers found ahead are used only while no automation was loaded or
    forgotten since: evaluation sees the automations loaded when it runs."""
    await driver.start()
    engine = driver.h.engine
    first = batch(driver, "a", 0)
    engine.decode_ahead(first)  # nothing is interested yet
    await pairs(driver)
    await engine.handle_batch(first)
    await driver.h.feed_back()
    assert driver.fired_events() == ["a-3", "a-4", "a-5"]

    second = batch(driver, "b", 100)
    engine.decode_ahead(second)  # "pairs" is interested
    engine.forget(next(iter(engine.automations)))
    await engine.handle_batch(second)
    await driver.h.feed_back()
    assert driver.fired_events() == []


# -- the intake check of the batch decoded ahead (Engine._check_ahead) --


async def test_the_next_batch_is_checked_once_this_one_is_done_and_sees_its_marks(
    driver: Driver,
) -> None:
    """The check goes out at the end of the batch before, after its seen marks: a copy of
    one of its events in the batch decoded ahead is still a duplicate, and the batch's own
    turn asks nothing more of Redis before evaluating."""
    await pairs(driver)
    engine = driver.h.engine
    first = batch(driver, "a", 0)
    second = [first[5], *batch(driver, "b", 100)]
    engine.meanwhile = lambda: engine.decode_ahead(second)
    await engine.handle_batch(first)
    engine.meanwhile = None
    assert engine._ahead_check is not None
    await engine._ahead_check[1]  # answered before the batch's turn

    trips = engine.state.round_trips
    results = await engine.handle_batch(second)
    # the evaluation pipeline and the outboxes' drain: no intake check of its own
    assert engine.state.round_trips - trips == 2
    await driver.h.feed_back()
    assert [r.outcome for r in results] == [Outcome.duplicate] + [Outcome.evaluated] * 6
    assert driver.fired_events() == ["a-3", "a-4", "a-5", "b-3", "b-4", "b-5"]


async def test_a_leader_decoded_ahead_still_releases_followers_parked_by_the_batch_before(
    driver: Driver,
) -> None:
    """A follower parked by this batch makes its leader, in the batch decoded ahead, end a
    segment: the follower is evaluated right after the leader, before what comes next."""
    await driver.start(automation("every", reactive(expect=("x.*",))))
    engine = driver.h.engine
    first = [
        driver.body(driver.step("before", 0, "x.d")),
        driver.body(driver.step("follower", 1, "x.b", follows="leader")),
    ]
    second = [
        driver.body(driver.step("leader", 0, "x.a")),
        driver.body(driver.step("after", 2, "x.c")),
    ]
    engine.meanwhile = lambda: engine.decode_ahead(second)
    _, parked = await engine.handle_batch(first)
    engine.meanwhile = None
    assert parked.outcome == Outcome.parked
    assert engine._ahead_check is not None

    await engine.handle_batch(second)
    await driver.h.feed_back()
    assert driver.fired_events() == ["before", "leader", "follower", "after"]


async def test_a_check_made_ahead_for_other_messages_is_dropped(driver: Driver) -> None:
    await pairs(driver)
    engine = driver.h.engine
    first = batch(driver, "a", 0)
    ahead = batch(driver, "b", 100)
    engine.meanwhile = lambda: engine.decode_ahead(ahead)
    await engine.handle_batch(first)
    engine.meanwhile = None
    assert engine._ahead_check is not None

    other = [first[0], *batch(driver, "c", 200)]  # not the batch decoded ahead
    results = await engine.handle_batch(other)
    await driver.h.feed_back()
    assert engine._ahead_check is None
    assert [r.outcome for r in results] == [Outcome.duplicate] + [Outcome.evaluated] * 6
    assert driver.fired_events() == ["a-3", "a-4", "a-5", "c-3", "c-4", "c-5"]
