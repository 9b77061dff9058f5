"""A batch's reactive-n call is packed from what each trigger packs once and each event's own
arguments (Engine._reactive_call, RedisState.together): the very bytes hiredis packs of the
same call, whatever the events hold (svc/connections.PackedCommand)."""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio

from svc.connections import PackedCommand, _pack
from svc.domain.events import decode_event
from svc.state.store import Command, RedisState, ScriptCall
from tests.engine.support import Driver, automation, reactive


def plain_reactive_n(driver: Driver, calls: list[ScriptCall]) -> bytes:
    keys = [key for c in calls for key in c.keys]
    args = [arg for c in calls for arg in c.args]
    sha = driver.h.state.scripts.reactive_n.sha
    return _pack(("EVALSHA", sha, len(keys), *keys, *args))


async def test_the_packed_call_is_what_hiredis_packs(driver: Driver) -> None:
    await driver.start(
        automation("each", reactive(threshold=3, within=60, for_each=("prefect.resource.id",))),
        automation("after", reactive(after=("y.started",), expect=("x.happened",), within=30)),
        automation("all", reactive(expect=("*",))),
    )
    steps = [
        driver.step("plain", 1),
        driver.step("unicode", 2, resource="résumé-☃", labels={"名前": "値"}),
        driver.step("started", 3, "y.started", resource="r-2"),
        driver.step("follower", 4, follows="plain", related=[
            {"prefect.resource.id": "rel", "prefect.resource.role": "rôle"}
        ]),
    ]
    engine = driver.h.engine
    now = datetime(2026, 6, 1, tzinfo=UTC)
    now_us = 1_780_272_000_000_000
    calls = []
    for step in steps:
        event = decode_event(driver.body(step), received=now)
        for trigger in engine._look_up(event)[1]:
            calls.append(engine.reactive_call(trigger, event, now_us))
    assert len(calls) >= 6 and all(c.packed is not None for c in calls)
    (packed,) = engine.state.together(calls)
    assert isinstance(packed, Command) and packed.args[0] == "EVALSHA"
    assert isinstance(packed.args[1], PackedCommand)
    assert packed.args[1].resp == plain_reactive_n(driver, calls)


async def test_a_client_that_cannot_send_it_gets_the_plain_call(
    driver: Driver, redis_url: str
) -> None:
    """A plain redis-py client packs every argument itself: it is sent reactive-n unpacked."""
    await driver.start(automation("all", reactive(expect=("*",))))
    engine = driver.h.engine
    now = datetime(2026, 6, 1, tzinfo=UTC)
    events = [decode_event(driver.body(driver.step(f"e{n}", n)), received=now) for n in range(2)]
    calls = [engine.reactive_call(engine._look_up(e)[1][0], e, 0) for e in events]
    plain = redis.asyncio.Redis.from_url(redis_url)
    try:
        (call,) = RedisState(plain, driver.h.state.keys).together(calls)
        assert isinstance(call, ScriptCall) and call.script.name == "reactive-n"
    finally:
        await plain.aclose()
