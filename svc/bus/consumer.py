"""The event intake loop: a durable pull consumer on the events stream, one handler call per
fetched batch, dead letters published, and each message acked only once its effects are durable.

How a batch goes (DESIGN, "Delivery guarantees"):

1. fetch up to `fetch_batch` messages, waiting at most `fetch_timeout_s` (none is normal);
2. call the handler once with the whole batch; its return means every effect is durable
   (state in Redis, firings acknowledged by JetStream) and says, per message, None (done) or
   why the message is bad input (Decision 2). It may instead return `Handled`: the reasons,
   and a future done once the effects still under way are durable (the service's firings
   being published while the next batch is evaluated);
3. publish each bad message to the dead-letter subject and await JetStream's acknowledgement;
4. ack every message of the batch, at once or, with `Handled`, once its future is done while
   the loop goes on (nak'd with a delay if it failed; a stop waits for these acks).

With a `prepare` callable, the next batch may be taken while the handler still works on one
(`take_ahead`, which the service calls while Redis evaluates a batch): it is prepared then
(the service decodes it) and is the next batch handled, exactly as if fetched then.

If step 2 or 3 raises, nothing of the batch is acked: every message is nak'd with a delay, the
loop pauses (exponential backoff, capped) and goes on. A crash at any point redelivers the
batch; the engine's seen-event marks and the firings' `Nats-Msg-Id` make that harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from svc.bus.pull import PullSource, ack_all
from svc.config import Settings

logger = logging.getLogger(__name__)

# Headers added to a dead-lettered message, beside the original body and headers.
DEAD_LETTER_REASON = "Triggers-Dead-Letter-Reason"
ORIGINAL_SUBJECT = "Triggers-Original-Subject"
ORIGINAL_STREAM = "Triggers-Original-Stream"
ORIGINAL_SEQUENCE = "Triggers-Original-Sequence"
ORIGINAL_MSG_ID = "Triggers-Original-Msg-Id"
MSG_ID = "Nats-Msg-Id"
# A header value is one line; reasons built from validation errors may be long and multi-line.
MAX_REASON_CHARS = 1000


class EventMessage:
    """One fetched event message, as the handler sees it (headers carry trace context).

    Its JetStream metadata (sequence, pending, deliveries) is read from the message's reply
    subject when first asked for: intake asks only of a batch's last message and of those
    it dead-letters, and reading it for every message was ~1.5 % of the service's time."""

    __slots__ = ("body", "headers", "subject", "_message")

    def __init__(self, message: Msg):
        self.body: bytes = message.data
        self.headers: dict[str, str] = message.headers or {}
        self.subject: str = message.subject
        self._message = message

    @property
    def stream_sequence(self) -> int:
        return self._message.metadata.sequence.stream  # parsed once, kept by the message

    @property
    def num_pending(self) -> int:
        """Messages left in the stream for the consumer after this one."""
        return self._message.metadata.num_pending

    @property
    def num_delivered(self) -> int:
        """More than 1: a redelivery."""
        return self._message.metadata.num_delivered

    def __repr__(self) -> str:
        return f"EventMessage(subject={self.subject!r}, body={self.body[:80]!r})"


@dataclass(frozen=True)
class Handled:
    """A handler's answer for a batch whose last effects are still under way: `reasons` as
    a plain answer gives them, and `durable`, done once every effect of the batch is durable
    (failed if one failed). The batch is acked then (nak'd on failure), while the loop goes
    on with the next batch."""

    reasons: Sequence[str | None]
    durable: asyncio.Future[None]


# Per message: None (done) or the reason it is dead-lettered. Returning means durable, or
# returning Handled: durable once its `durable` is done.
EventHandler = Callable[[Sequence[EventMessage]], Awaitable[Sequence[str | None] | Handled]]
# Given the batch that comes next, while the handler still works on the one before (see
# EventConsumer.take_ahead): work that does not depend on the batch before, done early.
EventPreparer = Callable[[Sequence[EventMessage]], None]


class HandlerContractError(RuntimeError):
    """The handler answered a batch with the wrong number of results."""


class EventConsumer:
    """Runs the intake loop for one replica; every replica shares the one durable consumer.

    The counters are plain attributes for the telemetry layer to read.
    """

    def __init__(
        self,
        js: JetStreamContext,
        settings: Settings,
        handler: EventHandler,
        ready: asyncio.Event | None = None,
        prepare: EventPreparer | None = None,
    ):
        self.js = js
        self.settings = settings
        self.handler = handler
        self.prepare = prepare
        # fetch only while this is set (None: always); cleared while a dependency is down,
        # so nothing is fetched that could not be handled
        self.ready = ready
        self.processed = 0  # messages acked after the handler (dead letters included)
        self.dead_lettered = 0
        self.batches = 0
        self.errors = 0  # failed batches and failed fetches
        self.num_pending = 0  # consumer lag: messages not yet delivered, as of the last batch
        self._failures_in_a_row = 0
        self._stopping = asyncio.Event()
        self._running = False
        self._stopped = asyncio.Event()
        self._source: PullSource | None = None
        self._nc: NATS | None = None  # the source's connection, which acks go on
        # batches handled whose acks wait for their effects to be durable (Handled)
        self._acking: set[asyncio.Future[None]] = set()
        # the next batch, taken while the handler worked on the one before and prepared
        self._ahead: tuple[list[Msg], list[EventMessage]] | None = None

    def consumer_config(self) -> ConsumerConfig:
        s = self.settings
        return ConsumerConfig(
            name=s.consumer_name,
            durable_name=s.consumer_name,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait_s,
            max_ack_pending=s.max_ack_pending,
            filter_subject=f"{s.events_subject_prefix}.>",
        )

    async def ensure_consumer(self) -> None:
        """Create the durable consumer, or update it to the settings (JetStream's create is
        create-or-update for a named consumer, so every replica may call this at start)."""
        await self.js.add_consumer(self.settings.events_stream, self.consumer_config())

    async def run(self) -> None:
        """Fetch and handle batches until stop() or cancellation; one bad batch never ends it.

        On stop() it returns once the batch in flight is handled and acked. On cancellation
        it does the same, then re-raises CancelledError. Failing to create the consumer at
        start raises: that is a set-up error, not a bad batch.
        """
        self._running = True
        self._stopped.clear()
        try:
            await self.ensure_consumer()
            subscription = await PullSource.bind(
                self.js,
                self.settings.events_stream,
                self.settings.consumer_name,
                expires_s=self.settings.fetch_timeout_s,
            )
            self._source = subscription
            self._nc = subscription.nc
            try:
                while not self._stopping.is_set():
                    if self.ready is None or self.ready.is_set():
                        await self._step(subscription)
                    else:
                        await self._until_ready()
                await self._handle_fetched_ahead(subscription)
                await self._settle_acks()
            finally:
                if self._acking:  # cancelled: the acks under way still end (like a batch)
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(self._settle_acks())
                self._source = None
                if self._ahead is not None:  # cancelled: nak'd with the rest of the buffer
                    subscription.give_back(self._ahead[0])
                    self._ahead = None
                with contextlib.suppress(Exception):  # the connection may be closing already
                    await subscription.unsubscribe()
        finally:
            self._running = False
            self._stopped.set()

    async def stop(self) -> None:
        """Stop fetching; return once the batch in flight is handled and acked."""
        self._stopping.set()
        if self._running:
            await self._stopped.wait()

    async def _step(self, subscription: PullSource) -> None:
        """One fetch and its batch. The only broad `except` of the loop is here."""
        try:
            if self._ahead is not None:
                (messages, events), self._ahead = self._ahead, None
                await subscription.top_up(self.settings.fetch_batch)
            else:
                messages, events = await self._fetch(subscription), None
            if messages:
                # Shielded: a cancellation arriving mid-batch still lets the handler finish
                # and the batch be acked or nak'd, like arq's finish_job.
                batch = asyncio.ensure_future(self._handle_batch(messages, events))
                try:
                    await asyncio.shield(batch)
                except asyncio.CancelledError:
                    self._stopping.set()
                    await self._settle(batch)
                    raise
                # only a handled batch ends a run of failures: an empty fetch in between
                # proves nothing, as the nak'd batch is held back for its delay
                self._failures_in_a_row = 0
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            self._failures_in_a_row += 1
            pause_s = self._backoff_s()
            logger.exception(
                "event batch failed (%d in a row); fetching again in %.1f s",
                self._failures_in_a_row,
                pause_s,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=pause_s)

    async def _until_ready(self) -> None:
        """Wait until fetching may go on, or stop() is called."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (self.ready, self._stopping) if e]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def take_ahead(self) -> None:
        """Take the next batch now, if the source holds a whole one already, and hand it to
        `prepare`, while the handler still works on the batch before (the service calls
        this while Redis evaluates a batch, to decode the next one meanwhile). The loop
        then handles it next, as if it had fetched it then. Nothing happens without
        `prepare`, while stopping or not ready, or when a batch is taken already."""
        source = self._source
        if (
            self.prepare is None
            or source is None
            or self._ahead is not None
            or self._stopping.is_set()
            or (self.ready is not None and not self.ready.is_set())
        ):
            return
        messages = source.take_ready(self.settings.fetch_batch)
        if not messages:
            return
        events = [_event_message(m) for m in messages]
        self._ahead = (messages, events)
        self.prepare(events)

    async def _handle_fetched_ahead(self, source: PullSource) -> None:
        """On stop, what was fetched ahead is handled and acked like any batch, so a
        graceful stop leaves nothing unacknowledged (a failed batch is nak'd)."""
        messages: list[Msg] = []
        if self._ahead is not None:
            messages, self._ahead = self._ahead[0], None
        messages += await source.drain(self.settings.fetch_timeout_s)
        batch = self.settings.fetch_batch
        for start in range(0, len(messages), batch):
            try:
                await self._handle_batch(messages[start : start + batch])
            except Exception:
                self.errors += 1
                logger.exception("event batch fetched ahead failed while the consumer stopped")

    async def _fetch(self, subscription: PullSource) -> list[Msg]:
        try:
            return await subscription.fetch(
                self.settings.fetch_batch, timeout=self.settings.fetch_timeout_s
            )
        except TimeoutError:  # nats.errors.TimeoutError and FetchTimeoutError: nothing to do
            return []

    async def _handle_batch(
        self, messages: list[Msg], events: list[EventMessage] | None = None
    ) -> None:
        if events is None:
            events = [_event_message(m) for m in messages]
        self.num_pending = events[-1].num_pending
        durable: asyncio.Future[None] | None = None
        try:
            answer = await self.handler(events)
            if isinstance(answer, Handled):
                durable = answer.durable
                answer = answer.reasons
            reasons = list(answer)
            if len(reasons) != len(events):
                raise HandlerContractError(
                    f"the event handler returned {len(reasons)} results for a batch of "
                    f"{len(events)} messages; it must return one (None or a reason) per message"
                )
            await self._dead_letter(events, reasons)
        except Exception:
            # Not acked: JetStream hands the batch out again after the delay. The delay is
            # the pause the loop is about to take, so redeliveries do not hammer a failing
            # dependency, here or on another replica.
            await self._nak(messages, delay_s=self._backoff_s(self._failures_in_a_row + 1))
            if durable is not None:  # its outcome is still retrieved, and waited for on stop
                self._track(asyncio.ensure_future(_outcome_of(durable)))
            raise
        if durable is None:
            await self._ack(messages)
        else:
            self._track(asyncio.ensure_future(self._ack_once_durable(messages, durable)))

    def _track(self, acking: asyncio.Future[None]) -> None:
        self._acking.add(acking)
        acking.add_done_callback(self._acking.discard)

    async def _ack(self, messages: list[Msg]) -> None:
        # acks, not ack_sync: the ordering (after the handler) is what the guarantee needs;
        # a lost ack only redelivers, which the engine absorbs, and ack_sync would cost one
        # round trip per message. The batch's acks go in one write (the connection flushes
        # it promptly, and on close).
        await ack_all(self._nc, messages)  # type: ignore[arg-type]
        self.batches += 1
        self.processed += len(messages)

    async def _ack_once_durable(self, messages: list[Msg], durable: asyncio.Future[None]) -> None:
        """Ack a handled batch once its effects are durable; nak it if they failed."""
        try:
            await durable
        except Exception:
            self.errors += 1
            logger.exception("the effects of an event batch failed; it comes back")
            await self._nak(messages, delay_s=self._backoff_s(self._failures_in_a_row + 1))
            return
        await self._ack(messages)

    async def _settle_acks(self) -> None:
        """Wait for the batches whose acks wait for their effects."""
        while self._acking:
            await asyncio.wait(list(self._acking))

    async def _dead_letter(
        self, events: Sequence[EventMessage], reasons: Sequence[str | None]
    ) -> None:
        bad = [(e, r) for e, r in zip(events, reasons, strict=True) if r is not None]
        if not bad:
            return
        await asyncio.gather(*(self._publish_dead_letter(e, r) for e, r in bad))
        self.dead_lettered += len(bad)

    async def _publish_dead_letter(self, event: EventMessage, reason: str) -> None:
        logger.warning(
            "dead-lettering event message %s#%d (%s): %s",
            self.settings.events_stream,
            event.stream_sequence,
            event.subject,
            reason,
        )
        headers = dict(event.headers)
        original_id = headers.pop(MSG_ID, None)
        if original_id is not None:
            headers[ORIGINAL_MSG_ID] = original_id
        headers.update(
            {
                DEAD_LETTER_REASON: _one_line(reason),
                ORIGINAL_SUBJECT: event.subject,
                ORIGINAL_STREAM: self.settings.events_stream,
                ORIGINAL_SEQUENCE: str(event.stream_sequence),
                # a redelivered bad message is dead-lettered once (duplicate window)
                MSG_ID: f"{self.settings.events_stream}:{event.stream_sequence}",
            }
        )
        await self.js.publish(
            self.settings.dead_letter_subject,
            event.body,
            headers=headers,
            stream=self.settings.dead_letter_stream,
        )

    async def _settle(self, batch: asyncio.Future[None]) -> None:
        """Wait for a shielded batch to end; the caller is being cancelled."""
        try:
            await batch
        except Exception:
            self.errors += 1
            logger.exception("event batch failed while the consumer was being cancelled")

    async def _nak(self, messages: list[Msg], delay_s: float) -> None:
        for message in messages:
            await message.nak(delay=delay_s)

    def _backoff_s(self, failures: int | None = None) -> float:
        """The pause after `failures` consecutive failures: doubling from the initial value,
        capped."""
        n = self._failures_in_a_row if failures is None else failures
        s = self.settings
        return min(s.consumer_backoff_initial_s * 2 ** max(n - 1, 0), s.consumer_backoff_max_s)


async def _outcome_of(future: asyncio.Future[None]) -> None:
    with contextlib.suppress(Exception):
        await future


def _event_message(message: Msg) -> EventMessage:
    return EventMessage(message)


def _one_line(reason: str) -> str:
    flat = " ".join(reason.split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[: MAX_REASON_CHARS - 3] + "..."
