"""Malformed input at the event intake of a running replica (Hypothesis): every event the
domain refuses is dead-lettered, every valid one around it still fires exactly once, and the
replica never stops. The oracle is the domain's own decoder, as the admin API's malformed
input tests use its parser (tests/admin/test_malformed_input.py)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from nats.js import JetStreamContext

from svc.client import AdminClient
from svc.config import Settings
from svc.domain.errors import InvalidEvent
from svc.domain.events import decode_event
from svc.service import Service
from tests.admin.strategies import json_values, mutated, texts
from tests.helpers import eventually
from tests.reliability.support import started_replica
from tests.service.support import (
    consumer_settled,
    reactive_automation,
    remove_names,
    service_settings,
)

NAME = "fuzz.ping"
# One replica and one stream for every example of a test: each example adds to the counts.
fuzz_settings = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def valid_event(event_id: uuid.UUID) -> dict:
    return {
        "id": str(event_id),
        "occurred": datetime.now(UTC).isoformat(),
        "event": NAME,
        "resource": {"prefect.resource.id": "fuzz.1", "fuzz.label": "x"},
        "related": [{"prefect.resource.id": "fuzz.2", "prefect.resource.role": "peer"}],
        "payload": {"n": 1},
    }


valid_events = st.uuids().map(valid_event)
bodies = st.one_of(
    valid_events.map(orjson.dumps),
    mutated(valid_events).map(orjson.dumps),
    json_values.map(orjson.dumps),
    texts.map(str.encode),
    st.binary(max_size=64),
)


@dataclasses.dataclass
class Tally:
    dead_letters: int = 0
    actions: int = 0
    ids: set[str] = dataclasses.field(default_factory=set)

    def add(self, body: bytes) -> None:
        """What the domain makes of one message, counted as the replica should count it."""
        try:
            event = decode_event(body, received=datetime.now(UTC))
        except InvalidEvent:
            self.dead_letters += 1
            return
        if event.event == NAME and str(event.id) not in self.ids:
            self.actions += 1
        self.ids.add(str(event.id))


@pytest.fixture
def tally() -> Tally:
    """What the replica should have done so far, over every example of the test."""
    return Tally()


@pytest.fixture
async def replica(nats_url: str, redis_url: str, key_prefix: str) -> AsyncIterator[Service]:
    settings = service_settings(nats_url, redis_url, key_prefix, fetch_timeout_s=0.2)
    try:
        async with started_replica(settings) as service:
            async with AdminClient(service.admin_address) as admin:
                await admin.load(reactive_automation(NAME))
            yield service
    finally:
        await remove_names(settings)


async def messages(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


@given(batch=st.lists(bodies, min_size=1, max_size=8))
@example(batch=[b"", b"{}", b"null", b"\xff\xfe", orjson.dumps(valid_event(uuid.uuid4()))])
@example(batch=[orjson.dumps({**valid_event(uuid.uuid4()), "occurred": "yesterday"})])
@example(batch=[orjson.dumps({**valid_event(uuid.uuid4()), "resource": {}})])
@fuzz_settings
async def test_bad_events_are_dead_lettered_and_the_valid_ones_around_them_fire_once(
    replica: Service, tally: Tally, js: JetStreamContext, batch: list[bytes]
) -> None:
    settings: Settings = replica.settings
    for body in batch:
        await js.publish(f"{settings.events_subject_prefix}.fuzz", body)
        tally.add(body)
    event(f"dead letters so far: {min(tally.dead_letters // 20 * 20, 100)}+")
    await eventually(lambda: consumer_settled(js, settings), "the batch to be handled")
    assert await messages(js, settings.dead_letter_stream) == tally.dead_letters
    await eventually(
        lambda: _equal(messages(js, settings.actions_stream), tally.actions),
        "one action per valid event",
    )
    assert all(not task.done() for task in replica._tasks), "a loop of the replica ended"


async def _equal(count, expected: int) -> bool:
    return await count == expected
