"""Explain after the fact: the real service records each evaluation's decisions in the bounded
decisions stream, `python -m svc why` lists them readably, the evaluation spans carry the same
data, and a setting turns the records off."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio
from nats.js.errors import NotFoundError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from svc.bus.decisions import decode_message, encode_messages, read_decisions
from svc.config import env_name
from svc.conformance import InProcess
from svc.engine.engine import Decision
from tests.engine.support import automation as labelled
from tests.engine.support import reactive as labelled_reactive
from tests.explain.support import (
    Running,
    automation,
    event,
    reactive,
    running_service,
    settings_for,
)
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(120)


async def records_of(live: Running, automation_id: str, **kwargs):
    return [
        r async for r in read_decisions(live.js, live.settings, automation_id, **kwargs)
    ]


async def test_each_evaluation_records_its_decisions_with_the_bucket_before_and_after(
    live: Running,
) -> None:
    stored = await live.admin.load(
        automation(reactive(threshold=2, within=60, for_each=["prefect.resource.id"]))
    )
    first = await live.publish(event())
    second = await live.publish(event())
    await live.settled()

    async def both_recorded() -> bool:
        return len(await records_of(live, stored.id)) == 2

    await eventually(both_recorded)
    one, two = await records_of(live, stored.id)
    assert (one.event_id, one.decision, one.before) == (first, "counted", None)
    assert one.after is not None and one.after[2] == 1
    assert one.key == ("r-1",) and one.event_name == "x.happened"
    assert (two.event_id, two.decision) == (second, "counted fired rolled_over")
    assert two.before == one.after
    assert two.after is not None and two.after[0] == one.after[1] and two.after[2] == 0
    (only,) = await records_of(live, stored.id, event_id=first)
    assert only == one
    info = await live.js.stream_info(live.settings.decisions_stream)
    assert info.config.max_age == live.settings.decisions_max_age_s
    assert info.config.max_bytes == live.settings.decisions_max_bytes


async def test_uncovered_candidates_proactive_firings_and_composites_are_recorded(
    live: Running,
) -> None:
    """'not_covered' (a candidate by name, refused by its resources), a proactive window that
    closed short of its threshold, and a child firing applied to its compound."""
    picky = await live.admin.load(automation(reactive(match={"prefect.resource.id": "ok-*"})))
    both = await live.admin.load(
        automation({"type": "compound", "require": "all", "within": 600,
                    "triggers": [reactive("a.happened"), reactive("b.happened")]})
    )
    silence = await live.admin.load(
        automation({"type": "event", "posture": "Proactive", "expect": ["never.happens"],
                    "threshold": 1, "within": 10})
    )
    await live.publish(event(resource="bad-1"))
    await live.publish(event("a.happened"))
    await live.settled()

    async def recorded() -> bool:
        return (
            len(await records_of(live, picky.id)) == 1
            and len(await records_of(live, both.id)) == 2
            and any(r.path == "proactive" for r in await records_of(live, silence.id))
        )

    await eventually(recorded)
    (refused,) = await records_of(live, picky.id)
    assert refused.decision == "not_covered"
    child, composite = await records_of(live, both.id)
    assert child.decision == "counted fired"
    assert (composite.path, composite.decision) == ("composite", "stored")
    assert composite.child_trigger_id == child.trigger_id
    window = next(r for r in await records_of(live, silence.id) if r.path == "proactive")
    assert window.decision == "window_closed fired"
    assert window.before is not None and window.before[2] == 0


async def test_why_command_lists_what_happened_and_why(live: Running) -> None:
    stored = await live.admin.load(automation(reactive(threshold=2, within=60), name="twice"))
    first = await live.publish(event())
    await live.publish(event())
    await live.settled()

    async def recorded() -> bool:
        return len(await records_of(live, stored.id)) == 2

    await eventually(recorded)
    env = {
        **os.environ,
        "NATS_URL": live.settings.nats_url,
        **{
            env_name(f): str(getattr(live.settings, f.name))
            for f in dataclasses.fields(live.settings)
            if f.name in ("grpc_address", "decisions_stream", "decisions_subject_prefix")
        },
    }

    async def why(*extra: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "svc", "why", "--automation", stored.id, *extra,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return out.decode()

    text = await why("--since", "10m")
    assert f"event x.happened {first}" in text
    assert "trigger  [counted]  counts the event" in text  # the path, from the admin API
    assert "[counted fired rolled_over]  counts the event, then FIRES" in text
    assert "count 1 of 2 -> " in text
    lines = (await why("--json", "--event-id", first)).splitlines()
    assert [json.loads(line)["decision"] for line in lines] == ["counted"]
    nothing = await why("--since", (datetime.now(UTC) + timedelta(hours=1)).isoformat())
    assert "no decision recorded" in nothing


async def test_decision_records_can_be_turned_off(
    nats_url: str, redis_url: str, suffix: str
) -> None:
    settings = settings_for(nats_url, redis_url, suffix, decisions_enabled=False)
    async with running_service(settings) as live:
        stored = await live.admin.load(automation(reactive()))
        await live.publish(event())
        await live.settled()
        await eventually(lambda: live.actions_count_at_least(1), "a triggered action in the stream")
        assert not live.service.engine.record_decisions  # type: ignore[union-attr]
        with pytest.raises(NotFoundError):
            await live.js.stream_info(settings.decisions_stream)
        assert await records_of(live, stored.id) == []


async def test_the_evaluation_span_carries_the_bucket_before_and_after(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness = InProcess(redis_client, key_prefix)
    harness.engine.tracer = provider.get_tracer("test")
    await harness.start([labelled("spanned", labelled_reactive(threshold=3, within=60))])
    await harness.publish_event({"event": "x.happened", "at": 0, "resource": {"prefect.resource.id": "r"}})
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "evaluate event"]
    (decision,) = [e for e in span.events if e.name == "trigger decision"]
    assert decision.attributes["decision"] == "counted"
    assert decision.attributes["bucket.before"] == ""
    start, end, count = decision.attributes["bucket.after"].split("|")
    assert int(count) == 1 and int(end) - int(start) == (15 * 60 + 60) * 1_000_000
    assert decision.attributes["bucketing_key"] == "[]"


def test_records_are_compact_and_round_trip() -> None:
    """Short keys; what is absent is left out; one message per automation."""
    from uuid import uuid4

    a, b, t = uuid4(), uuid4(), uuid4()
    decisions = [
        Decision(a, t, "counted", event_id=uuid4(), event_name="x", occurred_us=5, key=("k",),
                 before=(1, 2, 0), after=(1, 2, 1)),
        Decision(a, t, "window_closed fired", key=(), before=(1, 2, 0), path="proactive"),
        Decision(b, t, "stored", path="composite", child_trigger_id=uuid4()),
    ]
    messages = encode_messages(decisions, wall_us=7)
    assert [m[0] for m in messages] == [str(a), str(b)]
    body = json.loads(messages[0][1])
    assert set(body) == {"v", "a", "w", "r"}
    assert set(body["r"][0]) == {"t", "d", "e", "n", "o", "k", "b", "x"}
    assert set(body["r"][1]) == {"t", "d", "p", "b"}
    decoded = decode_message(messages[0][1]) + decode_message(messages[1][1])
    assert [(r.decision, r.path, r.before, r.after) for r in decoded] == [
        ("counted", "reactive", (1, 2, 0), (1, 2, 1)),
        ("window_closed fired", "proactive", (1, 2, 0), None),
        ("stored", "composite", None, None),
    ]
