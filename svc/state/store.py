"""The Redis side of the engine: every call the engine makes to Redis goes through here."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from svc.connections import WRITTEN, PackedCommand, bulk_strings, sends_packed_commands
from svc.state.keys import CompositeKeys, Keys, TriggerKeys
from svc.state.scripts import Script, Scripts

# Safety net on seen marks and on a leader's follower set: the engine's clock decides when a
# mark stops counting (30 min) and when followers stop waiting (15 min); this real-time TTL
# only bounds memory, well beyond those horizons.
SEEN_MARK_TTL_MS = 6 * 3600 * 1000


@dataclass(frozen=True)
class ScriptCall:
    """One queued script call: built without touching Redis, sent in a pipeline."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]
    # Must not run before the calls queued ahead of it in the same batch (a seen mark after
    # the evaluations it stands for). One Redis runs a pipeline in order; a cluster pipeline
    # sends each node its share at once, so there these go in a second round.
    after_earlier: bool = False
    # The keys and the arguments as RESP bulk strings (svc/connections.bulk_strings), when
    # the caller packed them: `together` then joins these instead of packing again.
    packed: tuple[bytes, bytes] | None = None


@dataclass(frozen=True)
class Command:
    """One plain Redis command to send in the same pipeline as script calls."""

    args: tuple[Any, ...]


Call = ScriptCall | Command


@dataclass(frozen=True)
class BucketRecord:
    """A bucket as bucket_machine.lua encodes it: `start|end|count|lx|la|lo|op|last event`."""

    key: tuple[str, ...]
    start_us: int
    end_us: int
    count: int
    last_operation: str
    last_event: dict[str, Any] | None

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> BucketRecord:
        """A stored bucket: its field of the buckets hash (the key as JSON) and its value."""
        return cls.parse(value, tuple(orjson.loads(key)))

    @classmethod
    def parse(cls, value: bytes, key: tuple[str, ...] = ()) -> BucketRecord:
        """A bucket's stored value, of the bucketing key `key`."""
        start, end, count, _lx, _la, _lo, operation, last_event = value.split(b"|", 7)
        return cls(
            key=key,
            start_us=int(start),
            end_us=int(end),
            count=int(count),
            last_operation=operation.decode(),
            last_event=orjson.loads(last_event) if last_event else None,
        )


class RedisState:
    """Trigger state, causal ordering and the events clock on one Redis (or Redis Cluster)."""

    def __init__(self, client: Redis, keys: Keys):
        self.client = client
        self.keys = keys
        self.scripts = Scripts()
        # whether `together` may send a batch's evaluations as one command packed here
        self._packed = sends_packed_commands(client)
        # Requests sent to Redis, a pipeline counting as one: what the benchmark reports
        # per event (DESIGN, "Performance principles"). A plain int: free to keep.
        self.round_trips = 0

    async def start(self) -> None:
        await self.scripts.load_all(self.client)

    # -- script calls --

    async def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        self.round_trips += 1
        return await script(self.client, keys, args)

    async def call_many(self, calls: Sequence[Call]) -> list[Any]:
        """Send every call in one round trip (one pipeline); each script stays atomic and
        calls apply in order, so events for the same bucket still apply in sequence.

        On Redis Cluster, calls of one hash tag still apply in order (one node, one
        connection), but nodes run their shares concurrently: calls marked `after_earlier`
        then go in a second round, so a crash cannot leave them applied without the calls
        before them."""
        if not isinstance(self.client, RedisCluster) or not any(
            isinstance(c, ScriptCall) and c.after_earlier for c in calls
        ):
            return await self._pipeline(calls)
        later = [isinstance(c, ScriptCall) and c.after_earlier for c in calls]
        first = iter(await self._pipeline([c for c, x in zip(calls, later, strict=True) if not x]))
        second = iter(await self._pipeline([c for c, x in zip(calls, later, strict=True) if x]))
        return [next(second) if x else next(first) for x in later]

    def together(self, calls: Sequence[ScriptCall]) -> list[Call]:
        """reactive-7 calls as the fewest calls that do the same, in the same order: one
        reactive-n call on a single Redis (its answer is the list of theirs), the calls
        themselves on Redis Cluster, where one call cannot span triggers' hash tags. When
        every call comes packed, the reactive-n call is packed whole from their parts."""
        if len(calls) < 2 or isinstance(self.client, RedisCluster):
            return list(calls)
        if self._packed and all(c.packed is not None for c in calls):
            return [self._packed_reactive_n(calls)]
        return [
            ScriptCall(
                self.scripts.reactive_n,
                [key for c in calls for key in c.keys],
                [arg for c in calls for arg in c.args],
            )
        ]

    def _packed_reactive_n(self, calls: Sequence[ScriptCall]) -> Command:
        """EVALSHA of reactive-n with every call's keys, then every call's arguments, packed
        whole (svc/connections.PackedCommand): the bytes hiredis packs of the same call
        (tests/engine/test_packed_calls.py)."""
        nkeys = sum(len(c.keys) for c in calls)
        nargs = sum(len(c.args) for c in calls)
        head = b"*%d\r\n%b" % (
            3 + nkeys + nargs,
            bulk_strings(("EVALSHA", self.scripts.reactive_n.sha, nkeys)),
        )
        parts = [head, *(c.packed[0] for c in calls), *(c.packed[1] for c in calls)]  # type: ignore[index]
        return Command(("EVALSHA", PackedCommand(b"".join(parts))))

    def send_many(self, calls: Sequence[Call]) -> tuple[asyncio.Future[None], asyncio.Task[list[Any]]]:
        """`call_many` as a task of its own, and a future done once its commands are written
        to Redis, so the caller can work while Redis runs them (await the future, or the
        task: on Redis Cluster the future is never done, as the cluster's connections do
        not report it)."""
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        token = WRITTEN.set(written)
        try:
            # the task runs in a copy of this context, which holds `written`
            return written, asyncio.ensure_future(self.call_many(calls))
        finally:
            WRITTEN.reset(token)

    async def _pipeline(self, calls: Sequence[Call]) -> list[Any]:
        if not calls:
            return []
        # The server lost its scripts: the calls that failed changed nothing, and those that
        # ran are idempotent (seen marks, applied firing ids), so all are sent again.
        return await self._send(calls, transaction=False)

    async def call_atomically(self, calls: Sequence[Call]) -> list[Any]:
        """Send the calls as one MULTI/EXEC transaction: Redis runs them as one unit, so no
        other client sees anything in between (explain's dry runs). Every key must share one
        hash tag on Redis Cluster. Sent again whole if the server lost its scripts: a dry run
        only touches its scratch keys, which the calls delete again."""
        return await self._send(calls, transaction=True)

    async def _send(self, calls: Sequence[Call], *, transaction: bool) -> list[Any]:
        """One pipeline (a transaction or not) of the calls, sent once more after loading
        the scripts when the server answers NOSCRIPT; the first error is raised."""
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=transaction)
            for c in calls:
                if isinstance(c, ScriptCall):
                    c.script.queue(pipe, c.keys, c.args)
                else:
                    pipe.execute_command(*c.args)
            self.round_trips += 1
            results = await pipe.execute(raise_on_error=False)
            missing = [r for r in results if isinstance(r, NoScriptError)]
            if not missing:
                break
            if attempt:
                raise missing[0]
            await self.scripts.load_all(self.client)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return list(results)

    # -- outboxes --

    def forget_firing(self, outbox: str, firing_id: str) -> Command:
        """Drain one record from an outbox, once what it caused is published."""
        return Command(("HDEL", outbox, firing_id))

    async def pending_firings(self, outboxes: Sequence[str]) -> list[list[bytes]]:
        """The records still in each outbox (a crashed replica's undrained firings)."""
        return await self.call_many([Command(("HVALS", outbox)) for outbox in outboxes])

    # -- causal ordering --

    async def seen(self, event_ids: Sequence[UUID], now_us: int, horizon_us: int) -> list[bool]:
        if not event_ids:
            return []
        self.round_trips += 1
        marks = await self.client.mget([self.keys.seen(i) for i in event_ids])
        return [m is not None and int(m) > now_us - horizon_us for m in marks]

    def park(
        self, leader: UUID | str, follower: UUID | str, body: bytes, received_us: int,
        now_us: int, horizon_us: int,
    ) -> ScriptCall:
        """Park a follower unless its leader was seen; the script answers b'parked' or
        b'proceed'."""
        keys = [
            self.keys.seen(leader), self.keys.followers(leader), self.keys.parked_events,
            self.keys.waitlist,
        ]
        args = [str(follower), body, received_us, now_us, horizon_us, SEEN_MARK_TTL_MS]
        return ScriptCall(self.scripts.park, keys, args)

    def has_followers(self, event_id: UUID | str) -> Command:
        return Command(("EXISTS", self.keys.followers(event_id)))

    def finish(self, event_ids: Sequence[UUID | str], now_us: int) -> ScriptCall:
        """Mark each event seen, in order; the script returns each one's parked followers
        (SEMANTICS 10.1)."""
        keys = [self.keys.parked_events, self.keys.waitlist]
        args: list[Any] = [now_us, SEEN_MARK_TTL_MS]
        for event_id in event_ids:
            text = str(event_id)  # once (a UUID's str() is not free): pass ids as text
            keys += (self.keys.seen(text), self.keys.followers(text))
            args.append(text)
        # the seen marks say "evaluated": never before the evaluations queued ahead of it
        return ScriptCall(self.scripts.finish, keys, args, after_earlier=True)

    async def intake_check(
        self, event_ids: Sequence[UUID | str], now_us: int, horizon_us: int
    ) -> tuple[list[bool], list[bool]]:
        """For each event: was it seen within the horizon, and do followers wait for it
        (one round trip for a batch)."""
        if not event_ids:
            return [], []
        keys: list[str] = []
        for event_id in event_ids:
            text = str(event_id)
            keys += (self.keys.seen(text), self.keys.followers(text))
        answer = await self.call(self.scripts.intake, keys, [now_us, horizon_us])
        return [bool(a) for a in answer[0::2]], [bool(a) for a in answer[1::2]]

    async def lost_followers(self, cutoff_us: int, limit: int) -> list[bytes]:
        keys = [self.keys.parked_events, self.keys.waitlist]
        return await self.call(self.scripts.lost, keys, [cutoff_us, limit])

    # -- the events clock --

    def tick(self, latest_us: int | None, now_us: int) -> ScriptCall:
        """Tick the events clock with the latest capped `occurred` (or only read it, with
        None); the script returns the offset in microseconds."""
        arg = "" if latest_us is None else latest_us
        return ScriptCall(self.scripts.clock, [self.keys.clock], [arg, now_us])

    async def clock_offset(self, now_us: int) -> int:
        tick = self.tick(None, now_us)
        return int(await self.call(tick.script, tick.keys, tick.args))

    async def reset_clock(self) -> None:
        self.round_trips += 1
        await self.client.delete(self.keys.clock)

    # -- the active set: automations whose state the periodic evaluation visits --

    def touch(self, automation_ids: Iterable[UUID | str]) -> ScriptCall:
        """Mark automations active (ids, or ids as text); goes first in the pipeline of their
        triggers' scripts."""
        return ScriptCall(self.scripts.touch, [self.keys.active], [str(i) for i in automation_ids])

    async def active(self) -> tuple[int, list[UUID]]:
        """The time now (us) on the active set's Redis (touch-1 of no automation tells it),
        and the active automations."""
        now, members = await self.call_many(
            [self.touch(()), Command(("ZRANGE", self.keys.active, 0, -1))]
        )
        return int(now), [UUID(m.decode()) for m in members]

    async def are_active(self, automation_ids: Sequence[UUID | str]) -> list[bool]:
        """For each automation: is it in the active set (one round trip)?"""
        if not automation_ids:
            return []
        (scores,) = await self.call_many(
            [Command(("ZMSCORE", self.keys.active, *(str(i) for i in automation_ids)))]
        )
        return [score is not None for score in scores]

    async def retire(self, automation_ids: Sequence[UUID], since_us: int) -> None:
        """Drop automations found without state from the active set, unless touched since."""
        if automation_ids:
            args = [since_us, *(str(i) for i in automation_ids)]
            await self.call(self.scripts.retire, [self.keys.active], args)

    async def with_state(self, groups: Sequence[TriggerKeys | CompositeKeys]) -> list[bool]:
        """Whether any key of each group exists (one EXISTS per group: its keys share a hash
        tag), in one round trip."""
        counts = await self.call_many([Command(("EXISTS", *g.as_list())) for g in groups])
        return [bool(count) for count in counts]

    async def scan_generations(
        self, cursor: int, count: int
    ) -> tuple[int, list[tuple[UUID, bytes]]]:
        """One page of the generation records (HSCAN): the cursor to go on from (0: back at
        the start) and (automation id, record) pairs."""
        self.round_trips += 1
        cursor, page = await self.client.hscan(self.keys.generations, cursor, count=count)
        return int(cursor), [(UUID(k.decode()), v) for k, v in page.items()]

    async def generations_of(self, automation_ids: Sequence[UUID]) -> list[bytes | None]:
        """The generation records of some automations (None: no record)."""
        if not automation_ids:
            return []
        self.round_trips += 1
        return await self.client.hmget(self.keys.generations, [str(i) for i in automation_ids])

    # -- state generations (Decision 6) --

    async def swap_generation(self, automation_id: UUID, value: str) -> bytes | None:
        """Record the generation an automation is loaded with; return the previous one."""
        (previous,) = await self.swap_generations([(automation_id, value)])
        return previous

    async def swap_generations(self, records: Sequence[tuple[UUID, str]]) -> list[bytes | None]:
        """`swap_generation` for many automations, in order, in one round trip."""
        calls: list[Call] = []
        for automation_id, value in records:
            field = str(automation_id)
            calls += (
                Command(("HGET", self.keys.generations, field)),
                Command(("HSET", self.keys.generations, field, value)),
            )
        return (await self.call_many(calls))[0::2]

    async def generation(self, automation_id: UUID) -> bytes | None:
        self.round_trips += 1
        return await self.client.hget(self.keys.generations, str(automation_id))

    async def generations(self) -> dict[bytes, bytes]:
        """Every automation with state: automation id -> its generation record."""
        self.round_trips += 1
        return await self.client.hgetall(self.keys.generations)

    async def forget_generation(self, automation_id: UUID) -> bytes | None:
        """Drop an automation's generation record; return it."""
        field = str(automation_id)
        previous, _ = await self.call_many(
            [
                Command(("HGET", self.keys.generations, field)),
                Command(("HDEL", self.keys.generations, field)),
            ]
        )
        return previous

    async def buckets(self, keys: TriggerKeys) -> list[BucketRecord]:
        """Every bucket of one trigger, as stored (for debugging and explain)."""
        self.round_trips += 1
        raw = await self.client.hgetall(keys.buckets)
        return sorted(
            (BucketRecord.decode(key, value) for key, value in raw.items()),
            key=lambda b: (b.start_us, b.key),
        )

    async def delete_state(self, groups: Sequence[TriggerKeys | CompositeKeys]) -> None:
        """Delete triggers' state; each group shares one hash tag, so one DEL per group."""
        await self.call_many([Command(("DEL", *group.as_list())) for group in groups])
