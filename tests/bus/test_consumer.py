"""The intake loop: acks only after the handler returns, naks and carries on when it raises,
dead-letters bad input with its reason, and finishes the batch in flight when stopped."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence

import nats
import orjson
import pytest
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, MsgAlreadyAckdError, NotJSMessageError
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError

from svc.bus.consumer import (
    DEAD_LETTER_REASON,
    ORIGINAL_SEQUENCE,
    ORIGINAL_STREAM,
    ORIGINAL_SUBJECT,
    EventConsumer,
    EventHandler,
    EventMessage,
    Handled,
)
from svc.bus.pull import PullSource, ack_all
from svc.bus.streams import ensure_streams
from svc.config import Settings
from tests.helpers import eventually


@pytest.fixture
async def streams(js: JetStreamContext, bus_settings: Settings) -> AsyncIterator[None]:
    await ensure_streams(js, bus_settings)
    yield


async def publish_events(js: JetStreamContext, settings: Settings, count: int) -> None:
    for n in range(count):
        await js.publish(
            f"{settings.events_subject_prefix}.test.event",
            orjson.dumps({"n": n}),
            headers={"traceparent": f"00-{n:032x}-{n + 1:016x}-01"},
        )


async def consumer_info(js: JetStreamContext, settings: Settings) -> ConsumerInfo:
    return await js.consumer_info(settings.events_stream, settings.consumer_name)


async def all_acked(js: JetStreamContext, settings: Settings, count: int) -> bool:
    try:
        info = await consumer_info(js, settings)
    except NotFoundError:  # run() has not created it yet
        return False
    return info.ack_floor.stream_seq == count and info.num_ack_pending == 0


@contextlib.asynccontextmanager
async def running(consumer: EventConsumer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(consumer.run())
    try:
        yield task
    finally:
        await consumer.stop()
        await task


def recording_handler(
    seen: list[EventMessage], reasons: dict[int, str] | None = None
) -> EventHandler:
    async def handle(messages: Sequence[EventMessage]) -> list[str | None]:
        seen.extend(messages)
        return [(reasons or {}).get(m.stream_sequence) for m in messages]

    return handle


async def test_a_batch_is_acked_only_after_the_handler_returns(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    await publish_events(js, bus_settings, 3)
    # per batch: (ack floor, messages delivered and not acked, batch size) while handling it
    while_handling: list[tuple[int, int, int]] = []
    seen: list[EventMessage] = []

    async def handle(messages: Sequence[EventMessage]) -> list[None]:
        info = await consumer_info(js, bus_settings)
        while_handling.append(
            (info.ack_floor.stream_seq, info.num_ack_pending or 0, len(messages))
        )
        seen.extend(messages)
        return [None] * len(messages)

    consumer = EventConsumer(js, bus_settings, handle)
    async with running(consumer):
        await eventually(lambda: all_acked(js, bus_settings, 3), "the ack floor to reach 3")

    # The three usually come in one batch, but may be handed over as they arrive: whatever
    # the split, every earlier batch was acked and none of the batch in hand was.
    handled_before = 0
    for floor, unacked, size in while_handling:
        assert floor == handled_before
        assert unacked >= size
        handled_before += size
    assert [m.stream_sequence for m in seen] == [1, 2, 3]
    assert [orjson.loads(m.body) for m in seen] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert seen[0].subject == f"{bus_settings.events_subject_prefix}.test.event"
    assert seen[0].headers["traceparent"] == f"00-{0:032x}-{1:016x}-01"
    assert [m.num_pending for m in seen] == [2, 1, 0]
    assert (consumer.processed, consumer.batches, consumer.errors) == (3, len(while_handling), 0)
    assert consumer.num_pending == 0


async def test_a_handler_that_raises_leaves_the_batch_unacked_and_it_comes_back(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    await publish_events(js, bus_settings, 2)
    calls: list[list[tuple[int, int]]] = []
    floors_at_retry: list[int] = []

    async def handle(messages: Sequence[EventMessage]) -> list[None]:
        calls.append([(m.stream_sequence, m.num_delivered) for m in messages])
        if len(calls) == 1:
            raise ConnectionError("redis went away")
        floors_at_retry.append((await consumer_info(js, bus_settings)).ack_floor.stream_seq)
        return [None] * len(messages)

    consumer = EventConsumer(js, bus_settings, handle)
    async with running(consumer) as task:
        await eventually(lambda: all_acked(js, bus_settings, 2), "the ack floor to reach 2")
        assert not task.done()

    assert calls == [[(1, 1), (2, 1)], [(1, 2), (2, 2)]]
    assert floors_at_retry == [0]
    assert (consumer.processed, consumer.batches, consumer.errors) == (2, 1, 1)


async def test_a_handler_answering_the_wrong_number_of_results_is_a_failed_batch(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    await publish_events(js, bus_settings, 2)
    calls = 0

    async def handle(messages: Sequence[EventMessage]) -> list[None]:
        nonlocal calls
        calls += 1
        return [None] if calls == 1 else [None] * len(messages)

    consumer = EventConsumer(js, bus_settings, handle)
    async with running(consumer):
        await eventually(lambda: all_acked(js, bus_settings, 2), "the ack floor to reach 2")
    assert (consumer.errors, consumer.processed) == (1, 2)


async def test_bad_input_is_dead_lettered_with_its_reason_and_acked(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    s = bus_settings
    await publish_events(js, s, 3)
    seen: list[EventMessage] = []
    reason = "event: field required\n  (line two of the reason)"
    consumer = EventConsumer(js, s, recording_handler(seen, {2: reason}))

    async with running(consumer):
        await eventually(lambda: all_acked(js, s, 3), "the ack floor to reach 3")

    assert (await js.stream_info(s.dead_letter_stream)).state.messages == 1
    dead = await js.get_msg(s.dead_letter_stream, seq=1)
    assert dead.subject == s.dead_letter_subject
    assert orjson.loads(dead.data) == {"n": 1}
    assert dead.headers is not None
    assert dead.headers[DEAD_LETTER_REASON] == "event: field required (line two of the reason)"
    assert dead.headers[ORIGINAL_SUBJECT] == f"{s.events_subject_prefix}.test.event"
    assert dead.headers[ORIGINAL_STREAM] == s.events_stream
    assert dead.headers[ORIGINAL_SEQUENCE] == "2"
    assert dead.headers["traceparent"] == f"00-{1:032x}-{2:016x}-01"
    assert (consumer.processed, consumer.dead_lettered, consumer.errors) == (3, 1, 0)


async def held_in_a_batch(
    js: JetStreamContext, settings: Settings
) -> tuple[EventConsumer, asyncio.Task[None], asyncio.Event]:
    """Two events published and a consumer running whose handler holds their batch until the
    returned event is set: (the consumer, its run() task, that event), once it holds it."""
    await publish_events(js, settings, 2)
    entered, release = asyncio.Event(), asyncio.Event()

    async def handle(messages: Sequence[EventMessage]) -> list[None]:
        entered.set()
        await release.wait()
        return [None] * len(messages)

    consumer = EventConsumer(js, settings, handle)
    run = asyncio.create_task(consumer.run())
    await asyncio.wait_for(entered.wait(), timeout=10)
    return consumer, run, release


async def test_stop_lets_the_batch_in_flight_finish_and_be_acked(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    consumer, run, release = await held_in_a_batch(js, bus_settings)
    stop = asyncio.create_task(consumer.stop())
    for _ in range(10):  # give stop() every chance to return early; it must not
        await asyncio.sleep(0)
    assert not stop.done() and not run.done()

    release.set()
    await asyncio.wait_for(stop, timeout=10)
    assert run.done() and run.exception() is None
    await eventually(lambda: all_acked(js, bus_settings, 2), "the ack floor to reach 2")
    assert consumer.processed == 2


async def test_cancellation_lets_the_batch_in_flight_finish_then_cancels(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    consumer, run, release = await held_in_a_batch(js, bus_settings)
    run.cancel()
    for _ in range(10):  # give the cancellation every chance to end run() early; it must not
        await asyncio.sleep(0)
    assert not run.done()

    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, timeout=10)
    await eventually(lambda: all_acked(js, bus_settings, 2), "the ack floor to reach 2")
    assert consumer.processed == 2


async def test_stop_while_idle_returns_after_the_fetch_under_way(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    consumer = EventConsumer(js, bus_settings, recording_handler([]))
    run = asyncio.create_task(consumer.run())
    await eventually(lambda: consumer_exists(js, bus_settings), "the consumer to exist")
    await asyncio.wait_for(consumer.stop(), timeout=10)
    assert run.done() and run.exception() is None
    assert (consumer.batches, consumer.errors) == (0, 0)


async def consumer_exists(js: JetStreamContext, settings: Settings) -> bool:
    try:
        await consumer_info(js, settings)
    except NotFoundError:
        return False
    return True


async def test_the_durable_consumer_is_created_then_updated_to_the_settings(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    handler = recording_handler([])
    await EventConsumer(js, bus_settings, handler).ensure_consumer()
    await EventConsumer(js, bus_settings, handler).ensure_consumer()
    info = await consumer_info(js, bus_settings)
    assert info.config.durable_name == bus_settings.consumer_name
    assert info.config.filter_subject == f"{bus_settings.events_subject_prefix}.>"
    assert info.config.ack_wait == bus_settings.ack_wait_s
    assert info.config.max_ack_pending == 1000

    changed = EventConsumer(
        js, dataclasses.replace(bus_settings, max_ack_pending=50, ack_wait_s=12.0), handler
    )
    await changed.ensure_consumer()
    info = await consumer_info(js, bus_settings)
    assert (info.config.max_ack_pending, info.config.ack_wait) == (50, 12.0)


async def test_a_batch_never_exceeds_fetch_batch(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    settings = dataclasses.replace(bus_settings, fetch_batch=2)
    await publish_events(js, settings, 5)
    sizes: list[int] = []

    async def handle(messages: Sequence[EventMessage]) -> list[None]:
        sizes.append(len(messages))
        return [None] * len(messages)

    consumer = EventConsumer(js, settings, handle)
    async with running(consumer):
        await eventually(lambda: all_acked(js, settings, 5), "the ack floor to reach 5")
    assert max(sizes) <= 2 and sum(sizes) == 5


async def test_consecutive_failures_back_off_exponentially_up_to_the_cap(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    await publish_events(js, bus_settings, 1)
    calls = 0

    async def handle(messages: Sequence[EventMessage]) -> list[None]:
        nonlocal calls
        calls += 1
        if calls <= 4:
            raise ConnectionError("redis went away")
        return [None] * len(messages)

    consumer = EventConsumer(js, bus_settings, handle)
    pauses: list[float] = []
    original = consumer._backoff_s

    def recording_backoff(failures: int | None = None) -> float:
        pause = original(failures)
        if failures is None:
            pauses.append(pause)
        return pause

    consumer._backoff_s = recording_backoff  # type: ignore[method-assign]
    async with running(consumer):
        await eventually(lambda: all_acked(js, bus_settings, 1), "the ack floor to reach 1")
    # initial 0.05 s, doubling, capped at 0.2 s (bus_settings)
    assert pauses == [0.05, 0.1, 0.2, 0.2]
    assert (consumer.errors, consumer.processed) == (4, 1)


class TakingAhead:
    """A consumer (fetch batch 2) whose handler, like the service's engine while Redis
    evaluates a batch, asks for the next batch to be taken ahead once the source holds one
    (then, with `hold`, the first batch waits for it to be set). Records the batches
    prepared and handled, as stream sequences, and how many were handled when each batch
    was prepared."""

    def __init__(self, js: JetStreamContext, settings: Settings, hold: asyncio.Event | None):
        self.settings = dataclasses.replace(settings, fetch_batch=2)
        self.hold = hold
        self.handled: list[list[int]] = []
        self.prepared: list[list[int]] = []
        self.taken_while: list[int] = []
        self.consumer = EventConsumer(js, self.settings, self.handle, prepare=self.prepare)

    def next_batch_held(self) -> bool:
        source = self.consumer._source
        assert source is not None
        buffered = len(source._buffer)
        # a whole batch, what is left once the request ended, or nothing more to come
        return (
            buffered >= 2 or (buffered > 0 and not source._owed) or self.consumer.num_pending == 0
        )

    async def handle(self, messages: Sequence[EventMessage]) -> list[str | None]:
        self.handled.append([m.stream_sequence for m in messages])
        # the next batch arrives while this one is handled (the source asked for it)
        await eventually(self.next_batch_held, "the next batch, or the end of the stream")
        self.consumer.take_ahead()
        if self.hold is not None and len(self.handled) == 1:
            await self.hold.wait()
        return [None] * len(messages)

    def prepare(self, messages: Sequence[EventMessage]) -> None:
        self.prepared.append([m.stream_sequence for m in messages])
        self.taken_while.append(len(self.handled))


async def taking_ahead(
    js: JetStreamContext, settings: Settings, count: int, hold: asyncio.Event | None = None
) -> TakingAhead:
    """`count` events published, and a TakingAhead consumer for them (not running)."""
    await publish_events(js, settings, count)
    return TakingAhead(js, settings, hold)


async def test_a_batch_taken_ahead_is_prepared_then_handled_next_in_order(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    t = await taking_ahead(js, bus_settings, 7)
    async with running(t.consumer):
        await eventually(lambda: all_acked(js, t.settings, 7), "the ack floor to reach 7")

    assert [n for batch in t.handled for n in batch] == list(range(1, 8))
    assert max(len(batch) for batch in t.handled) <= 2
    # each batch prepared ahead, while the one before was handled, is the next one handled
    assert t.prepared
    for batch, handling in zip(t.prepared, t.taken_while, strict=True):
        assert t.handled[handling] == batch
    assert (t.consumer.processed, t.consumer.errors) == (7, 0)


async def test_a_batch_taken_ahead_is_handled_and_acked_on_stop(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    t = await taking_ahead(js, bus_settings, 4)

    async def handle_then_stop(messages: Sequence[EventMessage]) -> Sequence[str | None]:
        results = await t.handle(messages)
        if len(t.handled) == 1:
            asyncio.get_running_loop().call_soon(t.consumer._stopping.set)
        return results

    t.consumer.handler = handle_then_stop
    async with running(t.consumer):
        await eventually(lambda: all_acked(js, t.settings, 4), "the ack floor to reach 4")
    assert t.prepared == [[3, 4]] and t.handled == [[1, 2], [3, 4]]


async def test_a_batch_taken_ahead_is_given_back_when_cancelled(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    hold = asyncio.Event()
    t = await taking_ahead(js, bus_settings, 4, hold)
    run = asyncio.create_task(t.consumer.run())
    await eventually(lambda: t.prepared == [[3, 4]], "the second batch to be taken ahead")
    run.cancel()
    hold.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, timeout=10)
    assert t.handled == [[1, 2]]
    # nak'd, not left to the ack wait: another consumer gets them at once
    again: list[EventMessage] = []
    async with running(EventConsumer(js, t.settings, recording_handler(again))):
        await eventually(lambda: all_acked(js, t.settings, 4), "the ack floor to reach 4")
    assert [m.stream_sequence for m in again] == [3, 4]


async def test_a_batch_handled_with_effects_under_way_is_acked_once_they_are_durable(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    """A handler may answer Handled: the loop goes on, and the batch is acked once its
    `durable` is done (stop waits for that), or nak'd and handed out again if it failed."""
    settings = dataclasses.replace(bus_settings, fetch_batch=2)
    await publish_events(js, settings, 4)
    loop = asyncio.get_running_loop()
    durables: list[asyncio.Future[None]] = []
    handled: list[list[tuple[int, int]]] = []

    async def handle(messages: Sequence[EventMessage]) -> Handled:
        handled.append([(m.stream_sequence, m.num_delivered) for m in messages])
        durables.append(loop.create_future())
        return Handled([None] * len(messages), durables[-1])

    consumer = EventConsumer(js, settings, handle)
    run = asyncio.create_task(consumer.run())
    await eventually(lambda: len(handled) >= 2, "two batches handled, their effects under way")
    assert (await consumer_info(js, settings)).ack_floor.stream_seq == 0
    durables[0].set_exception(ConnectionError("NATS went away"))
    durables[1].set_result(None)
    await eventually(lambda: all_acked_up_to(js, settings, 4), "the second batch acked")
    # the first comes back (nak'd; in one batch or two), and is acked once it is durable
    await eventually(
        lambda: sorted(seq for batch in handled[2:] for seq, delivered in batch if delivered == 2)
        == [1, 2],
        "the first batch's messages again",
    )
    stop = asyncio.create_task(consumer.stop())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not stop.done()  # waits for the batches whose effects are under way
    for durable in durables[2:]:
        durable.set_result(None)
    await asyncio.wait_for(stop, timeout=10)
    await run
    await eventually(lambda: all_acked(js, settings, 4), "the ack floor to reach 4")
    assert consumer.processed == 4 and consumer.errors >= 1


async def all_acked_up_to(js: JetStreamContext, settings: Settings, last: int) -> bool:
    """Messages 3..last acked (the ack floor may stay below while 1 and 2 are pending)."""
    info = await consumer_info(js, settings)
    return info.num_ack_pending == 2 and info.delivered.stream_seq == last


# ---------------------------------------------------------------- ack_all


async def fetched(
    js: JetStreamContext, settings: Settings, count: int
) -> tuple[PullSource, list[Msg]]:
    """`count` events published and fetched (not acked) from the durable consumer."""
    await EventConsumer(js, settings, recording_handler([])).ensure_consumer()
    await publish_events(js, settings, count)
    source = await PullSource.bind(
        js, settings.events_stream, settings.consumer_name, expires_s=1.0
    )
    messages: list[Msg] = []
    while len(messages) < count:
        messages += await source.fetch(count - len(messages), timeout=5.0)
    return source, messages


async def test_ack_all_acknowledges_every_message_in_one_write(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    source, messages = await fetched(js, bus_settings, 5)
    try:
        await ack_all(source.nc, messages)
        await eventually(lambda: all_acked(js, bus_settings, 5))
        # as Msg.ack() leaves a message: acknowledged once, for good
        with pytest.raises(MsgAlreadyAckdError):
            await messages[0].ack()
    finally:
        await source.unsubscribe()


async def test_ack_all_acks_nothing_when_a_message_has_no_reply_subject(
    js: JetStreamContext, bus_settings: Settings, streams: None
) -> None:
    source, messages = await fetched(js, bus_settings, 2)
    try:
        not_from_jetstream = Msg(source.nc, subject="x", reply="", data=b"")
        with pytest.raises(NotJSMessageError):
            await ack_all(source.nc, [*messages, not_from_jetstream])
        await source.nc.flush()
        info = await consumer_info(js, bus_settings)
        assert (info.ack_floor.stream_seq, info.num_ack_pending) == (0, 2)
        # none counts as acknowledged (Msg.ack would refuse a second ack): each can still be
        # acked, and then the consumer sees it, so the check above could see a stray ack
        for message in messages:
            await message.ack()
        await eventually(lambda: all_acked(js, bus_settings, 2))
    finally:
        await source.unsubscribe()


async def test_ack_all_on_a_closed_connection_raises(
    js: JetStreamContext, bus_settings: Settings, streams: None, nats_url: str
) -> None:
    source, messages = await fetched(js, bus_settings, 1)
    await source.unsubscribe()
    closed = await nats.connect(nats_url)
    await closed.close()
    with pytest.raises(ConnectionClosedError):
        await ack_all(closed, messages)
