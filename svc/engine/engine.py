"""The triggers engine: reactive, proactive, composite and periodic evaluation (SEMANTICS 5-12).

It reads like Prefect's `triggers` module, but every state transition is one atomic Lua
script (svc/state), time comes from an injected clock, and firings leave through an injected
publisher once they are recorded in an outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol
from uuid import UUID, uuid5

import orjson

from svc.domain.automations import (
    Automation,
    CompoundTrigger,
    EventTrigger,
    Posture,
    SequenceTrigger,
    micros,
)
from svc.domain.errors import InvalidEvent
from svc.domain.events import DEFAULT_LIMITS, EventLimits, ReceivedEvent, decode_event
from svc.domain.firings import Act, Firing, act, from_micros, to_micros
from svc.domain.index import TriggerIndex
from svc.engine.clock import Clock
from svc.state.keys import CompositeKeys, TriggerKeys
from svc.state.store import Call, RedisState, ScriptCall

logger = logging.getLogger(__name__)

# How long a follower waits for its leader, and how far back a first window reaches (10, 5.2).
PRECEDING_EVENT_LOOKBACK = timedelta(minutes=15)
# How long an event counts as seen (processed) for dedupe and for its followers (10).
PROCESSED_EVENT_LOOKBACK = timedelta(minutes=30)
SEEN_HORIZON = max(PRECEDING_EVENT_LOOKBACK, PROCESSED_EVENT_LOOKBACK)
# How deep the release of followers may recurse before the rest wait as lost followers (10.5).
MAX_DEPTH_OF_PRECEDING_EVENT = 20
# Held expect events outlast a lost follower's wait and a window reaching back over it (6.2).
HELD_EXPECT_EVENTS_RETENTION = 2 * PRECEDING_EVENT_LOOKBACK
# Log events are never evaluated and never tick the clock (5.1 step 3).
LOG_EVENT = "prefect.log.write"
# Due buckets a proactive script evaluates per call; it is called again while more remain.
PROACTIVE_PAGE = 500
# Lost followers taken per periodic round.
LOST_FOLLOWERS_PAGE = 1000

EMPTY_KEY = b"[]"


class Outcome(StrEnum):
    """What intake did with one message."""

    evaluated = "evaluated"
    parked = "parked"
    duplicate = "duplicate"
    skipped = "skipped"
    dead_letter = "dead_letter"


@dataclass(frozen=True)
class IntakeResult:
    outcome: Outcome
    event: ReceivedEvent | None = None
    reason: str | None = None


class Publisher(Protocol):
    """Where act() sends a top-level firing: state-change events, then triggered actions.

    It returns only once everything is durably published (JetStream acknowledged)."""

    async def publish(self, automation: Automation, out: Act) -> None: ...


AutomationSource = Callable[[], Awaitable[Sequence[Automation]]]


@dataclass(frozen=True)
class EngineSettings:
    expired_bucket_buffer: timedelta = timedelta(seconds=60)
    limits: EventLimits = DEFAULT_LIMITS


@dataclass
class LoadedAutomation:
    """An automation as loaded: its state generation and the keys of each trigger's state."""

    automation: Automation
    generation: str
    event_keys: dict[UUID, TriggerKeys] = field(default_factory=dict)
    composite_keys: dict[UUID, CompositeKeys] = field(default_factory=dict)

    def seed(self, trigger_id: UUID) -> str:
        return f"{trigger_id}:{self.generation}"


@dataclass
class Decision:
    """What one trigger decided for one event (for spans, explain and tests)."""

    automation_id: UUID
    trigger_id: UUID
    steps: str


class Engine:
    """One engine per process; any number of them may share one Redis."""

    def __init__(
        self,
        state: RedisState,
        publisher: Publisher,
        clock: Clock,
        source: AutomationSource | None = None,
        settings: EngineSettings = EngineSettings(),
    ):
        self.state = state
        self.publisher = publisher
        self.clock = clock
        self.source = source
        self.settings = settings
        self.automations: dict[UUID, LoadedAutomation] = {}
        self.index = TriggerIndex()
        self._owners: dict[UUID, LoadedAutomation] = {}
        self.next_proactive_runs: dict[UUID, int] = {}
        self._reconciled = False
        self.decisions: list[Decision] = []
        self.record_decisions = False

    def _now_us(self) -> tuple[datetime, int]:
        now = self.clock.now()
        return now, to_micros(now)

    # ------------------------------------------------------------------ loading (12)

    async def load(self, automation: Automation) -> None:
        """Load (or reload) an automation. Disabled ones, or ones with no EventTrigger, are
        forgotten. An unchanged trigger tree keeps its state; a changed one starts fresh and
        the old generation's state is deleted (Decision 6)."""
        generation = automation.trigger_fingerprint()
        ids = ",".join(str(t.id) for t in automation.all_triggers())
        previous = await self.state.swap_generation(automation.id, f"{generation}|{ids}")
        if previous is not None and previous.decode().split("|", 1)[0] != generation:
            await self._delete_generation(previous.decode())
        self.forget(automation.id)
        if not automation.enabled or not automation.event_triggers():
            return
        loaded = LoadedAutomation(automation=automation, generation=generation)
        for trigger in automation.all_triggers():
            if isinstance(trigger, EventTrigger):
                loaded.event_keys[trigger.id] = self.state.keys.trigger(trigger.id, generation)
                self.index.add(trigger)
                self._owners[trigger.id] = loaded
                self.next_proactive_runs.pop(trigger.id, None)
            else:
                loaded.composite_keys[trigger.id] = self.state.keys.composite(
                    trigger.id, generation
                )
        self.automations[automation.id] = loaded

    def forget(self, automation_id: UUID) -> None:
        """Unload an automation; its state stays (disable, then re-enable, picks it up)."""
        loaded = self.automations.pop(automation_id, None)
        if loaded is None:
            return
        for trigger_id in loaded.event_keys:
            self.index.remove(trigger_id)
            self._owners.pop(trigger_id, None)
            self.next_proactive_runs.pop(trigger_id, None)

    async def delete(self, automation_id: UUID) -> None:
        """Forget an automation and delete all its state (buckets, child firings, ...)."""
        self.forget(automation_id)
        previous = await self.state.forget_generation(automation_id)
        if previous is not None:
            await self._delete_generation(previous.decode())

    async def _delete_generation(self, record: str) -> None:
        generation, _, ids = record.partition("|")
        groups: list[TriggerKeys | CompositeKeys] = []
        for trigger_id in filter(None, ids.split(",")):
            groups.append(self.state.keys.trigger(UUID(trigger_id), generation))
            groups.append(self.state.keys.composite(UUID(trigger_id), generation))
        await self.state.delete_state(groups)

    async def reset(self) -> None:
        """Prefect's reset(): the events clock and the loaded automations are cleared; they
        come back at the next periodic evaluation's reconcile. Trigger state is untouched."""
        await self.state.reset_clock()
        for automation_id in list(self.automations):
            self.forget(automation_id)
        self.next_proactive_runs.clear()
        self._reconciled = False

    async def reconcile(self, force: bool = False) -> None:
        """Reload every automation from the source when asked to, or after a reset."""
        if self.source is None or (self._reconciled and not force):
            return
        automations = await self.source()
        for automation_id in list(self.automations):
            self.forget(automation_id)
        for automation in automations:
            await self.load(automation)
        self.next_proactive_runs.clear()
        self._reconciled = True

    # ------------------------------------------------------------------ intake (5.1)

    async def handle_message(self, body: bytes) -> IntakeResult:
        """Decode, filter and evaluate one event message (SEMANTICS 5.1, Decision 2)."""
        (result,) = await self.handle_batch([body])
        return result

    async def handle_batch(self, bodies: Sequence[bytes]) -> list[IntakeResult]:
        """Intake of one fetched batch, in order: bad input is reported for dead-lettering,
        log events and duplicates are dropped, the rest are evaluated (SEMANTICS 5.1)."""
        now, now_us = self._now_us()
        results: list[IntakeResult | None] = [None] * len(bodies)
        decoded: list[tuple[int, ReceivedEvent]] = []
        for position, body in enumerate(bodies):
            try:
                event = decode_event(body, received=now, limits=self.settings.limits)
            except InvalidEvent as exc:
                results[position] = IntakeResult(Outcome.dead_letter, reason=str(exc))
                continue
            if event.event == LOG_EVENT:
                results[position] = IntakeResult(Outcome.skipped, event)
                continue
            decoded.append((position, event))
        seen = await self.state.seen([e.id for _, e in decoded], now_us, micros(SEEN_HORIZON))
        fresh: list[tuple[int, ReceivedEvent]] = []
        ids: set[UUID] = set()
        for (position, event), was_seen in zip(decoded, seen, strict=True):
            # a second copy in the same batch is a duplicate of the first, as it would be
            # once the first is processed and marked seen
            if was_seen or event.id in ids:
                results[position] = IntakeResult(Outcome.duplicate, event)
                continue
            ids.add(event.id)
            fresh.append((position, event))
        parked = await self.reactive_evaluation([e for _, e in fresh])
        for position, event in fresh:
            outcome = Outcome.parked if event.id in parked else Outcome.evaluated
            results[position] = IntakeResult(outcome, event)
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ reactive (5.2, 10)

    async def reactive_evaluation(
        self, events: Sequence[ReceivedEvent], depth: int = 0
    ) -> set[UUID]:
        """Evaluate a batch of events, in order, for every interested trigger; return the ids
        of the events parked to wait for their leader.

        Round trips: one for the clock, the causal-ordering gate and the follower check; one
        per segment of the batch (a segment ends at an event that has parked followers, which
        are released right after it, as Prefect does); one to drain the outboxes of the
        firings decided (when there are any)."""
        if not events:
            return set()
        now, now_us = self._now_us()
        # 1. the events clock ticks first, so early and uninteresting events tick it too
        latest = max(min(to_micros(e.occurred), now_us) for e in events)
        if depth > MAX_DEPTH_OF_PRECEDING_EVENT:
            await self.state.call_many([self.state.tick(latest, now_us)])
            logger.warning(
                "followers of depth %d are too deep; they wait as lost followers", depth
            )
            return set()
        bodies = {e.id: orjson.dumps(e.to_json()) for e in events}
        # 2. the causal-ordering gate
        proceeding, parked, leaders = await self._gate(events, bodies, latest, now, now_us)
        # 3-5. evaluate segment by segment, releasing followers after their leader
        segment: list[ReceivedEvent] = []
        for event in proceeding:
            segment.append(event)
            if event.id in leaders:
                await self._evaluate_segment(segment, bodies, now_us, depth)
                segment = []
        await self._evaluate_segment(segment, bodies, now_us, depth)
        return parked

    async def _gate(
        self,
        events: Sequence[ReceivedEvent],
        bodies: dict[UUID, bytes],
        latest_us: int,
        now: datetime,
        now_us: int,
    ) -> tuple[list[ReceivedEvent], set[UUID], set[UUID]]:
        """SEMANTICS 10.1 step 3 for a batch: which events proceed, which are parked, and
        which have parked followers waiting for them."""
        position = {e.id: i for i, e in enumerate(events)}
        horizon = micros(SEEN_HORIZON)
        calls: list[Call] = [self.state.tick(latest_us, now_us)]
        parking: list[ReceivedEvent] = []
        after_leader: list[ReceivedEvent] = []
        for i, event in enumerate(events):
            if not self._must_wait_for_leader(event, now):
                continue
            if position.get(event.follows, len(events)) < i:  # type: ignore[arg-type]
                # its leader comes earlier in this batch: it shares its leader's fate
                after_leader.append(event)
                continue
            parking.append(event)
            calls.append(self._park(event, bodies, now_us, horizon))
        calls += [self.state.has_followers(e.id) for e in events]
        results = await self.state.call_many(calls)
        parked = {e.id for e, r in zip(parking, results[1:], strict=False) if r == b"parked"}
        leaders = {e.id for e, r in zip(events, results[1 + len(parking) :], strict=True) if r}
        # followers of a parked leader of this batch park too (checked by the script)
        late = [e for e in after_leader if e.follows in parked]
        if late:
            answers = await self.state.call_many(
                [self._park(e, bodies, now_us, horizon) for e in late]
            )
            parked |= {e.id for e, r in zip(late, answers, strict=True) if r == b"parked"}
        return [e for e in events if e.id not in parked], parked, leaders

    def _park(
        self, event: ReceivedEvent, bodies: dict[UUID, bytes], now_us: int, horizon: int
    ) -> ScriptCall:
        return self.state.park(
            event.follows,  # type: ignore[arg-type]
            event.id,
            bodies[event.id],
            to_micros(event.received),  # type: ignore[arg-type]
            now_us,
            horizon,
        )

    def _must_wait_for_leader(self, event: ReceivedEvent, now: datetime) -> bool:
        if event.follows is None or event.follows == event.id:
            return False
        # an event received at least the lookback ago is too old for bookkeeping
        return now - event.received < PRECEDING_EVENT_LOOKBACK  # type: ignore[operator]

    async def _evaluate_segment(
        self,
        events: Sequence[ReceivedEvent],
        bodies: dict[UUID, bytes],
        now_us: int,
        depth: int,
    ) -> None:
        """One pipeline: each event's trigger scripts, then its finish (seen mark)."""
        if not events:
            return
        calls: list[Call] = []
        plan: list[tuple[ReceivedEvent, list[EventTrigger]]] = []
        for event in events:
            triggers: list[EventTrigger] = self.index.interested(event)
            plan.append((event, triggers))
            occurred_us = to_micros(event.occurred)
            calls += [
                self._reactive_call(t, event, bodies[event.id], occurred_us, now_us)
                for t in triggers
            ]
            calls.append(self.state.finish(event.id, now_us))
        results = iter(await self.state.call_many(calls))
        drained: list[Call] = []
        released: list[bytes] = []
        for _event, triggers in plan:
            for trigger in triggers:
                result = next(results)
                loaded = self._owners[trigger.id]  # type: ignore[index]
                if self.record_decisions:
                    self.decisions.append(
                        Decision(loaded.automation.id, trigger.id, result[0].decode())  # type: ignore[arg-type]
                    )
                for record in result[1:]:
                    drained += await self._dispatch(loaded, trigger, record)
            released += next(results)
        await self.state.call_many(drained)
        await self._release_followers(released, depth)

    def _reactive_call(
        self, trigger: EventTrigger, event: ReceivedEvent, body: bytes, occurred_us: int,
        now_us: int,
    ) -> ScriptCall:
        loaded = self._owners[trigger.id]  # type: ignore[index]
        name = event.event
        flags = "".join(
            "1" if flag else "0"
            for flag in (
                trigger.posture == Posture.Reactive,
                bool(trigger.after),
                trigger.immediate,
                trigger.holds_events,
                trigger.starts_after(name),
                trigger.expects(name),
            )
        )
        args = [
            str(event.id),
            body,
            occurred_us,
            now_us,
            orjson.dumps(list(trigger.bucketing_key(event))),
            flags,
            trigger.threshold,
            micros(trigger.within),
            micros(PRECEDING_EVENT_LOOKBACK),
            loaded.seed(trigger.id),  # type: ignore[arg-type]
            micros(max(HELD_EXPECT_EVENTS_RETENTION, trigger.within)),
        ]
        keys = loaded.event_keys[trigger.id]  # type: ignore[index]
        return ScriptCall(self.state.scripts.reactive, keys.as_list(), args)

    async def _release_followers(self, bodies: Sequence[bytes], depth: int) -> None:
        """Evaluate released followers in `occurred` order, one level deeper (10.1 step 6)."""
        if not bodies:
            return
        now = self.clock.now()
        followers = [f for f in (self._parked_event(b, now) for b in bodies) if f]
        followers.sort(key=lambda f: f.occurred)
        await self.reactive_evaluation(followers, depth + 1)

    def _parked_event(self, body: bytes, now: datetime) -> ReceivedEvent | None:
        try:
            return decode_event(body, received=now, limits=self.settings.limits)
        except InvalidEvent:
            logger.exception("a parked follower no longer decodes; dropping it")
            return None

    # ------------------------------------------------------------------ firing (6 step 5, 7)

    async def _dispatch(
        self, loaded: LoadedAutomation, trigger: EventTrigger, raw: bytes
    ) -> list[Call]:
        """Turn an outbox record into a Firing and fire it; return the commands that drain it
        (and any composite firing it caused) from their outboxes, to send once it is out."""
        record = orjson.loads(raw)
        key = tuple(orjson.loads(record["key"]))
        firing = Firing(
            id=UUID(record["id"]),
            trigger=trigger,
            triggered=from_micros(int(record["triggered"])),
            at_us=int(record["at"]),
            triggering_labels=trigger.triggering_labels(key),
            triggering_event=orjson.loads(record["event"]) if record["event"] else None,
        )
        drained = await self.fire(loaded, firing)
        return [*drained, self.state.forget_firing(loaded.event_keys[trigger.id].outbox, record["id"])]

    async def fire(self, loaded: LoadedAutomation, firing: Firing) -> list[Call]:
        """SEMANTICS 7.1: act for a top-level trigger, else evaluate the parent composite."""
        parent = loaded.automation.parent_of(firing.trigger.id)  # type: ignore[arg-type]
        if parent is None:
            await self.act(loaded, firing)
            return []
        return await self.evaluate_composite(loaded, parent, firing)

    async def evaluate_composite(
        self,
        loaded: LoadedAutomation,
        parent: CompoundTrigger | SequenceTrigger,
        child: Firing,
    ) -> list[Call]:
        """SEMANTICS 7.2 with Decision 1 (event time)."""
        _, now_us = self._now_us()
        if parent.num_expected_firings == 1:
            # a single expected firing fires the parent at once, with nothing stored
            parent_firing = Firing(
                id=uuid5(child.id, f"composite:{loaded.seed(parent.id)}"),  # type: ignore[arg-type]
                trigger=parent,
                triggered=from_micros(now_us),
                at_us=child.at_us,
                triggering_firings=(child.to_json(),),
                triggering_event=child.triggering_event,
            )
            return await self.fire(loaded, parent_firing)
        keys = loaded.composite_keys[parent.id]  # type: ignore[index]
        record = orjson.dumps(
            {
                "id": str(child.id),
                "trigger_id": str(child.trigger.id),
                "at": str(child.at_us),
                "firing": child.to_json(),
            }
        )
        args = [
            str(child.trigger.id),
            str(child.id),
            record,
            child.at_us,
            "" if parent.within is None else micros(parent.within),
            parent.type,
            parent.num_expected_firings,
            " ".join(str(i) for i in parent.child_trigger_ids),
            now_us,
            loaded.seed(parent.id),  # type: ignore[arg-type]
        ]
        result = await self.state.call(self.state.scripts.composite, keys.as_list(), args)
        if result[0] != b"fired":
            return []
        fired = orjson.loads(result[1])
        children = fired["children"]
        completing = next(c for c in children if c["id"] == fired["completing"])
        parent_firing = Firing(
            id=UUID(fired["id"]),
            trigger=parent,
            triggered=from_micros(int(fired["triggered"])),
            at_us=int(fired["at"]),
            triggering_firings=tuple(c["firing"] for c in children),
            triggering_event=completing["firing"]["triggering_event"],
        )
        drained = await self.fire(loaded, parent_firing)
        return [*drained, self.state.forget_firing(keys.outbox, fired["id"])]

    async def act(self, loaded: LoadedAutomation, firing: Firing) -> None:
        """SEMANTICS 7.3: publish the state-change event, then one triggered action each."""
        out = act(loaded.automation, firing, received=self.clock.now())
        await self.publisher.publish(loaded.automation, out)

    # ------------------------------------------------------------------ proactive (8)

    async def evaluate_proactive_triggers(self) -> None:
        """Evaluate every proactive trigger whose next run is due (one round trip per page)."""
        now_us = to_micros(self.clock.now())
        as_of_us = now_us + await self.state.clock_offset(now_us)
        due = [
            trigger
            for loaded in self.automations.values()
            for trigger in loaded.automation.event_triggers()
            if trigger.posture == Posture.Proactive
            and self.next_proactive_runs.get(trigger.id, now_us) <= now_us  # type: ignore[arg-type]
        ]
        while due:
            calls = [self._proactive_call(trigger, as_of_us, now_us) for trigger in due]
            results = await self.state.call_many(calls)
            again = []
            drained: list[Call] = []
            for trigger, result in zip(due, results, strict=True):
                loaded = self._owners[trigger.id]  # type: ignore[index]
                self.next_proactive_runs[trigger.id] = int(result[0])  # type: ignore[index]
                for record in result[2:]:
                    drained += await self._dispatch(loaded, trigger, record)
                if result[1] == b"1":
                    again.append(trigger)
            await self.state.call_many(drained)
            due = again

    def _proactive_call(self, trigger: EventTrigger, as_of_us: int, now_us: int) -> ScriptCall:
        loaded = self._owners[trigger.id]  # type: ignore[index]
        flags = "".join(
            "1" if flag else "0"
            for flag in (bool(trigger.after), trigger.holds_events, not trigger.for_each)
        )
        args = [
            as_of_us,
            now_us,
            flags,
            trigger.threshold,
            micros(trigger.within),
            loaded.seed(trigger.id),  # type: ignore[arg-type]
            PROACTIVE_PAGE,
            EMPTY_KEY,
        ]
        keys = loaded.event_keys[trigger.id]  # type: ignore[index]
        return ScriptCall(self.state.scripts.proactive, keys.as_list(), args)

    # ------------------------------------------------------------------ periodic (9)

    async def periodic_evaluation(self) -> None:
        """Held-event sweep, reconcile, lost followers, bucket sweep (SEMANTICS 9)."""
        now_us = to_micros(self.clock.now())
        as_of_us = now_us + await self.state.clock_offset(now_us)
        await self._sweep(held_retention_us=micros(HELD_EXPECT_EVENTS_RETENTION), now_us=now_us)
        await self.reconcile()
        await self._evaluate_lost_followers(now_us)
        cutoff = as_of_us - micros(self.settings.expired_bucket_buffer)
        await self._sweep(bucket_cutoff_us=cutoff, seen_retention_us=micros(SEEN_HORIZON),
                          now_us=now_us)
        await self._drain_outboxes()

    async def _sweep(
        self,
        now_us: int,
        bucket_cutoff_us: int | None = None,
        held_retention_us: int | None = None,
        seen_retention_us: int | None = None,
    ) -> None:
        args = [
            "" if bucket_cutoff_us is None else bucket_cutoff_us,
            now_us,
            "" if held_retention_us is None else held_retention_us,
            "" if seen_retention_us is None else seen_retention_us,
        ]
        calls = [
            ScriptCall(self.state.scripts.sweep, keys.as_list(), args)
            for loaded in self.automations.values()
            for trigger_id, keys in loaded.event_keys.items()
            if held_retention_us is None or loaded.automation.trigger_by_id(trigger_id).holds_events  # type: ignore[union-attr]
        ]
        await self.state.call_many(calls)

    async def _evaluate_lost_followers(self, now_us: int) -> None:
        cutoff = now_us - micros(PRECEDING_EVENT_LOOKBACK)
        bodies = await self.state.lost_followers(cutoff, LOST_FOLLOWERS_PAGE)
        now = self.clock.now()
        lost = [e for e in (self._parked_event(b, now) for b in bodies) if e]
        # each lost follower on its own, in occurred order, as Prefect evaluates them
        for event in sorted(lost, key=lambda e: e.occurred):
            await self.reactive_evaluation([event])

    async def _drain_outboxes(self) -> None:
        """Publish what a crashed replica decided but did not publish (DESIGN, delivery)."""
        for loaded in list(self.automations.values()):
            outboxes = list(loaded.event_keys.values())
            records = await self.state.pending_firings([k.outbox for k in outboxes])
            for (trigger_id, _), pending in zip(loaded.event_keys.items(), records, strict=True):
                trigger = loaded.automation.trigger_by_id(trigger_id)
                drained: list[Call] = []
                for raw in pending:
                    drained += await self._dispatch(loaded, trigger, raw)  # type: ignore[arg-type]
                await self.state.call_many(drained)
