"""An event may hold integers of any width in its payload (SEMANTICS 2.2; Prefect keeps them
exact). orjson, which the hot path uses, cannot write one beyond 64 bits and reads one as a
float: such an event once failed its whole batch on every redelivery. It is evaluated and
fired like any other, its integers exact in what is published (svc/domain/jsonio.py)."""

from __future__ import annotations

import json
from typing import Any

from svc.engine import Outcome
from tests.engine.support import Driver, automation, compound, reactive

WIDE = {"big": 2**64, "small": -(2**63) - 1, "nested": [{"n": 2**100}], "plain": 7}


def wide_body(driver: Driver, step: dict[str, Any]) -> bytes:
    """The step's message body with the wide payload (written by Python's json: orjson
    cannot write it)."""
    document = json.loads(driver.body(step))
    document["payload"] = WIDE
    return json.dumps(document).encode()


async def deliver(driver: Driver, *bodies: bytes) -> list[Outcome]:
    results = await driver.h.engine.handle_batch(list(bodies))
    await driver.h.feed_back()
    return [r.outcome for r in results]


async def test_an_event_with_integers_beyond_64_bits_fires_with_them_exact(
    driver: Driver,
) -> None:
    await driver.start(automation("any", reactive(threshold=2, within=60)))
    outcomes = await deliver(
        driver,
        wide_body(driver, driver.step("first", 0)),
        wide_body(driver, driver.step("second", 1)),
        driver.body(driver.step("plain", 2)),
    )
    assert outcomes == [Outcome.evaluated] * 3
    actions = driver.h.take_actions()
    assert [driver.label(a["triggering_event"]["id"]) for a in actions] == ["second"]
    assert actions[0]["triggering_event"]["payload"] == WIDE
    assert actions[0]["firing"]["triggering_event"]["payload"] == WIDE


async def test_a_parked_follower_with_wide_integers_is_released_exact(driver: Driver) -> None:
    await driver.start(automation("any", reactive()))
    follower = wide_body(driver, driver.step("follower", 1, follows="leader"))
    assert await deliver(driver, follower) == [Outcome.parked]
    assert driver.h.take_actions() == []
    assert await deliver(driver, driver.body(driver.step("leader", 0))) == [Outcome.evaluated]
    actions = driver.h.take_actions()
    by_event = {driver.label(a["triggering_event"]["id"]): a for a in actions}
    assert set(by_event) == {"leader", "follower"}
    assert by_event["follower"]["triggering_event"]["payload"] == WIDE


async def test_a_composite_completed_by_a_wide_event_fires_with_it_exact(driver: Driver) -> None:
    children = [reactive(expect=("a.happened",)), reactive(expect=("b.happened",))]
    await driver.start(automation("both", compound(children, "all")))
    await deliver(driver, wide_body(driver, driver.step("a", 0, "a.happened")))
    await deliver(driver, wide_body(driver, driver.step("b", 1, "b.happened")))
    (action,) = driver.h.take_actions()
    assert driver.label(action["triggering_event"]["id"]) == "b"
    assert action["triggering_event"]["payload"] == WIDE
    fired_children = action["firing"]["triggering_firings"]
    assert [f["triggering_event"]["payload"] for f in fired_children] == [WIDE, WIDE]
