"""Builders and a small label-aware driver shared by the engine tests.

Automations and events are written with labels (`"sla"`, `"run-1-started"`); the driver maps
them to UUIDs the way the conformance runner does, publishes through `InProcess`, and maps
what the engine published back to labels, so a test reads like a scenario.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid5

import orjson
import redis.asyncio

from svc.conformance import T0, InProcess, label_uuid, scenario_event
from svc.engine import IntakeResult
from svc.state.keys import TriggerKeys
from svc.state.store import BucketRecord

US = 1_000_000
T0_US = int(T0.timestamp()) * US
# What the engine counts as "the lookback" (SEMANTICS 10): first windows reach back this far.
LOOKBACK_S = 15 * 60


def at_us(seconds: float) -> int:
    """An event time `seconds` after T0, in the microseconds the scripts store."""
    return T0_US + round(seconds * US)


def seconds_of(us: int) -> float:
    """Microseconds since the epoch back to seconds relative to T0."""
    return (us - T0_US) / US


def event_trigger(
    *,
    posture: str = "Reactive",
    expect: tuple[str, ...] = ("x.happened",),
    after: tuple[str, ...] = (),
    threshold: int = 1,
    within: float = 0,
    for_each: tuple[str, ...] = (),
    match: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "type": "event",
        "posture": posture,
        "expect": list(expect),
        "after": list(after),
        "for_each": list(for_each),
        "match": match or {},
        "match_related": {},
        "threshold": threshold,
        "within": within,
    }


def reactive(**kwargs: Any) -> dict[str, Any]:
    return event_trigger(posture="Reactive", **kwargs)


def proactive(**kwargs: Any) -> dict[str, Any]:
    return event_trigger(posture="Proactive", **kwargs)


def compound(
    triggers: list[dict[str, Any]], require: int | str, within: float | None = None
) -> dict[str, Any]:
    return {"type": "compound", "triggers": triggers, "require": require, "within": within}


def sequence(triggers: list[dict[str, Any]], within: float | None = None) -> dict[str, Any]:
    return {"type": "sequence", "triggers": triggers, "within": within}


def automation(
    label: str, trigger: dict[str, Any], *, enabled: bool = True, actions: int = 1
) -> dict[str, Any]:
    return {
        "id": label,
        "name": label,
        "enabled": enabled,
        "trigger": trigger,
        "actions": [{"type": "do-nothing"} for _ in range(actions)],
    }


@dataclass(frozen=True)
class Fired:
    """One published triggered action, in labels."""

    automation: str
    event: str | None
    labels: tuple[tuple[str, str], ...] = ()
    trigger_type: str = "event"


@dataclass(frozen=True)
class Bucket:
    """A bucket as stored by bucket_machine.lua, times in seconds relative to T0."""

    start: float
    end: float
    count: int
    last_event: str | None
    last_operation: str


class Driver:
    """An `InProcess` harness that speaks labels."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str):
        self.client = client
        self.prefix = prefix
        self.h = InProcess(client, prefix)
        self._names: dict[str, str] = {}

    def _remember(self, label: str) -> str:
        uuid = label_uuid(label)
        self._names[uuid] = label
        return uuid

    def label(self, uuid: str | UUID | None) -> str | None:
        if uuid is None:
            return None
        return self._names.get(str(uuid), str(uuid))

    async def start(self, *documents: dict[str, Any]) -> None:
        for document in documents:
            self._remember(document["id"])
        await self.h.start(documents)

    async def load(self, document: dict[str, Any]) -> None:
        self._remember(document["id"])
        await self.h.load(document)

    def step(
        self,
        label: str,
        at: float,
        name: str = "x.happened",
        resource: str = "r-1",
        *,
        follows: str | None = None,
        received_at: float | None = None,
        labels: dict[str, str] | None = None,
        related: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """An event as a scenario step (`at` seconds after T0)."""
        self._remember(label)
        step: dict[str, Any] = {
            "id": label,
            "event": name,
            "at": at,
            "resource": {"prefect.resource.id": resource, **(labels or {})},
            "related": related or [],
        }
        if follows is not None:
            self._remember(follows)
            step["follows"] = follows
        if received_at is not None:
            step["received_at"] = received_at
        return step

    async def event(self, label: str, at: float, name: str = "x.happened", **kwargs: Any) -> None:
        await self.h.publish_event(self.step(label, at, name, **kwargs))

    def body(self, step: dict[str, Any]) -> bytes:
        """The message body of a scenario step, received now unless it says otherwise."""
        return orjson.dumps(scenario_event(step, self.h.clock.now()))

    async def deliver(self, *steps: dict[str, Any]) -> list[IntakeResult]:
        """Deliver steps as one fetched batch (Engine.handle_batch), then feed back what was
        published, as the service does."""
        results = await self.h.engine.handle_batch([self.body(step) for step in steps])
        await self.h.feed_back()
        return results

    async def advance(self, seconds: float) -> None:
        await self.h.advance(seconds)

    def fired(self) -> list[Fired]:
        """The triggered actions published since the last call, in publication order."""
        out = []
        for action in self.h.take_actions():
            event = action["triggering_event"]
            out.append(
                Fired(
                    automation=self.label(action["automation"]["id"]),  # type: ignore[arg-type]
                    event=None if event is None else self.label(event["id"]),
                    labels=tuple(sorted(action["triggering_labels"].items())),
                    trigger_type=action["firing"]["trigger"]["type"],
                )
            )
        return out

    def fired_events(self) -> list[str | None]:
        return [f.event for f in self.fired()]

    # -- looking at the state in Redis --

    @staticmethod
    def trigger_id(automation_label: str, path: str = "trigger") -> UUID:
        """The id the domain gives a trigger without one: derived from its path in the tree
        (`trigger`, `trigger.0`, `trigger.1.0`, ...)."""
        return uuid5(UUID(label_uuid(automation_label)), path)

    def keys(self, automation_label: str, path: str = "trigger") -> TriggerKeys:
        loaded = self.h.engine.automations[UUID(label_uuid(automation_label))]
        return loaded.event_keys[self.trigger_id(automation_label, path)]

    async def buckets(self, automation_label: str, path: str = "trigger") -> dict[str, Bucket]:
        """Every stored bucket of a trigger, by bucketing key (JSON)."""
        raw = await self.client.hgetall(self.keys(automation_label, path).buckets)
        return {k.decode(): decode_bucket(v, self) for k, v in raw.items()}

    async def bucket(self, automation_label: str, path: str = "trigger") -> Bucket | None:
        """The only bucket of a trigger (or None); fails if there are several."""
        found = await self.buckets(automation_label, path)
        assert len(found) <= 1, found
        return next(iter(found.values()), None)

    async def state_keys(self, *fragments: str) -> set[str]:
        """Every Redis key under this test's prefix containing all fragments."""
        keys = {k.decode() async for k in self.client.scan_iter(match=f"{self.prefix}:*")}
        return {k for k in keys if all(f in k for f in fragments)}


def decode_bucket(raw: bytes, driver: Driver | None = None) -> Bucket:
    record = BucketRecord.parse(raw)
    last = None
    if record.last_event is not None:
        event_id = record.last_event["id"]
        last = driver.label(event_id) if driver else event_id
    return Bucket(
        seconds_of(record.start_us), seconds_of(record.end_us), record.count, last,
        record.last_operation,
    )
