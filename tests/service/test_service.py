"""The Service in-process, on real NATS and Redis: intake and dead letters, delivery order,
graceful stop, replicas sharing automations through the KV bucket, and the admin API's
effect on the running engine (DESIGN, "Data flow" and "Delivery guarantees")."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import grpc
import pytest
from nats.js import JetStreamContext

from svc.bus.automations import AutomationStore
from svc.bus.consumer import DEAD_LETTER_REASON, ORIGINAL_SEQUENCE
from svc.bus.streams import ensure_streams
from svc.config import Settings
from svc.domain.automations import Automation, parse_automation
from svc.domain.firings import Act
from svc.engine import Publisher
from tests.helpers import WAIT_TIMEOUT_S, eventually
from tests.service.support import (
    event_document,
    publish,
    reactive_automation,
    settle,
    stream_messages,
)


class GatedPublisher:
    """Wraps the engine's publisher: each publish waits until the test releases it, and the
    first `failures` publishes raise, as a JetStream outage would."""

    def __init__(self, publisher: Publisher, *, failures: int = 0, held: bool = True):
        self.publisher = publisher
        self.failures = failures
        self.reached = asyncio.Event()
        self.released = asyncio.Event()
        if not held:
            self.released.set()
        self.calls = 0

    async def publish(self, automation: Automation, out: Act) -> None:
        self.calls += 1
        self.reached.set()
        await self.released.wait()
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the test's publisher refuses this publish")
        await self.publisher.publish(automation, out)


async def actions(js: JetStreamContext, settings: Settings) -> list[dict[str, Any]]:
    return [m.json() for m in await stream_messages(js, settings.actions_stream)]


def triggering_ids(found: list[dict[str, Any]]) -> list[str]:
    return sorted(a["triggering_event"]["id"] for a in found)


async def test_bad_input_is_dead_lettered_with_its_reason_and_the_good_events_around_it_fire(
    start_service, admin_of, js, settings
) -> None:
    """SEMANTICS Decision 2: an undecodable body and an invalid event are published to the
    dead-letter subject with the reason and acked; valid events before and after still fire."""
    service = await start_service()
    await admin_of(service).load(reactive_automation("svc.happened"))
    first, last = event_document("svc.happened"), event_document("svc.happened")
    invalid = event_document("svc.happened")
    invalid["resource"] = {"no-id": "thing.1"}
    await publish(js, settings, first)
    undecodable_seq = await publish(js, settings, b"not json at all")
    invalid_seq = await publish(js, settings, invalid)
    await publish(js, settings, last)

    await settle(js, settings)

    dead = await stream_messages(js, settings.dead_letter_stream)
    assert [m.headers[ORIGINAL_SEQUENCE] for m in dead] == [str(undecodable_seq), str(invalid_seq)]
    assert dead[0].data == b"not json at all"
    assert "Invalid JSON" in dead[0].headers[DEAD_LETTER_REASON]
    assert dead[1].json()["id"] == invalid["id"]
    assert "prefect.resource.id" in dead[1].headers[DEAD_LETTER_REASON]
    assert triggering_ids(await actions(js, settings)) == sorted([first["id"], last["id"]])
    assert service.consumer is not None and service.consumer.dead_lettered == 2


async def test_the_automation_triggered_event_comes_back_onto_the_events_stream(
    start_service, admin_of, js, settings
) -> None:
    """SEMANTICS 7.3: act publishes `prefect.automation.triggered` on the events subjects,
    where it is consumed like any other event."""
    service = await start_service()
    stored = await admin_of(service).load(reactive_automation("svc.happened"))
    event = event_document("svc.happened")
    await publish(js, settings, event)

    await settle(js, settings)

    (state_change,) = [
        m
        for m in await stream_messages(js, settings.events_stream)
        if m.json().get("event") == "prefect.automation.triggered"
    ]
    assert state_change.subject == f"{settings.events_subject_prefix}.prefect.automation.triggered"
    document = state_change.json()
    assert document["resource"]["prefect.resource.id"] == f"prefect.automation.{stored.id}"
    assert state_change.headers["Nats-Msg-Id"] == document["id"]
    # the durable consumer took it in as well (settled means nothing is pending)
    info = await js.consumer_info(settings.events_stream, settings.consumer_name)
    assert (
        info.ack_floor.stream_seq == (await js.stream_info(settings.events_stream)).state.last_seq
    )


async def test_an_event_is_acked_only_after_its_firing_is_in_the_actions_stream(
    start_service, admin_of, js, settings
) -> None:
    """DESIGN, delivery: while the firing's publish is held, the event stays unacked."""
    service = await start_service()
    gate = GatedPublisher(service.engine.publisher)
    service.engine.publisher = gate
    await admin_of(service).load(reactive_automation("svc.happened"))
    seq = await publish(js, settings, event_document("svc.happened"))
    try:
        await asyncio.wait_for(gate.reached.wait(), WAIT_TIMEOUT_S)

        info = await js.consumer_info(settings.events_stream, settings.consumer_name)
        assert info.num_ack_pending == 1 and info.ack_floor.stream_seq < seq
        assert await actions(js, settings) == []
    finally:
        gate.released.set()

    async def acked_with_action_in_place() -> bool:
        info = await js.consumer_info(settings.events_stream, settings.consumer_name)
        in_actions = len(await actions(js, settings))  # read after the ack floor
        if info.ack_floor.stream_seq >= seq:
            assert in_actions == 1, "the event was acked before its firing was published"
            return True
        return False

    await eventually(acked_with_action_in_place, "the event to be acked")


async def test_a_firing_whose_publish_fails_is_published_once_from_the_outbox(
    start_service, admin_of, js, settings
) -> None:
    """DESIGN, delivery: a failed publish leaves the event unacked (redelivered, then a
    duplicate) and the firing in its outbox, which the periodic drain publishes once."""
    service = await start_service()
    gate = GatedPublisher(service.engine.publisher, failures=1, held=False)
    service.engine.publisher = gate
    await admin_of(service).load(reactive_automation("svc.happened"))
    event = event_document("svc.happened")
    await publish(js, settings, event)

    found = await eventually(lambda: actions(js, settings), "the firing to be published")
    await settle(js, settings)

    assert gate.calls >= 2
    assert triggering_ids(found) == [event["id"]]
    assert triggering_ids(await actions(js, settings)) == [event["id"]]


async def test_stop_finishes_and_acks_the_batch_in_flight(
    start_service, admin_of, js, settings
) -> None:
    """Service.stop is graceful: a batch being evaluated when it is called is finished, its
    firing published and its event acked before the connections close."""
    service = await start_service()
    gate = GatedPublisher(service.engine.publisher)
    service.engine.publisher = gate
    await admin_of(service).load(reactive_automation("svc.happened"))
    event = event_document("svc.happened")
    seq = await publish(js, settings, event)
    await asyncio.wait_for(gate.reached.wait(), WAIT_TIMEOUT_S)

    stopping = asyncio.create_task(service.stop())
    await asyncio.sleep(0)  # let stop() begin: it must now wait for the batch
    assert not stopping.done()
    gate.released.set()
    await asyncio.wait_for(stopping, WAIT_TIMEOUT_S)

    info = await js.consumer_info(settings.events_stream, settings.consumer_name)
    assert info.ack_floor.stream_seq >= seq and info.num_ack_pending == 0
    assert triggering_ids(await actions(js, settings)) == [event["id"]]


async def test_an_automation_created_through_one_replica_is_evaluated_by_another(
    start_service, admin_of, js, settings
) -> None:
    """SEMANTICS 12 / DESIGN: every replica watches the KV bucket; replica B loads what was
    created through A's admin API and, with A gone, evaluates events for it alone."""
    a = await start_service()
    b = await start_service()
    stored = await admin_of(a).load(reactive_automation("svc.happened"))
    automation_id = UUID(stored.id)
    await eventually(lambda: automation_id in b.engine.automations, "replica B to load it")

    await a.stop()
    event = event_document("svc.happened")
    await publish(js, settings, event)
    await settle(js, settings)

    assert triggering_ids(await actions(js, settings)) == [event["id"]]


async def test_a_deleted_automation_is_forgotten_by_every_replica(
    start_service, admin_of, js, settings
) -> None:
    a = await start_service()
    b = await start_service()
    stored = await admin_of(a).load(reactive_automation("svc.happened"))
    automation_id = UUID(stored.id)
    await eventually(lambda: automation_id in b.engine.automations, "replica B to load it")

    await admin_of(b).delete(stored.id)

    await eventually(
        lambda: all(automation_id not in r.engine.automations for r in (a, b)),
        "both replicas to forget it",
    )
    await publish(js, settings, event_document("svc.happened"))
    await settle(js, settings)
    assert await actions(js, settings) == []
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin_of(a).get(stored.id)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_disable_and_enable_through_the_admin_api(
    start_service, admin_of, js, settings
) -> None:
    """SEMANTICS 12: a disabled automation is unloaded (nothing fires); enabled, it is back."""
    service = await start_service()
    admin = admin_of(service)
    stored = await admin.load(reactive_automation("svc.happened"))

    disabled = await admin.set_enabled(stored.id, False)
    assert disabled.document["enabled"] is False
    assert UUID(stored.id) not in service.engine.automations
    await publish(js, settings, event_document("svc.happened"))
    await settle(js, settings)
    assert await actions(js, settings) == []

    await admin.set_enabled(stored.id, True)
    event = event_document("svc.happened")
    await publish(js, settings, event)
    await settle(js, settings)
    assert triggering_ids(await actions(js, settings)) == [event["id"]]
    assert (await admin.get(stored.id))["enabled"] is True


async def test_automations_stored_before_start_are_loaded_at_start(
    start_service, js, settings
) -> None:
    """start() returns once the watcher has applied every stored automation."""
    document = reactive_automation("svc.happened")
    await ensure_streams(js, settings)
    await AutomationStore(js, settings).put(parse_automation(document))

    service = await start_service()

    assert UUID(document["id"]) in service.engine.automations
    event = event_document("svc.happened")
    await publish(js, settings, event)
    await settle(js, settings)
    assert triggering_ids(await actions(js, settings)) == [event["id"]]


async def test_trigger_buckets_show_the_state_and_reset_state_clears_it(
    start_service, admin_of, js, settings
) -> None:
    service = await start_service()
    admin = admin_of(service)
    stored = await admin.load(reactive_automation("svc.happened", threshold=3, within=600))
    trigger_id = stored.document["trigger"]["id"]
    event = event_document("svc.happened")
    await publish(js, settings, event)
    await settle(js, settings)

    (bucket,) = await admin.buckets(stored.id, trigger_id)
    assert bucket.count == 1
    assert (bucket.last_event_id, bucket.last_event_name) == (event["id"], "svc.happened")

    await admin.reset_state(stored.id)
    assert await admin.buckets(stored.id, trigger_id) == []

    # the automation stays loaded and starts over
    await publish(js, settings, event_document("svc.happened"))
    await settle(js, settings)
    (bucket,) = await admin.buckets(stored.id, trigger_id)
    assert bucket.count == 1
    await admin.reset_state(None)
    assert await admin.buckets(stored.id, trigger_id) == []
