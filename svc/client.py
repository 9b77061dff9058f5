"""Clients for people and tests: the admin API over gRPC, and events and actions over NATS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import nats
import orjson
from nats.js.api import DeliverPolicy

from svc.admin.generated.triggers.admin.v1 import admin_pb2 as pb
from svc.admin.generated.triggers.admin.v1 import admin_pb2_grpc as pb_grpc
from svc.config import Settings
from svc.domain import jsonio


@dataclass(frozen=True)
class Stored:
    """An automation as the admin API returned it, with any warnings about it."""

    document: dict[str, Any]
    warnings: tuple[str, ...] = ()
    created: bool = False

    @property
    def id(self) -> str:
        return str(self.document["id"])


class AdminClient:
    """The admin API (proto/triggers/admin/v1) for scripts, the CLI and the live tests."""

    def __init__(self, address: str, channel: grpc.aio.Channel | None = None):
        self.address = address
        self.channel = channel or grpc.aio.insecure_channel(address)
        self.stub = pb_grpc.AutomationAdminServiceStub(self.channel)

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminClient:
        """The admin API at TRIGGERS_GRPC_ADDRESS, with its TLS and token settings."""
        from svc.admin.security import client_channel

        return cls(settings.grpc_address, client_channel(settings))

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the server answers (the service may still be starting)."""
        await asyncio.wait_for(self.channel.channel_ready(), timeout_s)

    async def load(self, document: dict[str, Any]) -> Stored:
        """Create an automation, or replace it when the document has an `id`."""
        text = orjson.dumps(document).decode()
        if document.get("id"):
            answer = await self.stub.ReplaceAutomation(
                pb.ReplaceAutomationRequest(id=str(document["id"]), json=text)
            )
            return Stored(orjson.loads(answer.stored.json), tuple(answer.warnings), answer.created)
        created = await self.stub.CreateAutomation(pb.CreateAutomationRequest(json=text))
        return Stored(orjson.loads(created.stored.json), tuple(created.warnings), True)

    async def get(self, automation_id: str) -> dict[str, Any]:
        answer = await self.stub.GetAutomation(pb.GetAutomationRequest(id=automation_id))
        return orjson.loads(answer.stored.json)

    async def list(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            page = await self.stub.ListAutomations(
                pb.ListAutomationsRequest(page_size=500, page_token=token)
            )
            found += [orjson.loads(stored.json) for stored in page.automations]
            token = page.next_page_token
            if not token:
                return found

    async def delete(self, automation_id: str) -> None:
        await self.stub.DeleteAutomation(pb.DeleteAutomationRequest(id=automation_id))

    async def set_enabled(self, automation_id: str, enabled: bool) -> Stored:
        answer = await self.stub.SetAutomationEnabled(
            pb.SetAutomationEnabledRequest(id=automation_id, enabled=enabled)
        )
        return Stored(orjson.loads(answer.stored.json), tuple(answer.warnings))

    async def reset_state(self, automation_id: str | None) -> None:
        request = (
            pb.ResetStateRequest(all_automations=True)
            if automation_id is None
            else pb.ResetStateRequest(automation_id=automation_id)
        )
        await self.stub.ResetState(request)

    async def buckets(self, automation_id: str, trigger_id: str) -> list[pb.Bucket]:
        answer = await self.stub.GetTriggerBuckets(
            pb.GetTriggerBucketsRequest(automation_id=automation_id, trigger_id=trigger_id)
        )
        return list(answer.buckets)

    async def explain(self, automation_id: str, event: dict[str, Any]) -> pb.ExplainEventResponse:
        """What evaluating the event against the automation would do now (nothing changes)."""
        return await self.stub.ExplainEvent(
            pb.ExplainEventRequest(
                automation_id=automation_id, event_json=jsonio.dumps(event).decode()
            )
        )


def complete_event(event: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Fill what a producer usually sets: a fresh `id` and `occurred` = now."""
    event = dict(event)
    event.setdefault("id", str(uuid.uuid4()))
    event.setdefault("occurred", (now or datetime.now(UTC)).isoformat())
    return event


def event_subject(settings: Settings, name: str) -> str:
    """The subject an event is published on; the body, not the subject, is authoritative,
    so a name that is not a valid subject token still goes out under a fixed one."""
    safe = name if name and all(c not in name for c in " *>\t\r\n") else "unnamed"
    tokens = [t for t in safe.split(".") if t] or ["unnamed"]
    return ".".join([settings.events_subject_prefix, *tokens])


async def publish_events(settings: Settings, events: Sequence[dict[str, Any]]) -> list[str]:
    """Publish events to the EVENTS stream, awaiting each acknowledgement; return their ids."""
    nc = await nats.connect(settings.nats_url, name="triggers-cli")
    try:
        js = nc.jetstream()
        ids = []
        for event in events:
            body = jsonio.dumps(event)  # any integer the file holds, exactly
            await js.publish(event_subject(settings, str(event.get("event", ""))), body)
            ids.append(str(event.get("id")))
        return ids
    finally:
        await nc.drain()


async def tail_actions(
    settings: Settings, *, from_start: bool = False
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield (subject, triggered action) from the ACTIONS stream as they arrive."""
    nc = await nats.connect(settings.nats_url, name="triggers-cli")
    try:
        js = nc.jetstream()
        policy = DeliverPolicy.ALL if from_start else DeliverPolicy.NEW
        sub = await js.subscribe(
            f"{settings.actions_subject_prefix}.>",
            stream=settings.actions_stream,
            ordered_consumer=True,
            deliver_policy=policy,
        )
        async for msg in sub.messages:
            yield msg.subject, orjson.loads(msg.data)
    finally:
        await nc.drain()

