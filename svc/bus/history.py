"""Reading a stream's stored history: what `why` and `replay` read, from a time on, once.

An ephemeral pull consumer with no acks reads the messages of one subject filter in stream
order, from a start time (or the beginning), up to the last message stored when the read
began, and is deleted afterwards; the service's own durable consumer is never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

# Messages asked for per fetch.
FETCH_BATCH = 500
# How long one fetch waits; the read ends at the last message stored when it began, so this
# only bounds a wait for messages the server is still sending.
FETCH_TIMEOUT_S = 2.0
# The server deletes the consumer this long after the reader last asked, if the reader died.
INACTIVE_THRESHOLD_S = 60.0


@dataclass(frozen=True)
class StoredMessage:
    """One message as the stream stored it."""

    sequence: int
    time: datetime  # when JetStream stored it
    subject: str
    data: bytes


async def read_history(
    js: JetStreamContext,
    stream: str,
    subject: str,
    *,
    start: datetime | None = None,
    batch: int = FETCH_BATCH,
) -> AsyncIterator[StoredMessage]:
    """Yield the stream's messages on `subject` (a filter) stored at or after `start`, in
    stream order, up to the last message stored when the read began. A missing stream reads
    as empty."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return
    last = info.state.last_seq
    if info.state.messages == 0:
        return
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.ALL if start is None else DeliverPolicy.BY_START_TIME,
        opt_start_time=start,
        filter_subject=subject,
        inactive_threshold=INACTIVE_THRESHOLD_S,
    )
    subscription = await js.pull_subscribe(subject, stream=stream, config=config)
    try:
        while True:
            try:
                messages = await subscription.fetch(batch, timeout=FETCH_TIMEOUT_S)
            except (TimeoutError, NatsTimeoutError):
                return  # nothing (more) on this subject
            for message in messages:
                metadata = message.metadata
                sequence = metadata.sequence.stream
                if sequence > last:
                    return
                yield StoredMessage(sequence, metadata.timestamp, message.subject, message.data)
                if sequence == last or metadata.num_pending == 0:
                    return
    finally:
        with contextlib.suppress(Exception):  # the connection may be closing already
            await subscription.unsubscribe()
        # pull_subscribe named the ephemeral consumer in `config`
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, config.name)  # type: ignore[arg-type]
