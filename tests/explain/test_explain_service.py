"""Explain now, against the real service: the ExplainEvent RPC and `python -m svc explain`
answer what evaluation would do, and leave every key of the service byte for byte as it was."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import grpc
import pytest

from svc.config import env_name
from tests.explain.support import Running, automation, event, reactive

pytestmark = pytest.mark.timeout(120)


async def test_explain_predicts_the_firing_and_changes_nothing(live: Running) -> None:
    """The dry run answers `counted fired rolled_over` for the event that reaches the threshold,
    with the bucket before and after; the state is byte for byte unchanged, no scratch key is
    left, and nothing is published."""
    doc = automation(reactive(threshold=3, within=60, for_each=["prefect.resource.id"]))
    stored = await live.admin.load(doc)
    for _ in range(2):
        await live.publish(event())
    await live.settled()
    before = await live.dump_state()
    actions_before = await live.actions()

    answer = await live.admin.explain(stored.id, event())

    assert await live.dump_state() == before
    assert await live.actions() == actions_before == []
    assert answer.intake == "evaluated" and answer.loaded
    (trigger,) = answer.triggers
    assert trigger.interested and trigger.expected
    assert trigger.expect_pattern == "x.happened"
    assert list(trigger.bucketing_key) == ["r-1"]
    assert trigger.bucket.count == 2
    assert trigger.decision == "counted fired rolled_over"
    assert trigger.bucket_after.count == 0
    assert trigger.bucket_after.start.ToDatetime() == trigger.bucket.end.ToDatetime()
    assert len(trigger.firing_ids) == 1
    assert "FIRES" in answer.text and "count 2 of threshold 3" in answer.text


async def test_explain_says_which_pattern_or_label_failed(live: Running) -> None:
    trigger = reactive(
        expect="prefect.flow-run.*",
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "deployment", "team": "data"},
    )
    stored = await live.admin.load(automation(trigger))

    wrong_name = await live.admin.explain(stored.id, event("prefect.flow-run."))
    (t,) = wrong_name.triggers
    assert not t.interested and t.decision == "not_interested"
    assert "at least one character" in t.name_reason

    wrong_resource = await live.admin.explain(
        stored.id,
        event(
            "prefect.flow-run.Failed",
            "prefect.task-run.1",
            related=[{"prefect.resource.id": "d-1", "prefect.resource.role": "deployment",
                      "team": "web"}],
        ),
    )
    (t,) = wrong_resource.triggers
    assert t.decision == "not_covered" and t.expect_pattern == "prefect.flow-run.*"
    assert t.resource_failures[0] == (
        "match: label 'prefect.resource.id' is 'prefect.task-run.1', which matches none of "
        "['prefect.flow-run.*']"
    )
    assert "match_related[0]" in t.resource_failures[1]
    assert "label 'team' is 'web', which matches none of ['data']" in t.resource_failures[1]


async def test_explain_reports_a_duplicate_and_a_parked_follower(live: Running) -> None:
    stored = await live.admin.load(automation(reactive(threshold=5, within=60)))
    seen = await live.publish(event())
    await live.settled()

    again = await live.admin.explain(stored.id, {**event(), "id": seen})
    assert again.intake == "duplicate"
    assert again.triggers[0].decision == "duplicate"

    follower = await live.admin.explain(stored.id, {**event(), "follows": str(uuid.uuid4())})
    assert follower.intake == "parked"
    assert "waits as a follower" in follower.intake_reason


async def test_explain_shows_a_composites_stored_and_missing_children(live: Running) -> None:
    """SEMANTICS 7.2: after child 0 fired, an event for child 1 would fire the compound."""
    doc = automation(
        {"type": "compound", "require": "all", "within": 3600,
         "triggers": [reactive("a.happened"), reactive("b.happened")]}
    )
    stored = await live.admin.load(doc)
    await live.publish(event("a.happened"))
    await live.settled()
    before = await live.dump_state()

    answer = await live.admin.explain(stored.id, event("b.happened"))

    assert await live.dump_state() == before
    (composite,) = answer.composites
    assert composite.kind == "compound" and composite.expected_firings == 2
    assert [s.path for s in composite.stored] == ["trigger.triggers.0"]
    assert list(composite.missing) == ["trigger.triggers.1"]
    assert composite.decision == "fired"
    assert [t.decision for t in answer.triggers] == ["not_interested", "counted fired"]


async def test_explain_of_a_proactive_after_trigger_holds_and_arms(live: Running) -> None:
    """SEMANTICS 6.2: an expect-only event is held; an `after` event arms; neither changes
    the live state when explained."""
    sla = {"type": "event", "posture": "Proactive", "after": ["run.started"],
           "expect": ["run.done"], "for_each": ["prefect.resource.id"], "within": 600}
    stored = await live.admin.load(automation(sla))
    before = await live.dump_state()

    done = await live.admin.explain(stored.id, event("run.done"))
    started = await live.admin.explain(stored.id, event("run.started"))

    assert done.triggers[0].decision == "held ignored"
    assert started.triggers[0].decision == "armed"
    assert started.triggers[0].bucket_after.count == 0
    assert await live.dump_state() == before


async def test_explain_of_a_disabled_automation_evaluates_nothing(live: Running) -> None:
    stored = await live.admin.load(automation(reactive(), enabled=False))
    answer = await live.admin.explain(stored.id, event())
    assert not answer.loaded
    assert answer.triggers[0].decision == "not_evaluated"


async def test_explain_refuses_a_bad_event_and_an_unknown_automation(live: Running) -> None:
    stored = await live.admin.load(automation(reactive()))
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await live.admin.explain(stored.id, {"event": "x", "resource": {}})
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "event_json.resource" in bad.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await live.admin.explain(str(uuid.uuid4()), event())
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_explain_command_prints_the_explanation(live: Running, tmp_path) -> None:
    """`python -m svc explain --automation ID --event FILE`, text and --json."""
    stored = await live.admin.load(automation(reactive(threshold=2, within=30)))
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event()))
    env = {**os.environ, env_name_of("grpc_address"): live.settings.grpc_address}

    async def run(*extra: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "svc", "explain", "--automation", stored.id,
            "--event", str(path), *extra,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return out.decode()

    text = await run()
    assert "name: matches expect 'x.happened'" in text
    assert "would: counts the event  [counted]" in text
    answer = json.loads(await run("--json"))
    assert answer["triggers"][0]["decision"] == "counted"


def env_name_of(field: str) -> str:
    from dataclasses import fields

    from svc.config import Settings

    return env_name(next(f for f in fields(Settings) if f.name == field))
