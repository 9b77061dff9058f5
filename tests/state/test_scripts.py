"""Each Lua script called directly against the real Redis, with KEYS and ARGV built by hand
from the script's header, so the state layer's contract is pinned below the engine."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svc.state.keys import CompositeKeys, Keys, TriggerKeys
from svc.state.store import BucketRecord, Command, RedisState, ScriptCall

S = 1_000_000  # one second in microseconds
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z
LOOKBACK = 900 * S
HORIZON = 1800 * S
SEED = "trigger-seed:generation"
REACTIVE_WITHIN = "1000"  # flags: reactive, no after, not immediate, holds nothing


@pytest.fixture
async def state(redis_client: redis.asyncio.Redis, key_prefix: str) -> RedisState:
    state = RedisState(redis_client, Keys(key_prefix))
    await state.start()
    return state


@pytest.fixture
def tkeys(state: RedisState) -> TriggerKeys:
    return state.keys.trigger(uuid4(), "gen")


def event_json(event_id: str, occurred_us: int, name: str = "x.happened") -> bytes:
    return orjson.dumps({"id": event_id, "event": name, "occurred": occurred_us})


def derived_uuid(seed: str, cause: str) -> str:
    """bucket_machine.lua's derived_uuid, in Python."""
    h = hashlib.sha1(f"{seed}|{cause}".encode()).hexdigest()
    variant = format(8 + int(h[16], 16) % 4, "x")
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def encode_bucket(
    start: int, end: int, count: int, op: str = "ensure_bucket[insert]", last: bytes = b""
) -> bytes:
    """bucket_machine.lua's encode_bucket: start|end|count|lx|la|lo|op|last event."""
    return b"|".join(
        [str(start).encode(), str(end).encode(), str(count).encode(), b"0", b"0", b"0",
         op.encode(), last]
    )


def decode_bucket(raw: bytes) -> tuple[int, int, int, str]:
    record = BucketRecord.parse(raw)
    return record.start_us, record.end_us, record.count, record.last_operation


async def reactive(
    state: RedisState,
    keys: TriggerKeys,
    event_id: str,
    occurred: int,
    *,
    flags: str = REACTIVE_WITHIN + "01",
    threshold: int = 2,
    within: int = 60 * S,
    key: str = "[]",
    now: int = T0,
    name: str = "x.happened",
) -> list[Any]:
    """reactive-7, ARGV as its header lists them."""
    args = [
        event_id, event_json(event_id, occurred, name), occurred, now, key, flags, threshold,
        within, LOOKBACK, SEED, max(HORIZON, within),
    ]
    return await state.call(state.scripts.reactive, keys.as_list(), args)


def steps(result: Sequence[Any]) -> str:
    return result[0].decode()


# ---------------------------------------------------------------- reactive-7


async def test_reactive_marks_the_event_and_answers_duplicate_the_second_time(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """Decision 3: the per-trigger seen mark is set in the same script that counts."""
    first = await reactive(state, tkeys, "e1", T0, now=T0 + 7)
    assert steps(first) == "counted"
    assert await redis_client.zscore(tkeys.seen, "e1") == T0 + 7
    again = await reactive(state, tkeys, "e1", T0, now=T0 + 8)
    bucket = f"{T0 - LOOKBACK}|{T0 + 60 * S}|1".encode()
    assert again == [b"duplicate", bucket, bucket]
    assert decode_bucket(await redis_client.hget(tkeys.buckets, "[]"))[2] == 1


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 400), st.integers(1, 3)),
        min_size=1,
        max_size=25,
    )
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_every_stored_bucket_has_its_end_in_the_ends_set(
    state: RedisState, redis_client: redis.asyncio.Redis, events: list[tuple[int, int, int]]
) -> None:
    """bucket_machine.lua writes `ends` only when a bucket's end moves (it remembers what it
    read within a call): whatever the events (windows counted, fired, rolled over, too early
    and late), each stored bucket is scored by its end, and no key is there without one."""
    tkeys = state.keys.trigger(uuid4(), "gen")
    for n, (key, second, threshold) in enumerate(events):
        await reactive(
            state, tkeys, f"e{n}", T0 + second * S, key=f'["k{key}"]', threshold=threshold
        )
        buckets = await redis_client.hgetall(tkeys.buckets)
        ends = dict(await redis_client.zrange(tkeys.ends, 0, -1, withscores=True))
        assert {k: decode_bucket(v)[1] for k, v in buckets.items()} == ends


def reactive_args(
    event_id: str, occurred: int, *, key: str, threshold: int, now: int = T0
) -> list[Any]:
    flags = REACTIVE_WITHIN + "01"
    return [
        event_id, event_json(event_id, occurred), occurred, now, key, flags, threshold,
        60 * S, LOOKBACK, SEED, HORIZON,
    ]


async def trigger_state(client: redis.asyncio.Redis, keys: TriggerKeys) -> dict[str, Any]:
    return {
        "buckets": await client.hgetall(keys.buckets),
        "ends": await client.zrange(keys.ends, 0, -1, withscores=True),
        "seen": await client.zrange(keys.seen, 0, -1, withscores=True),
        "outbox": await client.hgetall(keys.outbox),
    }


@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 200), st.integers(1, 3)),
        min_size=1,
        max_size=30,
    )
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_reactive_n_answers_and_stores_what_reactive_7_calls_in_order_would(
    state: RedisState, redis_client: redis.asyncio.Redis, pairs: list[tuple[int, int, int, int]]
) -> None:
    """reactive-n runs its pairs as that many reactive-7 calls in the same order would: the
    same answers (firing ids included) and the same state, for pairs of two triggers that
    share bucketing keys, events counted, fired, rolled over and repeated (duplicates)."""
    one_by_one = [state.keys.trigger(uuid4(), "gen") for _ in range(2)]
    together = [state.keys.trigger(uuid4(), "gen") for _ in range(2)]
    calls = [
        (trigger, reactive_args(f"e{n % 7}", T0 + second * S, key=f'["k{key}"]', threshold=t))
        for n, (trigger, key, second, t) in enumerate(pairs)
    ]
    expected = [
        await state.call(state.scripts.reactive, one_by_one[trigger].as_list(), args)
        for trigger, args in calls
    ]
    singles = [ScriptCall(state.scripts.reactive, together[t].as_list(), a) for t, a in calls]
    (call,) = state.together(singles) if len(singles) > 1 else [
        ScriptCall(state.scripts.reactive_n, singles[0].keys, singles[0].args)
    ]
    assert call.script is state.scripts.reactive_n
    assert await state.call(call.script, call.keys, call.args) == expected
    for single, batch in zip(one_by_one, together, strict=True):
        assert await trigger_state(redis_client, single) == await trigger_state(
            redis_client, batch
        )


async def test_reactive_ensures_a_backdated_first_window_and_increments_it(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 5.2 step 4.3 and 6 step 3; the ends sorted set scores the key by `end`."""
    await reactive(state, tkeys, "e1", T0 + 5 * S)
    raw = await redis_client.hget(tkeys.buckets, "[]")
    assert decode_bucket(raw) == (T0 + 5 * S - LOOKBACK, T0 + 65 * S, 1, "increment_bucket[update]")
    assert orjson.loads(raw.split(b"|", 7)[7])["id"] == "e1"
    assert await redis_client.zscore(tkeys.ends, "[]") == T0 + 65 * S
    assert steps(await reactive(state, tkeys, "e2", T0 + 6 * S, threshold=3)) == "counted"
    assert decode_bucket(await redis_client.hget(tkeys.buckets, "[]"))[2] == 2


@pytest.mark.parametrize("within", [60 * S, 2**53, 2**63, 2**70])
async def test_reactive_writes_times_in_full_on_both_sides_of_exact_integers(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis, within: int
) -> None:
    """A bucket's end is written as C's %.0f writes the double the script holds, whether the
    script formats it as an integer (exact, below 2^53) or as a float (a window reaching
    past 2^63, where formatting as a 64-bit integer would wrap to a negative number)."""
    await reactive(state, tkeys, "e1", T0, within=within)
    written = b"%.0f" % float(T0 + within)
    assert (await redis_client.hget(tkeys.buckets, "[]")).split(b"|")[1] == written
    assert await redis_client.zscore(tkeys.ends, "[]") == float(T0 + within)


async def test_reactive_fire_code_and_outbox_record_shape(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 6 steps 5 and 7, DESIGN "Delivery guarantees": the firing is recorded in the
    outbox in the same step, with a deterministic id, and returned after the decision."""
    await reactive(state, tkeys, "e1", T0)
    result = await reactive(state, tkeys, "e2", T0 + S, now=T0 + 42)
    assert steps(result) == "counted fired rolled_over"
    before, after, raw = result[1:]
    # the bucket before and after, without its last event: the cooldown window follows
    assert before == f"{T0 - LOOKBACK}|{T0 + 60 * S}|1".encode()
    assert after == f"{T0 + 60 * S}|{T0 + 120 * S}|0".encode()
    record = json.loads(raw)
    assert set(record) == {"id", "key", "event", "at", "triggered", "s", "e", "c"}
    # the window and count of the bucket that fired go along, for decision records
    assert (record["s"], record["e"], record["c"]) == (
        str(T0 - LOOKBACK), str(T0 + 60 * S), "2"
    )
    assert record["id"] == derived_uuid(SEED, "event:e2#1")
    assert UUID(record["id"]).version == 5
    assert record["key"] == "[]"
    assert record["event"] == event_json("e2", T0 + S).decode()
    assert (record["at"], record["triggered"]) == (str(T0 + S), str(T0 + 42))
    assert await redis_client.hgetall(tkeys.outbox) == {record["id"].encode(): raw}
    # the cooldown window starts where the old window ended
    assert decode_bucket(await redis_client.hget(tkeys.buckets, "[]"))[:3] == (
        T0 + 60 * S, T0 + 120 * S, 0
    )


async def test_reactive_roll_over_code_counts_the_event_in_the_next_window(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 6 case 4: an event at exactly `end` closes the window and is counted in the
    next one, [end, end + W)."""
    await reactive(state, tkeys, "e1", T0)
    result = await reactive(state, tkeys, "e2", T0 + 60 * S)
    assert steps(result) == "window_closed rolled_over counted"
    assert decode_bucket(await redis_client.hget(tkeys.buckets, "[]"))[:3] == (
        T0 + 60 * S, T0 + 120 * S, 1
    )


async def test_reactive_too_early_and_ignored_codes(
    state: RedisState, tkeys: TriggerKeys
) -> None:
    """SEMANTICS 6 step 2 and 5.2 step 4: a late event, an unexpected event."""
    await reactive(state, tkeys, "e1", T0)
    assert steps(await reactive(state, tkeys, "late", T0 - LOOKBACK - 1)) == "too_early"
    unexpected = await reactive(state, tkeys, "other", T0, flags=REACTIVE_WITHIN + "00")
    assert steps(unexpected) == "ignored"


async def test_reactive_armed_and_disarmed_codes_of_an_after_trigger(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 5.2 step 4.2: `after` arms [occ, occ + W); an expected event at `end`
    disarms."""
    after = "110010"  # reactive, has after, not immediate, holds nothing; an after event
    expected = "110001"
    assert steps(await reactive(state, tkeys, "start", T0, flags=after)) == "armed"
    assert decode_bucket(await redis_client.hget(tkeys.buckets, "[]")) == (
        T0, T0 + 60 * S, 0, "ensure_bucket[insert]"
    )
    result = await reactive(state, tkeys, "at-end", T0 + 60 * S, flags=expected)
    assert steps(result) == "window_closed disarmed"
    assert await redis_client.hlen(tkeys.buckets) == 0
    unarmed = await reactive(state, tkeys, "unarmed", T0, flags=expected)
    assert unarmed == [b"ignored", b"", b""]


async def test_reactive_holds_an_expect_only_event_and_a_new_window_counts_it(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 6.2: proactive after-triggers hold expect-only events; ensure counts held
    events inside [start, end)."""
    held = "010101"  # proactive, has after, not immediate, holds events; expected only
    arming = "010110"
    key = '["run-1"]'
    result = await reactive(state, tkeys, "done", T0 + 5 * S, flags=held, threshold=1, key=key)
    assert steps(result) == "held ignored"
    assert await redis_client.zcard(tkeys.held) == 1
    assert await redis_client.zscore(tkeys.heldat, (await redis_client.zrange(tkeys.held, 0, 0))[0]) == T0
    result = await reactive(state, tkeys, "start", T0, flags=arming, threshold=1, key=key)
    assert steps(result) == "armed"
    assert decode_bucket(await redis_client.hget(tkeys.buckets, key))[2] == 1
    assert await redis_client.sismember(tkeys.satisfied, key)


async def test_reactive_restart_code_of_a_heartbeat(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 6 step 6: a proactive event both after and expected that satisfies the
    window restarts it at its own occurred."""
    both = "010111"
    await reactive(state, tkeys, "hb0", T0, flags=both, threshold=1, within=30 * S)
    result = await reactive(state, tkeys, "hb1", T0 + 10 * S, flags=both, threshold=1,
                            within=30 * S)
    assert steps(result) == "armed counted restarted"
    assert decode_bucket(await redis_client.hget(tkeys.buckets, "[]")) == (
        T0 + 10 * S, T0 + 40 * S, 0, "start_new_bucket[update]"
    )


async def test_reactive_threshold_zero_fires_twice_with_two_ids(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """Quirk 16.7: one event, two firings, two outbox records with distinct ids."""
    await reactive(state, tkeys, "e1", T0, threshold=0)
    await redis_client.delete(tkeys.outbox)
    result = await reactive(state, tkeys, "late", T0 + 200 * S, threshold=0)
    assert steps(result) == "fired rolled_over counted fired rolled_over"
    ids = [json.loads(r)["id"] for r in result[3:]]
    assert ids == [derived_uuid(SEED, "event:late#1"), derived_uuid(SEED, "event:late#2")]
    assert await redis_client.hlen(tkeys.outbox) == 2


# ---------------------------------------------------------------- proactive-7


async def proactive(
    state: RedisState, keys: TriggerKeys, as_of: int, *, flags: str = "000",
    threshold: int = 1, within: int = 3600 * S, limit: int = 500, now: int | None = None,
) -> list[Any]:
    args = [as_of, as_of if now is None else now, flags, threshold, within, SEED, limit, "[]"]
    return await state.call(state.scripts.proactive, keys.as_list(), args)


async def test_proactive_evaluates_only_the_due_buckets(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """DESIGN "State in Redis" and SEMANTICS 8: with 10,000 open buckets and 10 due ones,
    only the due ones fire and roll over; every open bucket is byte-for-byte unchanged, and
    the next run is the earliest open end."""
    as_of = T0 + 7200 * S
    open_buckets = {
        f'["open-{i}"]': encode_bucket(as_of - 100 * S, as_of + (1000 + i) * S, 0)
        for i in range(10_000)
    }
    due_buckets = {
        f'["due-{i}"]': encode_bucket(as_of - 3700 * S, as_of - (100 - i) * S, 0)
        for i in range(10)
    }
    pipe = redis_client.pipeline(transaction=False)
    for key, raw in {**open_buckets, **due_buckets}.items():
        pipe.hset(tkeys.buckets, key, raw)
        pipe.zadd(tkeys.ends, {key: int(raw.split(b"|")[1])})
    await pipe.execute()

    result = await proactive(state, tkeys, as_of)
    next_run, more, *records = result
    assert int(next_run) == as_of + 1000 * S
    assert more == b"0"
    fired = sorted(json.loads(r)["key"] for r in records)
    assert fired == sorted(due_buckets)
    for record in map(json.loads, records):
        start, end = due_buckets[record["key"]].split(b"|")[:2]
        assert record["id"] == derived_uuid(
            SEED, f"window:{record['key']}@{int(start)}-{int(end)}"
        )
        assert record["event"] == ""  # no last event: the firing has no triggering event
    stored = await redis_client.hgetall(tkeys.buckets)
    assert {k.decode(): v for k, v in stored.items() if b"open" in k} == open_buckets
    for key in due_buckets:
        assert decode_bucket(stored[key.encode()]) == (
            as_of, as_of + 3600 * S, 0, "start_new_bucket[update]"
        )


async def test_proactive_pages_through_due_buckets(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 8 step 5 in pages: `more` is 1 while due buckets may remain."""
    as_of = T0 + 7200 * S
    for i in range(7):
        key = f'["due-{i}"]'
        await redis_client.hset(tkeys.buckets, key, encode_bucket(T0, T0 + i * S, 0))
        await redis_client.zadd(tkeys.ends, {key: T0 + i * S})
    pages = []
    while True:
        _, more, *records = await proactive(state, tkeys, as_of, limit=3)
        pages.append(len(records))
        if more == b"0":
            break
    assert pages == [3, 3, 1]


async def test_proactive_removes_satisfied_buckets_first(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 8 step 4: a bucket at or over the threshold is deleted, not fired."""
    as_of = T0 + 100 * S
    await redis_client.hset(tkeys.buckets, '["k"]', encode_bucket(T0, T0 + 10 * S, 1))
    await redis_client.zadd(tkeys.ends, {'["k"]': T0 + 10 * S})
    await redis_client.sadd(tkeys.satisfied, '["k"]')
    next_run, _, *records = await proactive(state, tkeys, as_of, within=60 * S)
    assert records == []
    assert int(next_run) == as_of + 60 * S
    assert await redis_client.hlen(tkeys.buckets) == 0
    assert await redis_client.zcard(tkeys.ends) == 0


async def test_proactive_ensures_the_global_bucket_without_for_each(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 8 step 3: [as_of, as_of + W) for the empty key; fires at its end."""
    _, _, *records = await proactive(state, tkeys, T0, flags="001", within=30 * S)
    assert records == []
    assert decode_bucket(await redis_client.hget(tkeys.buckets, "[]")) == (
        T0, T0 + 30 * S, 0, "ensure_bucket[insert]"
    )
    early = await proactive(state, tkeys, T0 + 30 * S - 1, flags="001", within=30 * S)
    assert early[2:] == []
    _, _, record = await proactive(state, tkeys, T0 + 30 * S, flags="001", within=30 * S)
    assert json.loads(record)["at"] == str(T0 + 30 * S)


# ---------------------------------------------------------------- sweep-7


async def sweep(
    state: RedisState, keys: TriggerKeys, now: int, *, buckets: int | str = "",
    held: int | str = "", seen: int | str = "",
) -> list[int]:
    return await state.call(state.scripts.sweep, keys.as_list(), [buckets, now, held, seen])


async def test_sweep_deletes_buckets_ending_at_or_before_the_cutoff(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 4.1 sweep: `end <= cutoff` goes, later ends stay; other modes idle."""
    for name, end in (("gone", T0), ("edge", T0 + 10), ("stays", T0 + 11)):
        await redis_client.hset(tkeys.buckets, name, encode_bucket(T0 - S, end, 1))
        await redis_client.zadd(tkeys.ends, {name: end})
    assert await sweep(state, tkeys, T0 + 99, buckets=T0 + 10) == [2, 0, 0]
    assert await redis_client.hkeys(tkeys.buckets) == [b"stays"]
    assert await redis_client.zrange(tkeys.ends, 0, -1) == [b"stays"]
    assert await sweep(state, tkeys, T0 + 99) == [0, 0, 0]


async def test_sweep_deletes_held_events_held_long_ago_unless_their_key_is_open(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 6.2: held (wall) strictly before now - retention goes, unless a bucket of
    the key ends after now."""
    now = T0 + 4000 * S
    members = {
        b'["old"]\x0000000000000000000001\x00a': T0,  # held long ago: goes
        b'["open"]\x0000000000000000000001\x00b': T0,  # held long ago, key open: stays
        b'["edge"]\x0000000000000000000001\x00c': now - HORIZON,  # exactly at the cutoff
    }
    for member, held_at in members.items():
        await redis_client.zadd(tkeys.held, {member: 0})
        await redis_client.zadd(tkeys.heldat, {member: held_at})
    await redis_client.hset(tkeys.buckets, '["open"]', encode_bucket(T0, now + 1, 0))
    assert await sweep(state, tkeys, now, held=HORIZON) == [0, 1, 0]
    remaining = set(await redis_client.zrange(tkeys.held, 0, -1))
    assert remaining == set(members) - {b'["old"]\x0000000000000000000001\x00a'}
    assert await redis_client.zcard(tkeys.heldat) == 2


async def test_sweep_forgets_seen_marks_past_their_horizon(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """Decision 3: per-trigger seen marks older than the retention go (strictly older)."""
    now = T0 + 4000 * S
    await redis_client.zadd(tkeys.seen, {"old": now - HORIZON - 1, "edge": now - HORIZON})
    assert await sweep(state, tkeys, now, seen=HORIZON) == [0, 0, 1]
    assert await redis_client.zrange(tkeys.seen, 0, -1) == [b"edge"]


# ---------------------------------------------------------------- composite-3


@pytest.fixture
def ckeys(state: RedisState) -> CompositeKeys:
    return state.keys.composite(uuid4(), "gen")


async def child(
    state: RedisState, keys: CompositeKeys, trigger: str, firing: str, at: int, *,
    within: int | str = "", kind: str = "compound", expected: int = 2,
    children: str = "A B", now: int = T0,
) -> list[Any]:
    record = orjson.dumps({"id": firing, "trigger_id": trigger, "at": str(at), "firing": {}})
    args = [trigger, firing, record, at, within, kind, expected, children, now, SEED]
    return await state.call(state.scripts.composite, keys.as_list(), args)


async def test_composite_applies_a_child_firing_once(
    state: RedisState, ckeys: CompositeKeys, redis_client: redis.asyncio.Redis
) -> None:
    """Decision 3: idempotent by child firing id, even after the composite fired."""
    assert await child(state, ckeys, "A", "fa", T0) == [b"stored"]
    assert await child(state, ckeys, "A", "fa", T0) == [b"duplicate"]
    decision, raw = await child(state, ckeys, "B", "fb", T0 + S)
    assert decision == b"fired"
    assert await child(state, ckeys, "B", "fb", T0 + S) == [b"duplicate"]
    assert await redis_client.hlen(ckeys.children) == 0
    parent = json.loads(raw)
    assert parent["id"] == derived_uuid(SEED, "children:fa,fb")
    assert (parent["at"], parent["triggered"], parent["completing"]) == (
        str(T0 + S), str(T0), "fb"
    )
    assert [c["id"] for c in parent["children"]] == ["fa", "fb"]
    assert await redis_client.hget(ckeys.outbox, parent["id"]) == raw


async def test_composite_within_expiry_is_strict(
    state: RedisState, ckeys: CompositeKeys
) -> None:
    """SEMANTICS 7.2 step 2.2 on event times: exactly `within` apart still counts."""
    await child(state, ckeys, "A", "fa", T0, within=10 * S)
    assert (await child(state, ckeys, "B", "fb", T0 + 10 * S, within=10 * S))[0] == b"fired"
    await child(state, ckeys, "A", "fa2", T0, within=10 * S)
    assert await child(state, ckeys, "B", "fb2", T0 + 10 * S + 1, within=10 * S) == [b"stored"]


async def test_composite_firing_too_old_for_the_newest_stored_one_expires(
    state: RedisState, ckeys: CompositeKeys, redis_client: redis.asyncio.Redis
) -> None:
    """Decision 1: a child firing processed late, more than `within` before a stored one, is
    not stored; the newer one stays."""
    await child(state, ckeys, "B", "fb", T0 + 100 * S, within=10 * S)
    assert await child(state, ckeys, "A", "fa", T0, within=10 * S) == [b"expired"]
    assert await redis_client.hkeys(ckeys.children) == [b"B"]
    assert (await child(state, ckeys, "A", "fa2", T0 + 95 * S, within=10 * S))[0] == b"fired"


async def test_composite_require_n_consumes_every_stored_firing(
    state: RedisState, ckeys: CompositeKeys, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 7.2 consequences: when require=N fires, all firings read are consumed,
    extra ones included (two stored before this state's require became 2)."""
    for trigger, firing in (("A", "fa"), ("B", "fb")):
        record = orjson.dumps({"id": firing, "trigger_id": trigger, "at": str(T0), "firing": {}})
        await redis_client.hset(ckeys.children, trigger, record)
    decision, raw = await child(state, ckeys, "C", "fc", T0 + S, children="A B C")
    assert decision == b"fired"
    assert [c["id"] for c in json.loads(raw)["children"]] == ["fa", "fb", "fc"]
    assert await redis_client.hlen(ckeys.children) == 0


async def test_composite_sequence_needs_strictly_increasing_times(
    state: RedisState, ckeys: CompositeKeys
) -> None:
    """Decision 1: a sequence is ready only with every step strictly later than the last."""
    await child(state, ckeys, "A", "fa", T0, kind="sequence")
    assert await child(state, ckeys, "B", "fb", T0, kind="sequence") == [b"stored"]
    assert (await child(state, ckeys, "B", "fb2", T0 + 1, kind="sequence"))[0] == b"fired"
    await child(state, ckeys, "B", "fb3", T0 + 5, kind="sequence")
    assert await child(state, ckeys, "A", "fa3", T0 + 6, kind="sequence") == [b"stored"]


# ---------------------------------------------------------------- park-4, finish-n, intake-n, lost-2


def park(state: RedisState, leader: str, follower: str, received: int, now: int) -> ScriptCall:
    return state.park(UUID(leader), UUID(follower), follower.encode(), received, now, HORIZON)


async def test_park_then_finish_releases_the_follower_once(
    state: RedisState, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 10.1 steps 3-5: an unseen leader parks the follower (set, body, waitlist by
    received); the leader's finish marks it seen and hands the follower over; a later park
    proceeds; the follower's own finish forgets its record."""
    leader, follower = str(uuid4()), str(uuid4())
    k = state.keys
    assert await state.call_many([park(state, leader, follower, T0 - 5, T0)]) == [b"parked"]
    assert await redis_client.smembers(k.followers(UUID(leader))) == {follower.encode()}
    # a safety-net TTL: a leader that never comes must not leave its set behind for ever
    assert await redis_client.pttl(k.followers(UUID(leader))) > 3600 * 1000
    assert await redis_client.zscore(k.waitlist, follower) == T0 - 5
    (released,) = await state.call_many([state.finish([UUID(leader)], T0 + 1)])
    assert released == [[follower.encode()]]
    assert await redis_client.get(k.seen(UUID(leader))) == str(T0 + 1).encode()
    assert not await redis_client.exists(k.followers(UUID(leader)))
    assert await redis_client.hexists(k.parked_events, follower)  # until its own finish
    late = str(uuid4())
    assert await state.call_many([park(state, leader, late, T0, T0 + 2)]) == [b"proceed"]
    await state.call_many([state.finish([UUID(follower)], T0 + 3)])
    assert not await redis_client.hexists(k.parked_events, follower)
    assert await redis_client.zcard(k.waitlist) == 0


async def test_finish_marks_a_segment_in_order_and_releases_each_ones_followers(
    state: RedisState, redis_client: redis.asyncio.Redis
) -> None:
    """SEMANTICS 10.1 steps 5 and 7 for a whole segment in one call: each event is marked
    seen and hands over its own followers, at its own index; one without followers gets []."""
    first, second, third = (str(uuid4()) for _ in range(3))
    follower_of_first, follower_of_third = str(uuid4()), str(uuid4())
    await state.call_many(
        [park(state, first, follower_of_first, T0, T0), park(state, third, follower_of_third, T0, T0)]
    )
    (released,) = await state.call_many(
        [state.finish([UUID(first), UUID(second), UUID(third)], T0 + 1)]
    )
    assert released == [[follower_of_first.encode()], [], [follower_of_third.encode()]]
    for event in (first, second, third):
        assert await redis_client.get(state.keys.seen(UUID(event))) == str(T0 + 1).encode()


async def test_intake_check_tells_duplicates_and_leaders_apart(state: RedisState) -> None:
    """SEMANTICS 10: an event marked seen within the horizon is a duplicate (a mark past the
    horizon is not), and one with parked followers is a leader."""
    seen, old, leader, fresh = (uuid4() for _ in range(4))
    await state.call_many([state.finish([seen], T0), state.finish([old], T0 - HORIZON)])
    await state.call_many([park(state, str(leader), str(uuid4()), T0, T0)])
    marks, leaders = await state.intake_check([seen, old, leader, fresh], T0, HORIZON)
    assert marks == [True, False, False, False]
    assert leaders == [False, False, True, False]
    assert await state.intake_check([], T0, HORIZON) == ([], [])


async def test_park_treats_a_seen_mark_past_the_horizon_as_unseen(state: RedisState) -> None:
    """SEMANTICS 10: seen marks count for 30 minutes of the engine's clock."""
    leader, follower = str(uuid4()), str(uuid4())
    await state.call_many([state.finish([UUID(leader)], T0)])
    call = park(state, leader, follower, T0 + HORIZON, T0 + HORIZON)
    assert await state.call_many([call]) == [b"parked"]


async def test_park_and_finish_pair_atomically_under_concurrency(
    state: RedisState, redis_client: redis.asyncio.Redis
) -> None:
    """park-4 and finish-n are atomic together: of 80 followers parked concurrently with
    their leader's finish (each call on its own connection; the client's pool allows 100),
    each either proceeds or is handed to the leader, never both, never neither."""
    leader = str(uuid4())
    followers = [str(uuid4()) for _ in range(80)]

    async def park_one(follower: str) -> tuple[str, bytes]:
        (answer,) = await state.call_many([park(state, leader, follower, T0, T0)])
        return follower, answer

    async def finish_leader() -> list[bytes]:
        ((released,),) = await state.call_many([state.finish([UUID(leader)], T0)])
        return released

    parks = [park_one(f) for f in followers]
    answers = await asyncio.gather(*parks[:40], finish_leader(), *parks[40:])
    released = {r.decode() for r in answers[40]}  # type: ignore[union-attr]
    others = answers[:40] + answers[41:]
    proceeded = {f for f, a in others if a == b"proceed"}  # type: ignore[misc]
    parked = {f for f, a in others if a == b"parked"}  # type: ignore[misc]
    assert parked == released
    assert proceeded | parked == set(followers) and not proceeded & parked


async def test_lost_returns_followers_received_at_or_before_the_cutoff(
    state: RedisState,
) -> None:
    """SEMANTICS 10.4: received <= cutoff (the Redis backend's inclusive score range)."""
    leader = str(uuid4())
    ids = [str(uuid4()) for _ in range(3)]
    await state.call_many(
        [park(state, leader, f, received, T0) for f, received in zip(ids, (T0 - 2, T0 - 1, T0), strict=True)]
    )
    assert await state.lost_followers(T0 - 1, 100) == [ids[0].encode(), ids[1].encode()]
    assert await state.lost_followers(T0, 1) == [ids[0].encode()]


# ---------------------------------------------------------------- clock-1


async def clock(state: RedisState, latest: int | None, now: int) -> int:
    tick = state.tick(latest, now)
    return int(await state.call(tick.script, tick.keys, tick.args))


async def test_clock_never_moves_backwards(state: RedisState) -> None:
    """SEMANTICS 11: an older event does not move the clock back, but does move the last
    tick, so the offset gets more negative (quirk 16.14)."""
    assert await clock(state, T0 - 10 * S, T0) == -10 * S
    assert await clock(state, T0 - 60 * S, T0 + S) == -11 * S
    assert await clock(state, T0 + S, T0 + S) == 0


async def test_clock_offset_stays_constant_while_no_events_arrive(state: RedisState) -> None:
    """SEMANTICS 11 (Prefect's test: -42 s stays -42 s after 10 s of silence)."""
    assert await clock(state, None, T0) == 0  # never ticked
    await clock(state, T0 - 42 * S, T0)
    assert await clock(state, None, T0 + 10 * S) == -42 * S
    assert await state.clock_offset(T0 + 3600 * S) == -42 * S


async def test_clock_reset_unsets_it(state: RedisState) -> None:
    """SEMANTICS 11: reset sets clock and last tick to unset; the offset is 0 again."""
    await clock(state, T0 - 42 * S, T0)
    await state.reset_clock()
    assert await state.clock_offset(T0) == 0


# ---------------------------------------------------------------- NOSCRIPT


async def test_calls_recover_after_the_server_forgets_its_scripts(
    state: RedisState, tkeys: TriggerKeys, redis_client: redis.asyncio.Redis
) -> None:
    """DESIGN "State in Redis" (SCRIPT LOAD once, EVALSHA after, reload on NOSCRIPT): after
    SCRIPT FLUSH a single call and a pipelined call_many both still work."""
    await redis_client.script_flush()
    assert steps(await reactive(state, tkeys, "e1", T0)) == "counted"
    await redis_client.script_flush()
    tick = state.tick(T0, T0)
    results = await state.call_many(
        [tick, Command(("HLEN", tkeys.buckets)), ScriptCall(tick.script, tick.keys, [""] + [T0])]
    )
    assert results == [b"0", 1, b"0"]
    assert all(await redis_client.script_exists(*(s.sha for s in state.scripts.by_name.values())))


async def test_composite_firing_too_old_to_count_leaves_its_childs_stored_firing(
    state: RedisState, ckeys: CompositeKeys, redis_client: redis.asyncio.Redis
) -> None:
    """Decision 1: a late firing too old for the newest stored one does not replace its
    child's newer stored firing (it could never count; the newer one still can)."""
    await child(state, ckeys, "A", "fa-95", T0 + 95 * S, within=10 * S, expected=3,
                children="A B C")
    await child(state, ckeys, "B", "fb-100", T0 + 100 * S, within=10 * S, expected=3,
                children="A B C")
    late = await child(state, ckeys, "A", "fa-0", T0, within=10 * S, expected=3,
                       children="A B C")
    assert late == [b"expired"]
    assert json.loads(await redis_client.hget(ckeys.children, "A"))["id"] == "fa-95"
    decision, _ = await child(state, ckeys, "C", "fc-101", T0 + 101 * S, within=10 * S,
                              expected=3, children="A B C")
    assert decision == b"fired"
