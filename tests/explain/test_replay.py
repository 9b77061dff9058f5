"""Replay: the EVENTS stream's history through automations in isolation gives the firings the
live service produced, the same output on every run, never touches live state or publishes,
and shows what an automation edited after the fact would have done over the same history."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis.asyncio

from svc.bus.history import StoredMessage, read_history
from svc.config import env_name
from svc.domain.automations import parse_automation
from svc.replay import (
    ReplayError,
    from_list,
    load_automation_file,
    parse_duration,
    parse_moment,
    render,
    replay,
)
from tests.explain.support import Running, automation, event, reactive
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(180)

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def history_events(base: datetime) -> list[dict[str, Any]]:
    """Bursts per resource: r-1 three events in 2 s, r-2 two 100 s later, r-3 one alone,
    and r-1 again two minutes on."""
    plan = [(0, "r-1"), (1, "r-1"), (2, "r-1"), (100, "r-2"), (101, "r-2"), (150, "r-3"),
            (240, "r-1"), (241, "r-1"), (242, "r-1")]
    return [
        {**event(resource=res), "id": str(uuid.uuid4()),
         "occurred": (base + timedelta(seconds=at)).isoformat()}
        for at, res in plan
    ]


def burst_automation(threshold: int) -> dict[str, Any]:
    return automation(
        reactive(threshold=threshold, within=60, for_each=["prefect.resource.id"]),
        name=f"{threshold} within a minute",
    )


async def replay_live(live: Running, document: dict[str, Any], prefix: str) -> Any:
    messages = read_history(
        live.js, live.settings.events_stream, f"{live.settings.events_subject_prefix}.>"
    )
    return await replay(live.redis, [parse_automation(document)], messages, prefix=prefix)


async def test_replay_gives_the_live_firings_deterministically_and_touches_nothing(
    live: Running,
) -> None:
    document = burst_automation(2)
    await live.admin.load(document)
    for e in history_events(datetime.now(UTC) - timedelta(minutes=10)):
        await live.publish(e)
    await live.settled()
    await eventually(lambda: live.actions_count_at_least(3), "3 triggered actions in the stream")
    live_fired = [a["triggering_event"]["id"] for a in await live.actions()]
    state = await live.dump_state()
    streams = {
        name: (await live.js.stream_info(name)).state.messages
        for name in (live.settings.events_stream, live.settings.actions_stream)
    }

    first = await replay_live(live, document, f"{live.settings.key_prefix}-replay-1")
    second = await replay_live(live, document, f"{live.settings.key_prefix}-replay-2")

    assert [f.event_id for f in first.firings] == live_fired
    assert len(live_fired) == 3  # r-1's first burst, r-2, r-1's second burst
    assert first.skipped == 3  # the live automation's own triggered events
    assert first.to_json() == second.to_json()
    assert render(first) == render(second)
    assert await live.dump_state() == state
    for name, count in streams.items():
        assert (await live.js.stream_info(name)).state.messages == count
    leftovers = [k async for k in live.redis.scan_iter(match=f"{live.settings.key_prefix}-replay*")]
    assert leftovers == []


async def test_an_automation_edited_after_the_fact_replays_over_the_same_history(
    live: Running,
) -> None:
    """The live automation fires on two events a minute; edited to three, its replay over the
    same history fires on r-1's two bursts only, and edited back it gives the live firings."""
    document = burst_automation(2)
    await live.admin.load(document)
    events = history_events(datetime.now(UTC) - timedelta(minutes=10))
    for e in events:
        await live.publish(e)
    await live.settled()
    await eventually(lambda: live.actions_count_at_least(3), "3 triggered actions in the stream")
    edited = {**document, "trigger": {**document["trigger"], "threshold": 3}}
    await live.admin.load(edited)  # the edit, after the fact

    three = await replay_live(live, edited, f"{live.settings.key_prefix}-edited")
    two = await replay_live(live, document, f"{live.settings.key_prefix}-original")

    assert [f.event_id for f in three.firings] == [events[2]["id"], events[8]["id"]]
    assert [f.event_id for f in two.firings] == [
        a["triggering_event"]["id"] for a in await live.actions()
    ]


async def test_replay_command_prints_the_same_twice(live: Running, tmp_path) -> None:
    """`python -m svc replay --automation FILE --since 1h`, on an embedded Redis of its own:
    the chart and the JSON, identical over two runs."""
    document = burst_automation(2)
    await live.admin.load(document)
    for e in history_events(datetime.now(UTC) - timedelta(minutes=10)):
        await live.publish(e)
    await live.settled()
    path = tmp_path / "automation.json"
    path.write_text(json.dumps(document))
    env = {
        **os.environ,
        "NATS_URL": live.settings.nats_url,
        **{
            env_name(f): str(getattr(live.settings, f.name))
            for f in dataclasses.fields(live.settings)
            if f.name in ("events_stream", "events_subject_prefix")
        },
    }
    env.pop("REDIS_URL", None)

    async def run(*extra: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "svc", "replay", "--automation", str(path), "--since", "1h",
            *extra, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return out.decode()

    text = await run()
    assert text == await run()
    assert ": 3 firing(s)" in text and "firings per hour (UTC):" in text
    result = json.loads(await run("--json"))
    assert len(result["firings"]) == 3
    assert sum(row["firings"] for row in result["per_hour"]) == 3
    assert result["history"]["events"] == 9
    assert result["history"]["skipped_own_events"] == 3


def stored(position: int, at_s: float, name: str, resource: str) -> StoredMessage:
    """A history message stored `at_s` after T0 (and occurred then)."""
    moment = T0 + timedelta(seconds=at_s)
    body = {"id": str(uuid.UUID(int=position + 1)), "event": name, "occurred": moment.isoformat(),
            "resource": {"prefect.resource.id": resource}}
    return StoredMessage(position + 1, moment, "events.x", orjson.dumps(body))


async def test_replay_steps_proactive_evaluation_through_event_time(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """An SLA (SEMANTICS 6.1): run r-1 completes in time, r-2 never does and fires once its
    window is over, at the proactive evaluation on the 5 s grid of the bus's clock."""
    sla = load_automation_file(orjson.dumps({
        "name": "done within a minute",
        "trigger": {"type": "event", "posture": "Proactive", "after": ["run.started"],
                    "expect": ["run.done"], "for_each": ["prefect.resource.id"], "within": 60},
        "actions": [],
    }))
    history = [stored(0, 0, "run.started", "r-1"), stored(1, 10, "run.started", "r-2"),
               stored(2, 30, "run.done", "r-1"), stored(3, 3 * 3600, "other", "x")]

    result = await replay(redis_client, [sla], from_list(history), prefix=key_prefix)

    (fired,) = result.firings
    assert fired.event_id == str(uuid.UUID(int=2))  # the arming event of r-2
    assert fired.labels == {"prefect.resource.id": "r-2"}
    assert T0 + timedelta(seconds=70) <= fired.triggered <= T0 + timedelta(seconds=80)
    assert [n for _, n in result.per_hour()] == [1, 0, 0, 0]
    assert "#" in render(result).splitlines()[-4]


async def test_until_carries_proactive_evaluation_past_the_last_event(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """A proactive trigger without `for_each` fires every window with no event (SEMANTICS
    6.1); with `until`, the clock goes on after the history ends."""
    silence = load_automation_file(orjson.dumps({
        "name": "silence",
        "trigger": {"type": "event", "posture": "Proactive", "expect": ["beat"],
                    "threshold": 1, "within": 600},
        "actions": [{"type": "do-nothing"}],
    }))
    history = [stored(0, 0, "beat", "w-1")]
    until = T0 + timedelta(hours=1)

    short = await replay(redis_client, [silence], from_list(history), prefix=key_prefix)
    long = await replay(redis_client, [silence], from_list(history), until=until,
                        prefix=key_prefix)

    assert short.firings == []
    assert 4 <= len(long.firings) <= 6
    assert all(f.firing_id for f in long.firings)
    assert long.end == until


def test_times_parse_as_durations_ago_or_timestamps() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_moment("24h", now) == now - timedelta(days=1)
    assert parse_moment("2026-03-01T10:00:00Z", now) == T0
    assert parse_moment("2026-03-01T10:00:00", now) == T0
    with pytest.raises(ReplayError):
        parse_moment("yesterday", now)


def test_an_automation_file_without_an_id_gets_the_same_one_every_time() -> None:
    text = json.dumps({"name": "n", "trigger": reactive(), "actions": []})
    assert load_automation_file(text).id == load_automation_file(text).id
