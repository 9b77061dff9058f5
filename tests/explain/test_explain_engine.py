"""Explain is the engine's answer: for every event of varied scenarios, what explain predicts
(before the event is published) is what the engine then decides, and explaining changes no
key of the state, byte for byte (SEMANTICS 5.2, 6, 6.2, 7.2)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
import pytest
import redis.asyncio

from svc.conformance import InProcess, label_uuid, scenario_event
from svc.domain.events import decode_event
from svc.explain import explain_event, render
from tests.engine.support import automation, compound, proactive, reactive, sequence

SCENARIOS: dict[str, tuple[dict[str, Any], list[tuple[float, str, str]]]] = {
    # name: (trigger, [(at seconds, event name, resource id), ...])
    "reactive threshold with cooldown and roll-over": (
        reactive(threshold=2, within=10, for_each=("prefect.resource.id",)),
        [(0, "x.happened", "r-1"), (1, "x.happened", "r-1"), (2, "x.happened", "r-1"),
         (5, "x.happened", "r-2"), (25, "x.happened", "r-1"), (26, "x.happened", "r-1"),
         (-1000, "x.happened", "r-1")],
    ),
    "immediate, unexpected and uncovered events": (
        reactive(expect=("x.*",), match={"prefect.resource.id": "r-*"}),
        [(0, "x.a", "r-1"), (1, "y.a", "r-1"), (2, "x.b", "q-1"), (3, "x.", "r-1")],
    ),
    "reactive after": (
        reactive(after=("run.started",), expect=("run.failed",), within=30, threshold=1),
        [(0, "run.failed", "r-1"), (1, "run.started", "r-1"), (2, "run.started", "r-1"),
         (10, "run.failed", "r-1"), (50, "run.failed", "r-1")],
    ),
    "proactive SLA holding events": (
        proactive(after=("run.started",), expect=("run.done",), within=60,
                  for_each=("prefect.resource.id",)),
        [(5, "run.done", "r-1"), (0, "run.started", "r-1"), (3, "run.started", "r-2"),
         (80, "run.done", "r-2")],
    ),
    "heartbeat restart": (
        proactive(after=("beat",), expect=("beat",), within=30),
        [(0, "beat", "w-1"), (10, "beat", "w-1"), (20, "beat", "w-1")],
    ),
    "compound": (
        compound([reactive(expect=("a",)), reactive(expect=("b",))], "all", within=60),
        [(0, "a", "r-1"), (1, "a", "r-1"), (2, "b", "r-1"), (3, "b", "r-1"), (200, "a", "r-1")],
    ),
    "nested sequence": (
        sequence(
            [compound([reactive(expect=("a",)), reactive(expect=("b",))], "any"),
             reactive(expect=("c",))],
            within=60,
        ),
        [(0, "c", "r-1"), (1, "b", "r-1"), (2, "c", "r-1")],
    ),
}


async def dump(client: redis.asyncio.Redis, prefix: str) -> dict[bytes, bytes]:
    keys = sorted([k async for k in client.scan_iter(match=f"{prefix}:*")])
    return {k: await client.dump(k) for k in keys}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_explain_predicts_what_the_engine_decides_and_changes_nothing(
    name: str, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    trigger, steps = SCENARIOS[name]
    harness = InProcess(redis_client, key_prefix)
    await harness.start([automation("explained", trigger)])
    harness.engine.record_decisions = True
    automation_id = UUID(label_uuid("explained"))
    for position, (at, event_name, resource) in enumerate(steps):
        step = {"id": f"e{position}", "event": event_name, "at": at,
                "resource": {"prefect.resource.id": resource}}
        body = orjson.dumps(scenario_event(step, harness.clock.now()))
        event = decode_event(body, received=harness.clock.now())
        before = await dump(redis_client, key_prefix)

        explained = await explain_event(
            harness.engine, harness.engine.automations[automation_id].automation, event
        )

        assert await dump(redis_client, key_prefix) == before, render(explained)
        harness.engine.decisions.clear()
        await harness.engine.handle_message(body)
        decided = {
            d.trigger_id: d.steps
            for d in harness.engine.decisions
            if d.path == "reactive" and d.steps != "not_covered"
        }
        predicted = {
            t.trigger.id: t.decision for t in explained.triggers if t.interested
        }
        assert predicted == decided, render(explained)
        # a candidate by name that the engine found not covered is not interested here either
        rejected = {d.trigger_id for d in harness.engine.decisions if d.steps == "not_covered"}
        assert rejected <= {t.trigger.id for t in explained.triggers if not t.interested}
        composites = [
            (d.trigger_id, d.steps) for d in harness.engine.decisions if d.path == "composite"
        ]
        predicted_composites = [
            (c.trigger.id, step)
            for c in reversed(explained.composites)
            for step in c.decision.split()
            if c.trigger.num_expected_firings > 1
        ]
        assert sorted(predicted_composites) == sorted(composites), render(explained)
        await harness.feed_back()
        await harness.advance(1)


async def test_explain_of_a_trigger_with_many_buckets_copies_one(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """The dry run copies the slice reactive-7 reads (one bucket, one seen mark, one key's
    held events), not the trigger's whole state, and removes the copy in the same
    transaction."""
    harness = InProcess(redis_client, key_prefix)
    await harness.start(
        [automation("many", reactive(threshold=5, within=600, for_each=("prefect.resource.id",)))]
    )
    for i in range(50):
        await harness.publish_event(
            {"event": "x.happened", "at": 0, "resource": {"prefect.resource.id": f"r-{i}"}}
        )
    monitor: list[Any] = []
    original = harness.state.call_atomically

    async def spy(calls: Any) -> Any:
        results = await original(calls)
        monitor.append(results)
        return results

    harness.state.call_atomically = spy  # type: ignore[method-assign]
    step = {"event": "x.happened", "at": 1, "resource": {"prefect.resource.id": "r-7"}}
    event = decode_event(
        orjson.dumps(scenario_event(step, harness.clock.now())), received=harness.clock.now()
    )
    loaded = next(iter(harness.engine.automations.values()))
    explained = await explain_event(harness.engine, loaded.automation, event)

    assert explained.triggers[0].decision == "counted"
    assert explained.triggers[0].bucket.count == 1  # type: ignore[union-attr]
    copy_answer = monitor[0][2]
    assert copy_answer == 0  # held events copied: none; one bucket
    scratch = [k async for k in redis_client.scan_iter(match=f"{key_prefix}:*:dry:*")]
    assert scratch == []
