"""Replay (backtest): the history of the EVENTS stream through the engine, in isolation, to see
which firings automations would have produced.

Isolation: the engine runs in-process (the conformance runner's `InProcess` harness) on a
Redis of its own (an embedded redis-server, or a given Redis under a fresh key prefix that is
deleted afterwards), with a publisher that only captures: no live state is read or written
and nothing is published. The `prefect.automation.*` events that the replayed automations
themselves published live are left out of the history; the replay feeds its own back, as the
bus does.

Determinism (two runs over the same history print the same): the clock is the bus's clock.
A message is evaluated at the time JetStream stored it, as the service evaluated it then;
messages are taken in stream order, in batches like the consumer's, each batch at the time of
its last message. Periodic and proactive evaluation run on a grid of 5 s of that clock,
aligned to the epoch: at every grid point where a proactive trigger or a lost follower is
due, and at the last grid point before each batch (so sweeps happen before the events that
follow them, as they would have). Event time (`occurred`) drives windows exactly as live, and
the events clock shifts proactive evaluation into it. Firing ids derive from their causes
(Decision 3), automation ids default to a digest of the file, and the replay ends at its last
event unless told otherwise, so nothing depends on when the replay itself runs.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import nats
import orjson
from redis.asyncio import Redis

from svc.bus.history import StoredMessage, read_history
from svc.config import Settings
from svc.conformance import GRANULARITY_S, CapturingPublisher, InProcess
from svc.domain import jsonio
from svc.domain.automations import Automation, Posture, parse_automation
from svc.domain.firings import AUTOMATION_TRIGGERED, Act, from_micros, to_micros
from svc.engine.engine import PRECEDING_EVENT_LOOKBACK

# Ids of automations whose file gives none: derived from the file's content.
REPLAY_NAMESPACE = UUID("0b7f6a52-5f0e-4b8e-9a57-3f7d1c2e9a10")
# Events handed to the engine at once, as the consumer's fetch batch does.
REPLAY_BATCH = 100
# The widest bar of the per-hour chart, in characters.
CHART_WIDTH = 50
_AUTOMATION_EVENT = "prefect.automation."
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ReplayError(ValueError):
    """A replay that cannot run as asked (a bad automation file, a bad time)."""


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `1h30m`, `2d`, `1w` (units s, m, h, d, w)."""
    compact = text.replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ReplayError(f"{text!r} is not a duration like 90s, 15m, 1h30m or 2d")
    return timedelta(seconds=sum(float(n) * _UNITS_S[u] for n, u in parts))


def parse_moment(text: str, now: datetime) -> datetime:
    """A time: a duration ago (`24h`) or an ISO 8601 timestamp (naive means UTC)."""
    try:
        return now - parse_duration(text)
    except ReplayError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(
            f"{text!r} is neither a duration ago (24h, 90m) nor an ISO 8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def load_automation_file(text: str) -> Automation:
    """An automation document (Prefect's JSON shape); without an `id`, one derived from
    the document, so two replays of the same file give the same ids."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ReplayError(f"not valid JSON: {exc}") from None
    if isinstance(document, dict) and not document.get("id"):
        canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()
        document = {**document, "id": str(uuid.uuid5(REPLAY_NAMESPACE, canonical))}
    return parse_automation(document)


@dataclass(frozen=True)
class ReplayedFiring:
    """A top-level firing the replay produced, as its `prefect.automation.triggered` event
    and triggered actions describe it."""

    automation_id: str
    automation_name: str
    triggered: datetime  # the replay clock: when the service would have fired
    trigger_type: str
    posture: str | None
    labels: dict[str, str]
    event_id: str | None  # the triggering event
    event_name: str | None
    event_occurred: str | None
    firing_id: str | None  # from the triggered actions (none when there are no actions)
    actions: int

    def to_json(self) -> dict[str, Any]:
        return {
            "automation_id": self.automation_id,
            "automation_name": self.automation_name,
            "triggered": self.triggered.isoformat(),
            "trigger_type": self.trigger_type,
            "posture": self.posture,
            "triggering_labels": self.labels,
            "triggering_event": None
            if self.event_id is None
            else {"id": self.event_id, "event": self.event_name, "occurred": self.event_occurred},
            "firing_id": self.firing_id,
            "actions": self.actions,
        }


@dataclass
class ReplayResult:
    automations: list[Automation]
    events: int = 0  # history messages evaluated
    skipped: int = 0  # the replayed automations' own state-change events, left out
    first: datetime | None = None  # stream time of the first and last message read
    last: datetime | None = None
    end: datetime | None = None  # where the replay's clock stopped
    firings: list[ReplayedFiring] = field(default_factory=list)

    def per_hour(self) -> list[tuple[datetime, int]]:
        """Firings per hour (UTC) of the replay clock, every hour of the range included."""
        if self.first is None:
            return []
        counts = Counter(f.triggered.replace(minute=0, second=0, microsecond=0) for f in self.firings)
        hour = self.first.replace(minute=0, second=0, microsecond=0)
        stop = max([self.end or self.first, *counts])
        rows = []
        while hour <= stop:
            rows.append((hour, counts.get(hour, 0)))
            hour += timedelta(hours=1)
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "automations": [{"id": str(a.id), "name": a.name} for a in self.automations],
            "history": {
                "events": self.events,
                "skipped_own_events": self.skipped,
                "first": None if self.first is None else self.first.isoformat(),
                "last": None if self.last is None else self.last.isoformat(),
                "end": None if self.end is None else self.end.isoformat(),
            },
            "firings": [f.to_json() for f in self.firings],
            "per_hour": [{"hour": h.isoformat(), "firings": n} for h, n in self.per_hour()],
        }


def _replayed_firing(automation: Automation, event: dict[str, Any], out: Act) -> ReplayedFiring:
    triggering = event["payload"]["triggering_event"]
    firing = out.actions[0]["firing"] if out.actions else None
    return ReplayedFiring(
        automation_id=str(automation.id),
        automation_name=automation.name,
        triggered=datetime.fromisoformat(event["occurred"]),
        trigger_type="event" if "prefect.posture" in event["resource"] else "composite",
        posture=event["resource"].get("prefect.posture"),
        labels=dict(event["payload"]["triggering_labels"]),
        event_id=None if triggering is None else triggering["id"],
        event_name=None if triggering is None else triggering["event"],
        event_occurred=None if triggering is None else triggering["occurred"],
        firing_id=None if firing is None else firing["id"],
        actions=len(out.actions),
    )


class _ReplayPublisher(CapturingPublisher):
    """Captures what act() publishes: state-change events go back to the engine, firings go
    to `keep`; nothing leaves the process."""

    def __init__(self, keep: Callable[[Automation, Act], None]):
        super().__init__()
        self.keep = keep

    async def publish(self, automation: Automation, out: Act) -> None:
        self.feedback.extend(jsonio.dumps(event) for event in out.events)
        self.keep(automation, out)


def _floor(moment: datetime, step_s: float) -> datetime:
    us = to_micros(moment)
    step = int(step_s * 1_000_000)
    return from_micros(us - us % step)


def _ceil(moment: datetime, step_s: float) -> datetime:
    floor = _floor(moment, step_s)
    return floor if floor == moment else floor + timedelta(seconds=step_s)


class Replay:
    """One replay: automations in, history messages in, firings out."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        automations: Sequence[Automation],
        *,
        granularity_s: float = GRANULARITY_S,
        batch: int = REPLAY_BATCH,
    ):
        self.redis = redis
        self.prefix = prefix
        self.automations = list(automations)
        self.granularity_s = granularity_s
        self.batch = batch
        self._own = {f"prefect.automation.{a.id}" for a in self.automations}
        self._names = {str(a.id): a.name for a in self.automations}
        self.result = ReplayResult(self.automations)
        self._harness: InProcess | None = None
        self._last_tick: datetime | None = None

    async def run(
        self, messages: AsyncIterable[StoredMessage], until: datetime | None = None
    ) -> ReplayResult:
        """Replay the messages (in stream order); the clock goes on to `until` if given,
        else stops at the last message. The replay's keys are deleted afterwards."""
        try:
            pending: list[StoredMessage] = []
            async for message in messages:
                if until is not None and message.time > until:
                    break
                if self._harness is None:
                    await self._start(message.time)
                # a batch ends where a tick falls between its messages
                crosses_tick = bool(pending) and _floor(
                    message.time, self.granularity_s
                ) != _floor(pending[-1].time, self.granularity_s)
                if crosses_tick or len(pending) >= self.batch:
                    await self._evaluate(pending)
                    pending = []
                pending.append(message)
            if pending:
                await self._evaluate(pending)
            if self._harness is not None:
                end = max(until or self.result.last, self._harness.clock.now())  # type: ignore[type-var]
                await self._tick_until(end)
                self._harness.clock.set(end)
                self.result.end = end
            return self.result
        finally:
            await self._clean()

    async def _start(self, first: datetime) -> None:
        t0 = _floor(first, self.granularity_s)
        publisher = _ReplayPublisher(self._firing)
        self._harness = InProcess(self.redis, self.prefix, t0, publisher)
        await self._harness.start([a.to_json() for a in self.automations])
        self._last_tick = t0
        self.result.first = first

    def _firing(self, automation: Automation, out: Act) -> None:
        """Keep the firing act() would have published (one per Triggered state change)."""
        for event in out.events:
            if event["event"] == AUTOMATION_TRIGGERED:
                self.result.firings.append(_replayed_firing(automation, event, out))


    def _is_own(self, data: bytes) -> bool:
        """One of the replayed automations' own state-change events, published live."""
        if _AUTOMATION_EVENT.encode() not in data:
            return False
        try:
            event = orjson.loads(data)
            return (
                str(event.get("event", "")).startswith(_AUTOMATION_EVENT)
                and event.get("resource", {}).get("prefect.resource.id") in self._own
            )
        except (orjson.JSONDecodeError, AttributeError):
            return False

    async def _evaluate(self, batch: list[StoredMessage]) -> None:
        harness = self._harness
        assert harness is not None
        at = max(batch[-1].time, harness.clock.now())
        await self._tick_until(at)
        harness.clock.set(at)
        self.result.last = batch[-1].time
        bodies = []
        for message in batch:
            if self._is_own(message.data):
                self.result.skipped += 1
            else:
                bodies.append(message.data)
        self.result.events += len(bodies)
        if bodies:
            await harness.engine.handle_batch(bodies)
            await harness.feed_back()

    async def _tick_until(self, moment: datetime) -> None:
        """Periodic and proactive evaluation at the grid points up to `moment` where
        something is due, and at the last one (see the module docstring)."""
        harness = self._harness
        assert harness is not None and self._last_tick is not None
        step = timedelta(seconds=self.granularity_s)
        last_grid = _floor(moment, self.granularity_s)
        while self._last_tick + step <= last_grid:
            due = await self._next_due()
            point = last_grid if due is None else max(self._last_tick + step, _ceil(due, self.granularity_s))
            point = min(point, last_grid)
            harness.clock.set(point)
            await harness.tick()
            self._last_tick = point

    async def _next_due(self) -> datetime | None:
        """The earliest wall time at which a proactive trigger or a lost follower is due."""
        harness = self._harness
        assert harness is not None
        engine = harness.engine
        now_us = to_micros(harness.clock.now())
        due = [
            engine.next_proactive_runs.get(trigger.id, now_us)  # type: ignore[arg-type]
            for loaded in engine.automations.values()
            for trigger in loaded.automation.event_triggers()
            if trigger.posture == Posture.Proactive
        ]
        oldest = await self.redis.zrange(engine.state.keys.waitlist, 0, 0, withscores=True)
        if oldest:
            due.append(int(oldest[0][1]) + int(PRECEDING_EVENT_LOOKBACK.total_seconds() * 1e6))
        return from_micros(min(due)) if due else None

    async def _clean(self) -> None:
        keys = [k async for k in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await self.redis.delete(*keys[start : start + 500])


async def replay(
    redis: Redis,
    automations: Sequence[Automation],
    messages: AsyncIterable[StoredMessage],
    *,
    until: datetime | None = None,
    prefix: str | None = None,
) -> ReplayResult:
    """Replay under a fresh key prefix (deleted afterwards)."""
    prefix = prefix or f"replay-{uuid.uuid4().hex[:12]}"
    return await Replay(redis, prefix, automations).run(messages, until)


async def from_list(messages: Sequence[StoredMessage]) -> AsyncIterator[StoredMessage]:
    for message in messages:
        yield message


# ---------------------------------------------------------------- words


def _time(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def render(result: ReplayResult) -> str:
    """The firings and a per-hour chart, for a terminal."""
    lines = []
    if result.first is None:
        lines.append("the history is empty: no event to replay")
    else:
        lines.append(
            f"replayed {result.events} events stored {_time(result.first)} .. "
            f"{_time(result.last or result.first)} (clock stopped at "
            f"{_time(result.end or result.first)}); {result.skipped} of the automations' own "
            "events left out"
        )
    for automation in result.automations:
        count = sum(1 for f in result.firings if f.automation_id == str(automation.id))
        lines.append(f"automation {automation.id} {automation.name!r}: {count} firing(s)")
    if result.firings:
        lines += ["", "firings:"]
    for f in result.firings:
        event = "no triggering event" if f.event_id is None else f"{f.event_name} {f.event_id}"
        labels = f" {orjson.dumps(f.labels).decode()}" if f.labels else ""
        kind = f.posture or f.trigger_type
        lines.append(f"  {_time(f.triggered)}  {f.automation_name}  {kind}  {event}{labels}")
    rows = result.per_hour()
    if rows:
        widest = max(n for _, n in rows) or 1
        lines += ["", "firings per hour (UTC):"]
        for hour, n in rows:
            bar = "#" * math.ceil(CHART_WIDTH * n / widest) if n else ""
            lines.append(f"  {hour.strftime('%Y-%m-%d %H:00')}  {bar}{' ' if bar else ''}{n}")
    return "\n".join(lines)


async def replay_history(
    settings: Settings,
    automations: Sequence[Automation],
    redis_url: str,
    *,
    since: datetime | None,
    until: datetime | None,
) -> ReplayResult:
    """Replay what the EVENTS stream stored from `since` (or its start) through the
    automations, on the Redis at `redis_url` under a fresh prefix (the CLI gives it a Redis
    of its own); NATS is only read."""
    nc = await nats.connect(settings.nats_url, name="triggers-replay")
    redis = Redis.from_url(redis_url)
    try:
        messages = read_history(
            nc.jetstream(),
            settings.events_stream,
            f"{settings.events_subject_prefix}.>",
            start=since,
        )
        return await replay(redis, automations, messages, until=until)
    finally:
        await redis.aclose()
        await nc.drain()
