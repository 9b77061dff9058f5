"""The firing publisher: subjects, Nats-Msg-Id dedupe, trace context, and failures raised."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from nats.js import JetStreamContext
from opentelemetry.sdk.trace import TracerProvider

from svc.bus.publisher import JetStreamPublisher, PublishError
from svc.bus.streams import ensure_streams
from svc.config import Settings
from svc.domain import jsonio
from svc.domain.automations import Automation
from svc.domain.firings import Act


@pytest.fixture
async def streams(js: JetStreamContext, bus_settings: Settings) -> AsyncIterator[None]:
    await ensure_streams(js, bus_settings)
    yield


def act_for(automation: Automation) -> Act:
    """An Act shaped like act()'s: one state-change event, two triggered actions."""
    event = {"id": str(uuid.uuid4()), "event": "prefect.automation.triggered", "payload": {}}
    actions = tuple(
        {
            "id": str(uuid.uuid4()),
            "automation": automation.to_json(),
            "action": {"type": kind},
            "action_index": index,
        }
        for index, kind in enumerate(["send-notification", "run-deployment"])
    )
    return Act(events=(event,), actions=actions)


def actions_elsewhere(settings: Settings, tag: str) -> Settings:
    """The settings with triggered actions published where no stream takes them."""
    return dataclasses.replace(
        settings, actions_subject_prefix=f"{tag}-{settings.actions_subject_prefix}"
    )


async def stored(js: JetStreamContext, stream: str) -> list[tuple[str, dict[str, Any], dict]]:
    count = (await js.stream_info(stream)).state.messages
    messages = [await js.get_msg(stream, seq=seq) for seq in range(1, count + 1)]
    return [(m.subject, jsonio.loads(m.data), m.headers or {}) for m in messages]


async def test_events_and_triggered_actions_go_to_their_subjects_with_their_ids(
    js: JetStreamContext,
    bus_settings: Settings,
    streams: None,
    make_automation: Callable[..., Automation],
) -> None:
    s = bus_settings
    automation = make_automation()
    out = act_for(automation)

    await JetStreamPublisher(js, s).publish(automation, out)

    [(subject, body, headers)] = await stored(js, s.events_stream)
    assert subject == f"{s.events_subject_prefix}.prefect.automation.triggered"
    assert body == out.events[0]
    assert headers["Nats-Msg-Id"] == out.events[0]["id"]
    actions = sorted(await stored(js, s.actions_stream), key=lambda m: m[1]["action_index"])
    assert [subject for subject, _, _ in actions] == [
        f"{s.actions_subject_prefix}.send-notification.{automation.id}",
        f"{s.actions_subject_prefix}.run-deployment.{automation.id}",
    ]
    assert [body for _, body, _ in actions] == list(out.actions)
    assert [h["Nats-Msg-Id"] for _, _, h in actions] == [a["id"] for a in out.actions]


async def test_integers_beyond_64_bits_are_published_exact(
    js: JetStreamContext,
    bus_settings: Settings,
    streams: None,
    make_automation: Callable[..., Automation],
) -> None:
    """A triggering event's payload may hold them (svc/domain/jsonio.py); orjson cannot
    write them, so they once failed the firing on every retry."""
    automation = make_automation()
    out = act_for(automation)
    wide = {"big": 2**64, "small": -(2**63) - 1}
    event = {**out.events[0], "payload": {"triggering_event": {"payload": wide}}}
    actions = tuple({**a, "triggering_event": {"payload": wide}} for a in out.actions)

    await JetStreamPublisher(js, bus_settings).publish(automation, Act((event,), actions))

    [(_, body, _)] = await stored(js, bus_settings.events_stream)
    assert body["payload"]["triggering_event"]["payload"] == {"big": 2**64, "small": -(2**63) - 1}
    for _, body, _ in await stored(js, bus_settings.actions_stream):
        assert body["triggering_event"]["payload"] == wide


async def test_publishing_the_same_act_twice_stores_each_message_once(
    js: JetStreamContext,
    bus_settings: Settings,
    streams: None,
    make_automation: Callable[..., Automation],
) -> None:
    automation = make_automation()
    out = act_for(automation)
    publisher = JetStreamPublisher(js, bus_settings)

    await publisher.publish(automation, out)
    await publisher.publish(automation, out)

    assert (await js.stream_info(bus_settings.actions_stream)).state.messages == 2
    assert (await js.stream_info(bus_settings.events_stream)).state.messages == 1


async def test_the_active_trace_context_travels_in_the_headers(
    js: JetStreamContext,
    bus_settings: Settings,
    streams: None,
    make_automation: Callable[..., Automation],
) -> None:
    automation = make_automation()
    out = act_for(automation)
    tracer = TracerProvider().get_tracer(__name__)

    with tracer.start_as_current_span("act") as span:
        await JetStreamPublisher(js, bus_settings).publish(automation, out)
        trace_id = f"{span.get_span_context().trace_id:032x}"

    messages = await stored(js, bus_settings.events_stream)
    messages += await stored(js, bus_settings.actions_stream)
    assert len(messages) == 3
    for _, _, headers in messages:
        assert headers["traceparent"].split("-")[1] == trace_id


async def test_without_an_active_span_no_trace_header_is_sent(
    js: JetStreamContext,
    bus_settings: Settings,
    streams: None,
    make_automation: Callable[..., Automation],
) -> None:
    automation = make_automation()
    await JetStreamPublisher(js, bus_settings).publish(automation, act_for(automation))
    messages = await stored(js, bus_settings.events_stream)
    messages += await stored(js, bus_settings.actions_stream)
    assert len(messages) == 3  # else the loop below could pass over nothing
    for _, _, headers in messages:
        assert "traceparent" not in headers


async def test_a_message_that_is_not_acknowledged_raises(
    js: JetStreamContext,
    bus_settings: Settings,
    streams: None,
    make_automation: Callable[..., Automation],
) -> None:
    # No stream takes these subjects: nothing acknowledges the triggered actions.
    settings = actions_elsewhere(bus_settings, "nowhere")
    automation = make_automation()
    with pytest.raises(PublishError, match=f"2 of 3 messages for automation {automation.id}"):
        await JetStreamPublisher(js, settings).publish(automation, act_for(automation))


async def test_a_message_nothing_acknowledges_in_time_raises(
    js: JetStreamContext,
    bus_settings: Settings,
    streams: None,
    make_automation: Callable[..., Automation],
) -> None:
    # A plain subscriber takes the triggered actions' subject and never answers.
    settings = actions_elsewhere(bus_settings, "silent")
    silent = await js._nc.subscribe(f"{settings.actions_subject_prefix}.>")
    automation = make_automation()
    publisher = JetStreamPublisher(js, settings, ack_timeout_s=0.2)
    try:
        with pytest.raises(PublishError, match="2 of 3 messages.*no acknowledgement within 0.2 s"):
            await publisher.publish(automation, act_for(automation))
    finally:
        await silent.unsubscribe()
    assert publisher._acks is not None and not publisher._acks._waiting


async def test_concurrent_publishes_each_get_their_own_acknowledgements(
    js: JetStreamContext,
    bus_settings: Settings,
    streams: None,
    make_automation: Callable[..., Automation],
) -> None:
    publisher = JetStreamPublisher(js, bus_settings)
    automations = [make_automation() for _ in range(20)]
    outs = [act_for(a) for a in automations]
    await asyncio.gather(*(publisher.publish(a, o) for a, o in zip(automations, outs, strict=True)))
    stored_actions = await stored(js, bus_settings.actions_stream)
    assert sorted(b["id"] for _, b, _ in stored_actions) == sorted(
        a["id"] for o in outs for a in o.actions
    )
    assert publisher._acks is not None and not publisher._acks._waiting


async def test_a_refused_message_raises_with_jetstreams_reason(
    js: JetStreamContext,
    bus_settings: Settings,
    streams: None,
    make_automation: Callable[..., Automation],
) -> None:
    # The actions' subjects belong to the actions stream, not to the one named here.
    settings = dataclasses.replace(bus_settings, actions_stream="NOT-THE-ACTIONS-STREAM")
    automation = make_automation()
    with pytest.raises(PublishError, match="2 of 3 messages.*expected stream does not match"):
        await JetStreamPublisher(js, settings).publish(automation, act_for(automation))


def test_a_subject_token_with_a_wildcard_or_space_is_refused(
    bus_settings: Settings, make_automation: Callable[..., Automation]
) -> None:
    publisher = JetStreamPublisher(None, bus_settings)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="token 'a b'"):
        publisher.event_subject({"event": "a b.c"})
    with pytest.raises(ValueError, match="token '>'"):
        publisher.event_subject({"event": "x.>"})
