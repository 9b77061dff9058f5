"""The triggers engine: reactive, proactive, composite and periodic evaluation (SEMANTICS 5-12).

It reads like Prefect's `triggers` module, but every state transition is one atomic Lua
script (svc/state), time comes from an injected clock, and firings leave through an injected
publisher once they are recorded in an outbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol
from uuid import UUID, uuid5

import orjson
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from svc.connections import bulk_strings
from svc.domain import jsonio
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
from svc.state.keys import CompositeKeys, KeysByTrigger, TriggerKeys
from svc.state.store import BucketRecord, Call, Command, RedisState, ScriptCall

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
# How long a composite remembers the child firings it applied, so a child firing drained
# again from an outbox is applied once: drains come at the next periodic evaluation (before
# this trim runs), so this is a safety margin far beyond it, not a behavioural horizon.
APPLIED_CHILD_FIRINGS_RETENTION = timedelta(hours=6)

EMPTY_KEY = b"[]"
# Firings whose publishing is under way at once (a proactive page may decide hundreds).
FIRINGS_IN_FLIGHT = 256
# Automations whose generation records Engine.load_many swaps in one round trip.
LOAD_CHUNK = 1000
# Automations each periodic evaluation looks at beyond the active ones, in turn, so that all
# are looked at every (automations / page) runs: a safety net for state the set missed.
GENERATIONS_PAGE = 2000


def generation_record(automation: Automation) -> tuple[str, str]:
    """An automation's state generation (Decision 6) and the record Engine.load stores for
    it, `<generation>|<trigger id>,<trigger id>,...`."""
    generation = automation.trigger_fingerprint()
    ids = ",".join(str(t.id) for t in automation.all_triggers())
    return generation, f"{generation}|{ids}"


def parse_generation(record: str) -> tuple[str, list[UUID]]:
    """An automation's generation record, `<generation>|<trigger id>,<trigger id>,...`, as
    written by Engine.load: the generation and every trigger id of its tree."""
    generation, _, ids = record.partition("|")
    return generation, [UUID(i) for i in filter(None, ids.split(","))]


def _brief_text(brief: BucketBrief | None) -> str:
    return "" if brief is None else "|".join(str(part) for part in brief)


def firing_from_record(trigger: EventTrigger, raw: bytes) -> Firing:
    """The Firing of an event trigger's outbox record (bucket_machine.lua's `fire`)."""
    record = orjson.loads(raw)
    key = tuple(orjson.loads(record["key"]))
    return Firing(
        id=UUID(record["id"]),
        trigger=trigger,
        triggered=from_micros(int(record["triggered"])),
        at_us=int(record["at"]),
        triggering_labels=trigger.triggering_labels(key),
        # the event's JSON is a string in the record: read exactly (any integer)
        triggering_event=jsonio.loads(record["event"]) if record["event"] else None,
    )


def single_child_firing(
    loaded: LoadedAutomation,
    parent: CompoundTrigger | SequenceTrigger,
    child: Firing,
    now_us: int,
) -> Firing:
    """The firing of a composite that one child firing is enough for (SEMANTICS 7.2 step 1)."""
    return Firing(
        id=uuid5(child.id, f"composite:{loaded.seed(parent.id)}"),  # type: ignore[arg-type]
        trigger=parent,
        triggered=from_micros(now_us),
        at_us=child.at_us,
        triggering_firings=(child.to_json(),),
        triggering_event=child.triggering_event,
    )


def composite_firing_from_record(
    parent: CompoundTrigger | SequenceTrigger, raw: bytes
) -> Firing:
    """The Firing of a composite's outbox record (composite-3.lua's answer)."""
    fired = jsonio.loads(raw)  # its children's triggering events inside: any integer
    children = fired["children"]
    completing = next(c for c in children if c["id"] == fired["completing"])
    return Firing(
        id=UUID(fired["id"]),
        trigger=parent,
        triggered=from_micros(int(fired["triggered"])),
        at_us=int(fired["at"]),
        triggering_firings=tuple(c["firing"] for c in children),
        triggering_event=completing["firing"]["triggering_event"],
    )


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


@dataclass(slots=True)
class LoadedAutomation:
    """An automation as loaded: its state generation and the keys of each trigger's state.
    (Slots: a service holds one per loaded automation.)"""

    automation: Automation
    generation: str
    event_keys: Mapping[UUID, TriggerKeys] = field(default_factory=dict)
    composite_keys: dict[UUID, CompositeKeys] = field(default_factory=dict)
    # what every reactive-7 call of a trigger shares, built on its first event
    reactive_parts: dict[UUID, ReactiveParts] = field(default_factory=dict)

    def seed(self, trigger_id: UUID) -> str:
        return f"{trigger_id}:{self.generation}"


@dataclass(frozen=True)
class StateScope:
    """One automation's state, as a periodic evaluation visits it."""

    automation_id: UUID
    loaded: LoadedAutomation | None  # None: not loaded here, known from its generation record
    event_keys: list[TriggerKeys]
    holding_keys: list[TriggerKeys]  # those whose held events are swept
    composite_keys: list[CompositeKeys]


@dataclass(frozen=True)
class ReactiveParts:
    """The parts of a trigger's reactive-7 calls that are the same for every event."""

    trigger: EventTrigger  # the trigger they were built from (explain may pass another)
    flags: str  # reactive, has_after, immediate, holds_events ('1' or '0' each)
    keys: list[bytes]
    tail: list[bytes]  # threshold, within, lookback, seed, held-event horizon (ARGV 7-11)
    # the keys and the tail as RESP bulk strings: a batch's reactive-n call is packed from
    # these and each event's own arguments (RedisState.together)
    keys_resp: bytes
    tail_resp: bytes


BucketBrief = tuple[int, int, int]
# For each event of a batch: was it seen, and do followers wait for it (RedisState.intake_check)
IntakeCheck = tuple[list[bool], list[bool]]
# An event's candidate triggers (by name) and those interested in it (name and resources).
Lookup = tuple[list[EventTrigger], list[EventTrigger]]
# A bucketing key: the trigger's for_each labels' values in the event, in label order.
Key = tuple[str, ...]


@dataclass
class DecodedBatch:
    """A fetched batch as intake's first step leaves it: each message decoded (or refused),
    log events set aside (SEMANTICS 5.1 steps 1-3). No state is read to make it."""

    bodies: Sequence[bytes]
    results: list[IntakeResult | None]  # set for the refused and the log events
    decoded: list[tuple[int, ReceivedEvent]]  # (position in the batch, event): the rest
    # made ahead: each event's candidates and interested triggers, as the index stood at
    # `index_version` (they hold while it still does)
    lookups: dict[str, Lookup] = field(default_factory=dict)  # by event id (text)
    index_version: int = -1

    def made_from(self, bodies: Sequence[bytes]) -> bool:
        """Was this decoded from these very messages (the same objects, in order)?"""
        return len(bodies) == len(self.bodies) and all(
            a is b for a, b in zip(bodies, self.bodies, strict=True)
        )


def _retrieve(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()


def _raise_first_failure(outcomes: Sequence[object]) -> None:
    """Raise the first exception among gathered outcomes (`return_exceptions=True`)."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def brief_bucket(raw: bytes | str | None) -> BucketBrief | None:
    """A bucket as the scripts report it, `start|end|count` (us, us, events); None for ''."""
    if not raw:
        return None
    start, end, count = raw.split(b"|" if isinstance(raw, bytes) else "|")  # int() takes bytes
    return int(start), int(end), int(count)


@dataclass(slots=True)
class Decision:
    """What one trigger decided for one event, or for a window on the proactive path, or for
    a child firing of a composite (for spans, decision records, explain and tests)."""

    automation_id: UUID
    trigger_id: UUID
    steps: str
    event_id: UUID | None = None
    event_name: str | None = None
    occurred_us: int | None = None
    key: tuple[str, ...] | None = None
    # the bucket of `key` before and after (None: there was none / there is none)
    before: BucketBrief | None = None
    after: BucketBrief | None = None
    # 'reactive' (an event), 'proactive' (a window closed), 'composite' (a child firing)
    path: str = "reactive"
    # the trigger whose firing reached a composite (path 'composite')
    child_trigger_id: UUID | None = None


class Engine:
    """One engine per process; any number of them may share one Redis."""

    def __init__(
        self,
        state: RedisState,
        publisher: Publisher,
        clock: Clock,
        source: AutomationSource | None = None,
        settings: EngineSettings = EngineSettings(),
        tracer: trace.Tracer | None = None,
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
        # the loaded proactive triggers: proactive evaluation looks at these, not at every
        # automation
        self._proactive: dict[UUID, EventTrigger] = {}
        self._reconciled = False
        # where the periodic evaluation's look at every automation goes on from (HSCAN)
        self._scan_cursor = 0
        self.decisions: list[Decision] = []
        self.record_decisions = False
        self.tracer = tracer or trace.get_tracer("svc.engine")
        # A tracer that samples every span out (svc.telemetry's, when nothing exports them)
        # makes no evaluation spans: each event's own trace context, if it came with one,
        # stands in for its span and carries on to what it causes, as the sampled-out span
        # would have (with the producer's span as the parent, the only one that exists).
        self._spans_sampled_out = getattr(self.tracer, "sampler", None) is ALWAYS_OFF
        # the evaluation span of each event in flight, so its firings are traced under it
        # (Events are told apart by their ids as text in the engine: hashing UUIDs, five times
        # per event, cost more than comparing the strings.)
        self._spans: dict[str, trace.Span] = {}
        # Called once per batch while Redis evaluates it, so the caller can decode the next
        # batch meanwhile (`decode_ahead`); what it does must not touch the engine's state.
        self.meanwhile: Callable[[], None] | None = None
        self._ahead: DecodedBatch | None = None
        # the intake check of the batch decoded ahead, sent once this batch's evaluation
        # (its seen marks and parked followers above all) is done, to be answered while the
        # caller finishes this batch (see `_check_ahead`)
        self._ahead_check: tuple[DecodedBatch, asyncio.Future[IntakeCheck]] | None = None
        # the batch in hand (its lookups made ahead are used while the index version holds)
        self._in_hand: DecodedBatch | None = None
        # With `publish_in_background`, intake does not wait for the firings it decided: they
        # are published by a task chained after the one of the batch before (so in order),
        # and `take_batch_firings` gives the caller what the last batch started, to ack its
        # messages once it is done. Everything else that publishes or changes state a
        # firing touches waits for the chain first (`settle_firings`).
        self.publish_in_background = False
        self._batch_firings: list[asyncio.Future[None]] = []
        self._firing_chain: asyncio.Future[None] | None = None

    def _now_us(self) -> tuple[datetime, int]:
        now = self.clock.now()
        return now, to_micros(now)

    # ------------------------------------------------------------------ loading (12)

    async def load(self, automation: Automation) -> None:
        """Load (or reload) an automation. Disabled ones, or ones with no EventTrigger, are
        forgotten. An unchanged trigger tree keeps its state; a changed one starts fresh and
        the old generation's state is deleted (Decision 6)."""
        await self.settle_firings()
        generation, record = generation_record(automation)
        previous = await self.state.swap_generation(automation.id, record)
        await self._install(automation, generation, previous)

    async def load_many(self, automations: Sequence[Automation]) -> None:
        """`load` each automation, in order, with one round trip per LOAD_CHUNK of them for
        their generation records (a replica starting with many automations)."""
        await self.settle_firings()
        for start in range(0, len(automations), LOAD_CHUNK):
            chunk = automations[start : start + LOAD_CHUNK]
            records = [generation_record(automation) for automation in chunk]
            previous = await self.state.swap_generations(
                [(a.id, record) for a, (_, record) in zip(chunk, records, strict=True)]
            )
            for automation, (generation, _), before in zip(chunk, records, previous, strict=True):
                await self._install(automation, generation, before)

    async def _install(
        self, automation: Automation, generation: str, previous: bytes | None
    ) -> None:
        """The rest of `load`, once the automation's generation record is swapped in."""
        if previous is not None and previous.decode().split("|", 1)[0] != generation:
            await self._delete_generation(previous.decode())
        self.forget(automation.id)
        if not automation.enabled or not automation.event_triggers():
            return
        loaded = LoadedAutomation(automation=automation, generation=generation)
        loaded.event_keys = KeysByTrigger(
            self.state.keys, generation, [t.id for t in automation.event_triggers()]  # type: ignore[misc]
        )
        for trigger in automation.all_triggers():
            if isinstance(trigger, EventTrigger):
                self.index.add(trigger)
                self._owners[trigger.id] = loaded
                self.next_proactive_runs.pop(trigger.id, None)
                if trigger.posture == Posture.Proactive:
                    self._proactive[trigger.id] = trigger
            else:
                loaded.composite_keys[trigger.id] = self.state.keys.composite(
                    trigger.id, generation
                )
        self.automations[automation.id] = loaded

    def forget(self, automation_id: UUID) -> None:
        """Unload an automation; its state stays (disable, then re-enable, picks it up)."""
        # an automation change refreshes Prefect's snapshot, so after a reset() the next
        # reconcile finds nothing new and the untouched automations stay unloaded (12)
        self._reconciled = True
        loaded = self.automations.pop(automation_id, None)
        if loaded is None:
            return
        for trigger_id in loaded.event_keys:
            self.index.remove(trigger_id)
            self._owners.pop(trigger_id, None)
            self.next_proactive_runs.pop(trigger_id, None)
            self._proactive.pop(trigger_id, None)

    async def delete(self, automation_id: UUID) -> None:
        """Forget an automation and delete all its state (buckets, child firings, ...)."""
        await self.settle_firings()
        self.forget(automation_id)
        previous = await self.state.forget_generation(automation_id)
        if previous is not None:
            await self._delete_generation(previous.decode())

    async def _delete_generation(self, record: str) -> None:
        generation, trigger_ids = parse_generation(record)
        groups: list[TriggerKeys | CompositeKeys] = []
        for trigger_id in trigger_ids:
            groups.append(self.state.keys.trigger(trigger_id, generation))
            groups.append(self.state.keys.composite(trigger_id, generation))
        await self.state.delete_state(groups)

    async def reset_state(self, automation_id: UUID | None = None) -> None:
        """Delete the trigger state (buckets, held events, child firings, outboxes already
        drained) of one loaded automation, or of all of them and the events clock; the
        automations stay loaded and start over."""
        await self.settle_firings()
        chosen = (
            list(self.automations.values())
            if automation_id is None
            else [self.automations[automation_id]]
        )
        groups: list[TriggerKeys | CompositeKeys] = []
        for loaded in chosen:
            groups += loaded.event_keys.values()
            groups += loaded.composite_keys.values()
            for trigger_id in loaded.event_keys:
                self.next_proactive_runs.pop(trigger_id, None)
        await self.state.delete_state(groups)
        if automation_id is None:
            await self.state.reset_clock()

    async def buckets(self, automation_id: UUID, trigger_id: UUID) -> list[BucketRecord]:
        """The current buckets of one loaded EventTrigger (KeyError when not loaded)."""
        return await self.state.buckets(self.automations[automation_id].event_keys[trigger_id])

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

    async def handle_batch(
        self,
        bodies: Sequence[bytes],
        carriers: Sequence[dict[str, str] | None] | None = None,
    ) -> list[IntakeResult]:
        """Intake of one fetched batch, in order: bad input is reported for dead-lettering,
        log events and duplicates are dropped, the rest are evaluated (SEMANTICS 5.1).

        `carriers` are the messages' headers: each event's evaluation span continues the
        trace they carry (W3C trace context)."""
        if self._spans_sampled_out:
            spans = [
                trace.get_current_span(propagate.extract(carriers[i]))
                if carriers and carriers[i]
                else trace.INVALID_SPAN
                for i in range(len(bodies))
            ]
            return await self._intake(bodies, spans)
        spans = [
            self.tracer.start_span(
                "evaluate event",
                context=propagate.extract(carriers[i]) if carriers and carriers[i] else None,
            )
            for i in range(len(bodies))
        ]
        try:
            results = await self._intake(bodies, spans)
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(trace.StatusCode.ERROR, str(exc))
                span.end()
            raise
        for span, result in zip(spans, results, strict=True):
            span.set_attribute("intake.outcome", str(result.outcome))
            if result.reason:
                span.set_attribute("intake.reason", result.reason)
            span.end()
        return results

    def decode_ahead(self, bodies: Sequence[bytes]) -> None:
        """Decode the next batch while this one is evaluated (see `meanwhile`): the
        `handle_batch` of these very bodies then starts from what this made: the events,
        the triggers interested in each (used only if no automation is loaded or forgotten
        meanwhile) and the JSON of those that have some. Nothing reads the state, so it is
        the same as decoding them later, a few milliseconds earlier (their `received`)."""
        ahead = self._ahead = self._decode(bodies)
        ahead.index_version = self.index.version
        for _, event in ahead.decoded:
            ahead.lookups[event.id_text] = lookup = self._look_up(event)
            if lookup[1]:
                event.json_bytes  # noqa: B018 (made now, cached on the event)

    def _check_ahead(self) -> None:
        """Send the intake check of the batch decoded ahead, if any, now that this batch's
        evaluation is done, its followers' included: everything the check reads that this
        batch writes (seen marks, parked followers) is written, so its answer is the one
        the batch would get when its turn comes. It arrives while the caller finishes this
        batch (decision records, acks) instead of after, which saves a round trip's wait
        per batch. What another replica writes meanwhile is as it is without this: a
        window between the check and the evaluation (the scripts guard each trigger)."""
        ahead = self._ahead
        if ahead is None or not ahead.decoded:
            return
        _, now_us = self._now_us()
        check = asyncio.ensure_future(
            self.state.intake_check(
                [e.id_text for _, e in ahead.decoded], now_us, micros(SEEN_HORIZON)
            )
        )
        # retrieved here if the batch never comes (a stop; other messages): no warning
        check.add_done_callback(_retrieve)
        self._ahead_check = (ahead, check)

    def _look_up(self, event: ReceivedEvent) -> Lookup:
        candidates: list[EventTrigger] = self.index.candidates(event.event)
        return candidates, self.index.interested(event, candidates) if candidates else candidates

    def _while_evaluating(self) -> None:
        try:
            self.meanwhile()  # type: ignore[misc]
        except Exception:
            # the next batch is then decoded when its turn comes, as without it
            logger.exception("decoding the next batch ahead failed")

    def _decode(self, bodies: Sequence[bytes]) -> DecodedBatch:
        now = self.clock.now()
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
        return DecodedBatch(bodies, results, decoded)

    async def _intake(
        self, bodies: Sequence[bytes], spans: Sequence[trace.Span]
    ) -> list[IntakeResult]:
        ahead, self._ahead = self._ahead, None
        batch = ahead if ahead is not None and ahead.made_from(bodies) else self._decode(bodies)
        results, decoded = batch.results, batch.decoded
        self._in_hand = batch
        now, now_us = self._now_us()
        checked, self._ahead_check = self._ahead_check, None
        if checked is not None and checked[0] is batch:
            seen, waited = await checked[1]
        else:
            if checked is not None:
                checked[1].cancel()
            seen, waited = await self.state.intake_check(
                [e.id_text for _, e in decoded], now_us, micros(SEEN_HORIZON)
            )
        fresh: list[tuple[int, ReceivedEvent]] = []
        ids: set[str] = set()
        leaders: set[str] = set()
        for (position, event), was_seen, has_followers in zip(decoded, seen, waited, strict=True):
            # a second copy in the same batch is a duplicate of the first, as it would be
            # once the first is processed and marked seen
            if was_seen or event.id_text in ids:
                results[position] = IntakeResult(Outcome.duplicate, event)
                continue
            ids.add(event.id_text)
            fresh.append((position, event))
            if has_followers:
                leaders.add(event.id_text)
        for position, event in decoded:
            span = spans[position]
            if span.is_recording():
                span.set_attributes({"event.id": event.id_text, "event.name": event.event})
        self._spans.update((event.id_text, spans[position]) for position, event in fresh)
        try:
            parked = await self.reactive_evaluation([e for _, e in fresh], leaders=leaders)
        finally:
            self._in_hand = None
            for _, event in fresh:
                self._spans.pop(event.id_text, None)
        self._check_ahead()
        for position, event in fresh:
            outcome = Outcome.parked if event.id_text in parked else Outcome.evaluated
            results[position] = IntakeResult(outcome, event)
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ reactive (5.2, 10)

    async def reactive_evaluation(
        self,
        events: Sequence[ReceivedEvent],
        depth: int = 0,
        leaders: set[str] | None = None,
    ) -> set[str]:
        """Evaluate a batch of events, in order, for every interested trigger; return the ids
        (as text) of the events parked to wait for their leader. `leaders`, when intake knows
        them already, are the ids of the events that have parked followers.

        Round trips: one for the clock, the causal-ordering gate and the follower check (none
        when no event must wait for its leader and `leaders` are known: the clock then ticks
        in the first segment's round trip); one per segment of the batch (a segment ends at
        an event that has parked followers, which are released right after it, as Prefect
        does); one to drain the outboxes of the firings decided (when there are any)."""
        if not events:
            return set()
        now, now_us = self._now_us()
        # 1. the events clock ticks first, so early and uninteresting events tick it too
        latest = max(min(e.occurred_us, now_us) for e in events)
        if depth > MAX_DEPTH_OF_PRECEDING_EVENT:
            await self.state.call_many([self.state.tick(latest, now_us)])
            logger.warning(
                "followers of depth %d are too deep; they wait as lost followers", depth
            )
            return set()
        # 2. the causal-ordering gate; `pending` is what it left for the first segment to send
        proceeding, parked, leaders, pending = await self._gate(
            events, latest, now, now_us, leaders
        )
        # 3-5. evaluate segment by segment, releasing followers after their leader
        segment: list[ReceivedEvent] = []
        for event in proceeding:
            segment.append(event)
            if event.id_text in leaders:
                await self._evaluate_segment(segment, now_us, depth, pending)
                segment, pending = [], []
        await self._evaluate_segment(segment, now_us, depth, pending)
        return parked

    async def _gate(
        self,
        events: Sequence[ReceivedEvent],
        latest_us: int,
        now: datetime,
        now_us: int,
        leaders: set[str] | None = None,
    ) -> tuple[list[ReceivedEvent], set[str], set[str], list[Call]]:
        """SEMANTICS 10.1 step 3 for a batch: which events proceed, which are parked, which
        have parked followers waiting for them (unless `leaders` says), and the calls left
        to send before the first segment: the clock's tick, when nothing had to be asked."""
        position = {e.id_text: i for i, e in enumerate(events)}
        horizon = micros(SEEN_HORIZON)
        calls: list[Call] = [self.state.tick(latest_us, now_us)]
        parking: list[ReceivedEvent] = []
        after_leader: list[ReceivedEvent] = []
        for i, event in enumerate(events):
            if not self.must_wait_for_leader(event, now):
                continue
            if position.get(str(event.follows), len(events)) < i:
                # its leader comes earlier in this batch: it shares its leader's fate
                after_leader.append(event)
                continue
            parking.append(event)
            calls.append(self._park(event, now_us, horizon))
        if leaders is not None and not parking:
            # nothing to ask before evaluating: the tick goes with the first segment
            return list(events), set(), leaders, calls
        # asked after the parks, so a leader of this batch sees its followers parked just now
        calls += [self.state.has_followers(e.id_text) for e in events]
        results = await self.state.call_many(calls)
        parked = {
            e.id_text for e, r in zip(parking, results[1:], strict=False) if r == b"parked"
        }
        leaders = {
            e.id_text for e, r in zip(events, results[1 + len(parking) :], strict=True) if r
        }
        # followers of a parked leader of this batch park too, and so, transitively, do
        # their own followers further on in the batch (the script checks each leader)
        late: list[ReceivedEvent] = []
        waiting = set(parked)
        for event in after_leader:
            if str(event.follows) in waiting:
                late.append(event)
                waiting.add(event.id_text)
        if late:
            answers = await self.state.call_many(
                [self._park(e, now_us, horizon) for e in late]
            )
            parked |= {e.id_text for e, r in zip(late, answers, strict=True) if r == b"parked"}
        return [e for e in events if e.id_text not in parked], parked, leaders, []

    def _park(self, event: ReceivedEvent, now_us: int, horizon: int) -> ScriptCall:
        return self.state.park(
            event.follows,  # type: ignore[arg-type]
            event.id_text,
            event.json_bytes,
            to_micros(event.received),  # type: ignore[arg-type]
            now_us,
            horizon,
        )

    def must_wait_for_leader(self, event: ReceivedEvent, now: datetime) -> bool:
        """Must this event wait for its leader (`follows`) before it is evaluated (10.1)?"""
        if event.follows is None or event.follows == event.id:
            return False
        # an event received at least the lookback ago is too old for bookkeeping
        return now - event.received < PRECEDING_EVENT_LOOKBACK  # type: ignore[operator]

    async def _evaluate_segment(
        self,
        events: Sequence[ReceivedEvent],
        now_us: int,
        depth: int,
        before: Sequence[Call] = (),
    ) -> None:
        """One pipeline: `before` (the clock's tick, at most), each event's trigger scripts,
        then the segment's finish (seen marks, in order)."""
        if not events:
            if before:
                await self.state.call_many(before)
            return
        calls: list[Call] = list(before)
        evaluations: list[ScriptCall] = []
        # each trigger's automation as loaded now: an admin change may forget it while the
        # scripts run, and what they decided must still be dispatched
        plan: list[tuple[ReceivedEvent, list[tuple[EventTrigger, LoadedAutomation, Key]]]] = []
        batch = self._in_hand
        ahead = batch.lookups if batch and batch.index_version == self.index.version else {}
        for event in events:
            candidates, triggers = ahead.get(event.id_text) or self._look_up(event)
            if len(triggers) < len(candidates):
                self._trace_not_covered(event, candidates, triggers)
            if not triggers:
                continue
            occurred_us = event.occurred_us
            owned = [(t, self._owners[t.id], t.bucketing_key(event)) for t in triggers]  # type: ignore[index]
            plan.append((event, owned))
            evaluations += [
                self._reactive_call(t, event, occurred_us, now_us, key)
                for t, _, key in owned
            ]
        touched = {loaded.automation.id_text for _, owned in plan for _, loaded, _ in owned}
        if touched:
            # before the scripts: an automation with state is always in the active set
            calls.append(self.state.touch(touched))
        # one reactive-n call for them all on a single Redis, else one reactive-7 call each
        together = self.state.together(evaluations)
        calls += together
        calls.append(self.state.finish([e.id_text for e in events], now_us))
        if self.meanwhile is None or depth:
            answers = await self.state.call_many(calls)
        else:
            written, sending = self.state.send_many(calls)
            try:
                # once the pipeline is out, the next batch is decoded while Redis runs it
                await asyncio.wait([written, sending], return_when=asyncio.FIRST_COMPLETED)
                self._while_evaluating()
            finally:
                answers = await sending
        evaluated = answers[len(before) + bool(touched) : -1]
        results = iter(evaluated[0] if len(together) < len(evaluations) else evaluated)
        # what each firing causes is traced under the event that caused it, and the
        # publisher carries that trace context on to the action messages
        firings: list[tuple[trace.Span, LoadedAutomation, EventTrigger, bytes]] = []
        for event, owned in plan:
            span = self._spans.get(event.id_text) or trace.INVALID_SPAN
            decided = self.record_decisions or span.is_recording()
            for trigger, loaded, key in owned:
                result = next(results)
                if decided:
                    self._decided(
                        span, loaded, trigger, result[0].decode(), event,
                        brief_bucket(result[1]), brief_bucket(result[2]), key,
                    )
                if len(result) > 3:
                    firings += [(span, loaded, trigger, record) for record in result[3:]]
        if self.publish_in_background:
            self._fire_in_background(firings)
            if firings:
                # the publishing starts now, before this task goes on to the next batch
                await asyncio.sleep(0)
        else:
            await self._fire_decided(firings)
        await self._release_followers([b for found in answers[-1] for b in found], depth)

    def _fire_in_background(
        self, firings: Sequence[tuple[trace.Span, LoadedAutomation, EventTrigger, bytes]]
    ) -> None:
        """`_fire_decided` in a task chained after the firings of the batches before (see
        `publish_in_background`)."""
        if not firings:
            return
        before = self._firing_chain

        async def after_the_ones_before() -> None:
            if before is not None and not before.done():
                await asyncio.wait([before])  # its outcome is its own batch's
            await self._fire_decided(firings)

        self._firing_chain = asyncio.ensure_future(after_the_ones_before())
        self._batch_firings.append(self._firing_chain)

    async def settle_firings(self) -> None:
        """Wait until the firings publishing in the background are done (failed or not:
        a failure is for the batch that decided them)."""
        chain = self._firing_chain
        if chain is not None and not chain.done():
            await asyncio.wait([chain])

    def take_batch_firings(self) -> asyncio.Future[None] | None:
        """A future done once every firing decided since the last call is published and
        drained from its outbox (failed with the first error, if one failed); None when
        there were none."""
        tasks, self._batch_firings = self._batch_firings, []
        if not tasks:
            return None

        async def all_of() -> None:
            _raise_first_failure(await asyncio.gather(*tasks, return_exceptions=True))

        return asyncio.ensure_future(all_of())

    async def _fire_decided(
        self, firings: Sequence[tuple[trace.Span, LoadedAutomation, EventTrigger, bytes]]
    ) -> None:
        """Fire the outbox records the scripts wrote, in order, without waiting for one
        publish before starting the next, so a batch waits for about one publish round trip
        rather than one per firing (at most FIRINGS_IN_FLIGHT at once). Each firing starts
        in order, so its messages go out in order; one under a composite also waits for the
        previous such firing of its automation to be done, as the composite applies its
        children's firings one at a time, in order. What each firing causes is traced under
        the event that caused it (the publisher carries that context on).

        Then what was published is drained from the outboxes, even when a firing failed to
        publish, so the periodic drain does not publish it a second time."""
        if not firings:
            return
        drained: list[Call] = []
        in_flight = asyncio.Semaphore(FIRINGS_IN_FLIGHT)

        async def fire(
            after: asyncio.Future[None] | None,
            span: trace.Span,
            loaded: LoadedAutomation,
            trigger: EventTrigger,
            record: bytes,
        ) -> None:
            if after is not None:
                if not after.done():
                    await asyncio.wait([after])
                if after.cancelled() or after.exception() is not None:
                    return  # stays in the outbox, for the periodic drain
            async with in_flight:
                with trace.use_span(span, end_on_exit=False):
                    drained.extend(await self._dispatch(loaded, trigger, record))

        try:
            if len(firings) == 1:
                await fire(None, *firings[0])
                outcomes: list[BaseException | None] = []
            else:
                previous: dict[UUID, asyncio.Future[None]] = {}
                tasks = []
                for span, loaded, trigger, record in firings:
                    automation_id = loaded.automation.id
                    composed = loaded.automation.parent_of(trigger.id) is not None  # type: ignore[arg-type]
                    after = previous.get(automation_id) if composed else None
                    task = asyncio.ensure_future(fire(after, span, loaded, trigger, record))
                    if composed:
                        previous[automation_id] = task
                    tasks.append(task)
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self.state.call_many(drained)
        _raise_first_failure(outcomes)

    def _trace_not_covered(
        self,
        event: ReceivedEvent,
        candidates: list[EventTrigger],
        interested: list[EventTrigger],
    ) -> None:
        span = self._spans.get(event.id_text) or trace.INVALID_SPAN
        if not span.is_recording() and not self.record_decisions:
            return
        chosen = {t.id for t in interested}
        for candidate in candidates:
            if candidate.id not in chosen:
                loaded = self._owners[candidate.id]
                self._decided(span, loaded, candidate, "not_covered", event)

    def _decided(
        self,
        span: trace.Span,
        loaded: LoadedAutomation,
        trigger: EventTrigger,
        steps: str,
        event: ReceivedEvent,
        before: BucketBrief | None = None,
        after: BucketBrief | None = None,
        key: Key | None = None,
    ) -> None:
        """Put one trigger's decision for an event on its span, and record it when asked."""
        if not span.is_recording() and not self.record_decisions:
            return
        if key is None:
            key = trigger.bucketing_key(event)
        if span.is_recording():
            span.add_event(
                "trigger decision",
                {
                    "automation.id": str(loaded.automation.id),
                    "trigger.id": str(trigger.id),
                    "decision": steps,
                    "bucketing_key": orjson.dumps(list(key)).decode(),
                    "bucket.before": _brief_text(before),
                    "bucket.after": _brief_text(after),
                },
            )
        if self.record_decisions:
            self.decisions.append(
                Decision(
                    loaded.automation.id,
                    trigger.id,  # type: ignore[arg-type]
                    steps,
                    event_id=event.id,
                    event_name=event.event,
                    occurred_us=event.occurred_us,
                    key=key,
                    before=before,
                    after=after,
                )
            )

    def _reactive_call(
        self, trigger: EventTrigger, event: ReceivedEvent, occurred_us: int, now_us: int,
        key: Key | None = None,
    ) -> ScriptCall:
        loaded = self._owners[trigger.id]  # type: ignore[index]
        parts = loaded.reactive_parts.get(trigger.id)  # type: ignore[arg-type]
        if parts is None or parts.trigger is not trigger:
            parts = self._reactive_parts(loaded, trigger)
        name = event.event
        flags = (
            parts.flags
            + ("1" if trigger.starts_after(name) else "0")
            + ("1" if trigger.expects(name) else "0")
        )
        if key is None:
            key = trigger.bucketing_key(event)
        event_id = event.id_text.encode()
        body = event.json_bytes
        occurred, now, key_json, flag_bytes = (
            b"%d" % occurred_us, b"%d" % now_us, orjson.dumps(key), flags.encode()
        )
        args = [event_id, body, occurred, now, key_json, flag_bytes, *parts.tail]
        # the same arguments as RESP bulk strings, in one formatting (svc/connections.py:
        # bulk_strings packs each alike, hiredis too; tests/state/test_packing.py)
        packed = b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n%b" % (
            len(event_id), event_id, len(body), body, len(occurred), occurred,
            len(now), now, len(key_json), key_json, len(flag_bytes), flag_bytes,
            parts.tail_resp,
        )  # fmt: skip
        return ScriptCall(
            self.state.scripts.reactive, parts.keys, args, packed=(parts.keys_resp, packed)
        )

    @staticmethod
    def _reactive_parts(loaded: LoadedAutomation, trigger: EventTrigger) -> ReactiveParts:
        flags = "".join(
            "1" if flag else "0"
            for flag in (
                trigger.posture == Posture.Reactive,
                bool(trigger.after),
                trigger.immediate,
                trigger.holds_events,
            )
        )
        # as bytes: the Redis client sends bytes as they are, and these go with every event
        tail = [
            str(value).encode()
            for value in (
                trigger.threshold,
                micros(trigger.within),
                micros(PRECEDING_EVENT_LOOKBACK),
                loaded.seed(trigger.id),  # type: ignore[arg-type]
                micros(max(HELD_EXPECT_EVENTS_RETENTION, trigger.within)),
            )
        ]
        keys = [key.encode() for key in loaded.event_keys[trigger.id].as_list()]  # type: ignore[index]
        parts = ReactiveParts(trigger, flags, keys, tail, bulk_strings(keys), bulk_strings(tail))
        if loaded.automation.trigger_by_id(trigger.id) is trigger:  # type: ignore[arg-type]
            loaded.reactive_parts[trigger.id] = parts  # type: ignore[index]
        return parts

    def reactive_call(self, trigger: EventTrigger, event: ReceivedEvent, now_us: int) -> ScriptCall:
        """The reactive-7 call that evaluates `event` for a loaded trigger, exactly as intake
        sends it (explain runs the same call on scratch copies of the trigger's keys)."""
        return self._reactive_call(trigger, event, event.occurred_us, now_us)

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
        firing = firing_from_record(trigger, raw)
        drained = await self.fire(loaded, firing)
        outbox = loaded.event_keys[trigger.id].outbox  # type: ignore[index]
        return [*drained, self.state.forget_firing(outbox, str(firing.id))]

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
            return await self.fire(loaded, single_child_firing(loaded, parent, child, now_us))
        call = self.composite_call(loaded, parent, child, now_us)
        result = await self.state.call(call.script, call.keys, call.args)
        if self.record_decisions:
            self.decisions.append(
                Decision(
                    loaded.automation.id,
                    parent.id,  # type: ignore[arg-type]
                    result[0].decode(),
                    path="composite",
                    child_trigger_id=child.trigger.id,
                )
            )
        if result[0] != b"fired":
            return []
        return await self._dispatch_composite(loaded, parent, result[1])

    def composite_call(
        self,
        loaded: LoadedAutomation,
        parent: CompoundTrigger | SequenceTrigger,
        child: Firing,
        now_us: int,
    ) -> ScriptCall:
        """The composite-3 call that applies a child firing to its parent (explain runs the
        same call on scratch copies of the parent's keys)."""
        keys = loaded.composite_keys[parent.id]  # type: ignore[index]
        record = jsonio.dumps(
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
        return ScriptCall(self.state.scripts.composite, keys.as_list(), args)

    async def _dispatch_composite(
        self, loaded: LoadedAutomation, parent: CompoundTrigger | SequenceTrigger, raw: bytes
    ) -> list[Call]:
        """Fire a composite's outbox record; return the commands that drain it (and what it
        caused) from their outboxes, to send once it is out."""
        parent_firing = composite_firing_from_record(parent, raw)
        drained = await self.fire(loaded, parent_firing)
        outbox = loaded.composite_keys[parent.id].outbox  # type: ignore[index]
        return [*drained, self.state.forget_firing(outbox, str(parent_firing.id))]

    async def act(self, loaded: LoadedAutomation, firing: Firing) -> None:
        """SEMANTICS 7.3: publish the state-change event, then one triggered action each."""
        out = act(loaded.automation, firing, received=self.clock.now())
        current = trace.get_current_span()
        if self._spans_sampled_out or (
            current.get_span_context().is_valid and not current.is_recording()
        ):
            # under a sampled-out span its children are sampled out too (every sampler
            # decides a trace alike): none is made, the messages carry the current context on
            await self.publisher.publish(loaded.automation, out)
            return
        attributes = {
            "automation.id": str(loaded.automation.id),
            "firing.id": str(firing.id),
            "trigger.id": str(firing.trigger.id),
            "actions": len(out.actions),
        }
        published = {"messages": len(out.events) + len(out.actions)}
        with (
            self.tracer.start_as_current_span("act", attributes=attributes),
            self.tracer.start_as_current_span("publish", attributes=published),
        ):
            await self.publisher.publish(loaded.automation, out)

    # ------------------------------------------------------------------ proactive (8)

    async def evaluate_proactive_triggers(self) -> None:
        """Evaluate every proactive trigger whose next run is due (one round trip per page)."""
        await self.settle_firings()
        now_us = to_micros(self.clock.now())
        as_of_us = now_us + await self.state.clock_offset(now_us)
        attributes = {"as_of": from_micros(as_of_us).isoformat()}
        with self.tracer.start_as_current_span("proactive evaluation", attributes=attributes):
            await self._evaluate_proactive(now_us, as_of_us)

    async def _evaluate_proactive(self, now_us: int, as_of_us: int) -> None:
        # each trigger with its automation as loaded now: an admin change may forget it
        # while the scripts run, and what they decided must still be dispatched
        due = [
            (trigger, self._owners[trigger_id])
            for trigger_id, trigger in self._proactive.items()
            if self.next_proactive_runs.get(trigger_id, now_us) <= now_us
        ]
        due = await self._with_state_or_global(due, as_of_us)
        while due:
            touch = self.state.touch({loaded.automation.id for _, loaded in due})
            calls = [self._proactive_call(t, loaded, as_of_us, now_us) for t, loaded in due]
            results = (await self.state.call_many([touch, *calls]))[1:]
            again = []
            span = trace.get_current_span()
            firings: list[tuple[trace.Span, LoadedAutomation, EventTrigger, bytes]] = []
            for (trigger, loaded), result in zip(due, results, strict=True):
                self.next_proactive_runs[trigger.id] = int(result[0])  # type: ignore[index]
                for record in result[2:]:
                    self._window_fired(loaded, trigger, record)
                    firings.append((span, loaded, trigger, record))
                # more due buckets: evaluated on, unless the automation was forgotten
                if result[1] == b"1" and self._owners.get(trigger.id) is loaded:  # type: ignore[arg-type]
                    again.append((trigger, loaded))
            await self._fire_decided(firings)
            due = again

    async def _with_state_or_global(
        self, due: list[tuple[EventTrigger, LoadedAutomation]], as_of_us: int
    ) -> list[tuple[EventTrigger, LoadedAutomation]]:
        """The due proactive triggers worth a script call: those without `for_each` (the
        script keeps their global bucket, state or not) and those whose automation is in the
        active set. A trigger with `for_each` whose automation has no state has nothing to
        evaluate: its script would find no bucket, make none and answer "again after
        `within`", which is what its next run is set to here, without the call. (Its
        automation joins the active set before its first bucket is made: touch-1 goes
        before every script that makes state. State the set missed, which the periodic
        evaluation finds, makes its proactive triggers due at once: `_periodic_scope`.)
        After a start with 100,000 automations loaded, the first run called the script for
        each of their 5,000 proactive triggers, and marked them all active, mid-traffic
        (docs/performance.md)."""
        keyed = [(t, loaded) for t, loaded in due if t.for_each]
        if not keyed:
            return due
        active = await self.state.are_active([loaded.automation.id_text for _, loaded in keyed])
        idle = {t.id for (t, _), is_active in zip(keyed, active, strict=True) if not is_active}
        for t, _ in keyed:
            if t.id in idle:
                self.next_proactive_runs[t.id] = as_of_us + micros(t.within)  # type: ignore[index]
        return [(t, loaded) for t, loaded in due if t.id not in idle]

    def _window_fired(self, loaded: LoadedAutomation, trigger: EventTrigger, raw: bytes) -> None:
        """Record a firing of proactive evaluation: its window closed short of the threshold."""
        if not self.record_decisions:
            return
        record = orjson.loads(raw)
        self.decisions.append(
            Decision(
                loaded.automation.id,
                trigger.id,  # type: ignore[arg-type]
                "window_closed fired",
                key=tuple(orjson.loads(record["key"])),
                before=(int(record["s"]), int(record["e"]), int(record["c"])),
                path="proactive",
            )
        )

    def _proactive_call(
        self, trigger: EventTrigger, loaded: LoadedAutomation, as_of_us: int, now_us: int
    ) -> ScriptCall:
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
        """Held-event sweep, reconcile, lost followers, bucket sweep (SEMANTICS 9); then the
        outboxes a crash left behind are drained and old applied child firings trimmed.

        Only automations with state are visited: those in the active set (touch-1), which
        every script that creates state is sent after, so the cost follows what is in use,
        not what is loaded. Each run also looks at one page of all automations, in turn, so
        that state the set missed (left by an older version, or by a Redis Cluster node that
        took the script but not the touch) is found and swept too, within a few runs."""
        await self.settle_firings()
        now_us = to_micros(self.clock.now())
        as_of_us = now_us + await self.state.clock_offset(now_us)
        scope = await self._periodic_scope()
        await self._sweep(
            [k for s in scope for k in s.holding_keys],
            held_retention_us=micros(HELD_EXPECT_EVENTS_RETENTION),
            now_us=now_us,
        )
        await self.reconcile()
        await self._evaluate_lost_followers(now_us)
        cutoff = as_of_us - micros(self.settings.expired_bucket_buffer)
        await self._sweep(
            [k for s in scope for k in s.event_keys],
            bucket_cutoff_us=cutoff,
            seen_retention_us=micros(SEEN_HORIZON),
            now_us=now_us,
        )
        await self._drain_outboxes([s.loaded for s in scope if s.loaded is not None])
        await self._trim_applied(
            [k for s in scope for k in s.composite_keys],
            now_us - micros(APPLIED_CHILD_FIRINGS_RETENTION),
        )

    async def _periodic_scope(self) -> list[StateScope]:
        """The automations whose state this periodic evaluation visits: the active ones, and
        one page of every automation with a generation record (loaded here or not), taken
        in turn from run to run; of those, the ones that still have state. The others leave
        the active set; the page's ones with state join it."""
        since_us, active = await self.state.active()
        self._scan_cursor, page = await self.state.scan_generations(
            self._scan_cursor, GENERATIONS_PAGE
        )
        records = dict(page)
        others = [i for i in active if i not in self.automations and i not in records]
        records.update(zip(others, await self.state.generations_of(others), strict=True))
        scopes = []
        for automation_id in dict.fromkeys([*active, *records]):
            loaded = self.automations.get(automation_id)
            record = records.get(automation_id)
            if loaded is not None:
                scopes.append(self._loaded_scope(loaded))
            elif record is not None:
                scopes.append(self._unloaded_scope(automation_id, record.decode()))
        groups = [(s, k) for s in scopes for k in (*s.event_keys, *s.composite_keys)]
        found = await self.state.with_state([k for _, k in groups])
        with_state = {s.automation_id for (s, _), has in zip(groups, found, strict=True) if has}
        kept = [s for s in scopes if s.automation_id in with_state]
        await self.state.retire([i for i in active if i not in with_state], since_us)
        joining = {s.automation_id for s in kept} - set(active)
        if joining:
            await self.state.call_many([self.state.touch(joining)])
            # state the active set missed: its proactive triggers are looked at now, not
            # when the look skipped for want of state said (`_with_state_or_global`)
            for automation_id in joining:
                loaded = self.automations.get(automation_id)
                if loaded is not None:
                    for trigger in loaded.automation.event_triggers():
                        self.next_proactive_runs.pop(trigger.id, None)  # type: ignore[arg-type]
        return kept

    def _loaded_scope(self, loaded: LoadedAutomation) -> StateScope:
        """A loaded automation's state: its event triggers' (those holding events for the
        held-event sweep) and its composites'."""
        automation = loaded.automation
        return StateScope(
            automation_id=automation.id,
            loaded=loaded,
            event_keys=list(loaded.event_keys.values()),
            holding_keys=[
                keys
                for trigger_id, keys in loaded.event_keys.items()
                if automation.trigger_by_id(trigger_id).holds_events  # type: ignore[union-attr]
            ],
            composite_keys=list(loaded.composite_keys.values()),
        )

    def _unloaded_scope(self, automation_id: UUID, record: str) -> StateScope:
        """The state of an automation not loaded here (disabled, or not yet loaded by this
        replica), from its generation record. Prefect's sweeps delete every expired bucket
        and held event, so a disabled automation's expired state is gone when it is enabled
        again (SEMANTICS 9, 12), and does not outlive the sweep meanwhile. The record lists
        every trigger id without its kind: each is swept as an event trigger (holding
        events) and trimmed as a composite; keys of the other shape do not exist, so that
        changes nothing."""
        generation, trigger_ids = parse_generation(record)
        event_keys = [self.state.keys.trigger(i, generation) for i in trigger_ids]
        return StateScope(
            automation_id=automation_id,
            loaded=None,
            event_keys=event_keys,
            holding_keys=event_keys,
            composite_keys=[self.state.keys.composite(i, generation) for i in trigger_ids],
        )

    async def _trim_applied(self, groups: Sequence[CompositeKeys], cutoff_us: int) -> None:
        """Forget the child firings composites applied before the cutoff, after the outboxes
        were drained."""
        await self.state.call_many(
            [Command(("ZREMRANGEBYSCORE", k.applied, "-inf", f"({cutoff_us}")) for k in groups]
        )

    async def _sweep(
        self,
        keys: Sequence[TriggerKeys],
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
        calls = [ScriptCall(self.state.scripts.sweep, k.as_list(), args) for k in keys]
        await self.state.call_many(calls)

    async def _evaluate_lost_followers(self, now_us: int) -> None:
        cutoff = now_us - micros(PRECEDING_EVENT_LOOKBACK)
        bodies = await self.state.lost_followers(cutoff, LOST_FOLLOWERS_PAGE)
        now = self.clock.now()
        lost = [e for e in (self._parked_event(b, now) for b in bodies) if e]
        # each lost follower on its own, in occurred order, as Prefect evaluates them
        for event in sorted(lost, key=lambda e: e.occurred):
            await self.reactive_evaluation([event])

    async def _drain_outboxes(self, automations: Sequence[LoadedAutomation]) -> None:
        """Publish what a crashed replica decided but did not publish (DESIGN, delivery).

        Event triggers' outboxes first, then composites' own, innermost first: a drained
        child firing reaches a parent that may have applied it already (the composite script
        is idempotent by firing id), and a parent that fired but was not published is
        published from its own outbox. Every outbox is read in one round trip."""
        plans = []
        outboxes: list[str] = []
        for loaded in automations:
            triggers = [
                loaded.automation.trigger_by_id(trigger_id) for trigger_id in loaded.event_keys
            ]
            composites = [
                t
                for t in reversed(loaded.automation.all_triggers())
                if isinstance(t, CompoundTrigger | SequenceTrigger)
            ]
            outboxes += [k.outbox for k in loaded.event_keys.values()]
            outboxes += [loaded.composite_keys[c.id].outbox for c in composites]  # type: ignore[index]
            plans.append((loaded, triggers, composites))
        if not outboxes:
            return
        records = iter(await self.state.pending_firings(outboxes))
        for loaded, triggers, composites in plans:
            pending = [next(records) for _ in range(len(triggers) + len(composites))]
            if not any(pending):
                continue
            drained: list[Call] = []
            try:
                for trigger, raws in zip(triggers, pending[: len(triggers)], strict=True):
                    for raw in raws:
                        drained += await self._dispatch(loaded, trigger, raw)  # type: ignore[arg-type]
                for composite, raws in zip(composites, pending[len(triggers) :], strict=True):
                    for raw in raws:
                        drained += await self._dispatch_composite(loaded, composite, raw)
            finally:
                await self.state.call_many(drained)  # what was published, even on failure
