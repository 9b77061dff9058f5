"""Pulling from a durable JetStream consumer with the next batch always on its way.

nats.py's `PullSubscription.fetch` asks for one batch at a time, after the previous one was
handled, and takes each message through a task of its own (`next_msg`), which at tens of
thousands of events a second is most of what fetching costs (docs/performance.md). `PullSource`
speaks JetStream's pull protocol itself, on core NATS: one pull request is kept outstanding
on its own inbox, messages land in a buffer through a subscription callback, and `fetch`
hands over what is buffered, up to a batch, waiting only when nothing is. The next request
goes out as a batch is handed over, so it arrives while that batch is handled.

The protocol (https://docs.nats.io/reference/reference-protocols/nats_api_reference, "Fetching
from a consumer"): a request `{"batch": n, "expires": ns}` to
`<api prefix>.CONSUMER.MSG.NEXT.<stream>.<consumer>` with our inbox as reply subject; the
server sends up to `n` messages there, then ends the request early with a status message
when it expires (408), has nothing and was told not to wait (404), or hits a limit (409);
100 is an idle heartbeat.

At most two batches are held: the one handed over and the one requested. On a graceful stop
`drain` stops asking and waits for the outstanding request to end (as long as a fetch would
wait), and returns what was fetched ahead, for the caller to handle and ack; anything still
held when the source is unsubscribed (a cancelled consumer) is nak'd, so another replica gets
it at once rather than after the ack wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from collections.abc import Sequence

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import (
    ConnectionClosedError,
    ConnectionDrainingError,
    NotJSMessageError,
    OutboundBufferLimitError,
)
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DEFAULT_PREFIX, Header, StatusCode
from nats.js.errors import APIError

# A request the server neither fed nor ended this long after it expired was lost (a
# reconnect drops the server's side of it): ask again.
LOST_REQUEST_MARGIN_S = 1.0
# Status codes that end a pull request without an error (nats.py's fetch skips them too).
_ENDED = frozenset({StatusCode.NO_MESSAGES, StatusCode.REQUEST_TIMEOUT, StatusCode.CONFLICT})


# Characters a subject never holds: a reply subject with one would break the protocol line.
_NOT_IN_A_SUBJECT = re.compile(r"\s")


async def ack_all(nc: NATS, messages: Sequence[Msg]) -> None:
    """Acknowledge JetStream messages with one write: what `Msg.ack()` sends for each (an
    empty publish on its reply subject), the lines put together and flushed once.

    nats.py's ack goes through a whole publish per message (subject checks, a command of its
    own, and a flush request with a future of its own): 2.2-2.6 us of CPU per message,
    against 0.5-0.65 us this way (docs/performance.md). Like a publish, it raises if the connection
    is closed or draining, or, while it reconnects, if its buffer cannot take them; nothing
    is acked then. It uses the client's private send path (`_send_command`,
    `_flush_pending`, as `publish` itself does), pinned with nats-py; tests/bus cover it."""
    if not messages:
        return
    lines = []
    for message in messages:
        reply = message.reply
        if not reply or _NOT_IN_A_SUBJECT.search(reply):
            raise NotJSMessageError  # as Msg.ack(): nothing to acknowledge it on
        lines.append(f"PUB {reply} 0\r\n\r\n")
    command = "".join(lines).encode()
    if nc.is_closed:
        raise ConnectionClosedError
    if nc.is_draining_pubs:
        raise ConnectionDrainingError
    if not nc.is_connected and (
        nc._max_pending_size <= 0 or len(command) + nc._pending_data_size > nc._max_pending_size
    ):
        raise OutboundBufferLimitError
    await nc._send_command(command)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()
    for message in messages:
        message._ackd = True  # as Msg.ack() leaves it: a second ack or a nak is refused


class PullSource:
    """Batches of messages from one durable pull consumer (see the module docstring)."""

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        *,
        expires_s: float,
        api_prefix: str = DEFAULT_PREFIX,
    ):
        self.nc = nc
        self.expires_s = expires_s
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._subscription: Subscription | None = None
        self._buffer: collections.deque[Msg] = collections.deque()
        self._owed = 0  # messages the outstanding request may still deliver; 0: none out
        self._request_deadline = 0.0
        self._arrived = asyncio.Event()
        self._error: Exception | None = None
        self._draining = False

    @classmethod
    async def bind(
        cls, js: JetStreamContext, stream: str, consumer: str, *, expires_s: float
    ) -> PullSource:
        """A started source on `js`'s connection and API prefix (which nats.py keeps in
        private attributes: read here, and only here)."""
        source = cls(js._nc, stream, consumer, expires_s=expires_s, api_prefix=js._prefix)
        return await source.start()

    async def start(self) -> PullSource:
        self._inbox = self.nc.new_inbox()
        self._subscription = await self.nc.subscribe(self._inbox, cb=self._receive)
        return self

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to `batch` messages, in stream order; [] when none came within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self._buffer:
            self._raise_error()
            self._arrived.clear()  # before the request: what arrives from now on wakes us
            await self._request(batch)
            remaining = deadline - time.monotonic()
            if self._buffer or remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        if not self._buffer:
            return []
        messages = [self._buffer.popleft() for _ in range(min(batch, len(self._buffer)))]
        # the next batch is requested now, to arrive while this one is handled
        await self._request(batch)
        return messages

    def take_ready(self, batch: int) -> list[Msg]:
        """A whole batch if one is buffered already (or all that is buffered when no request
        is out), without waiting; [] otherwise. The caller asks for more with `top_up`."""
        if len(self._buffer) < batch and (self._owed or not self._buffer):
            return []
        return [self._buffer.popleft() for _ in range(min(batch, len(self._buffer)))]

    async def top_up(self, batch: int) -> None:
        """Ask for the next batch, unless one is on its way or buffered (as `fetch` does)."""
        await self._request(batch)

    def give_back(self, messages: list[Msg]) -> None:
        """Messages taken but not handled go back to the front of the buffer, in order."""
        self._buffer.extendleft(reversed(messages))

    async def drain(self, timeout: float) -> list[Msg]:
        """Stop asking for more, wait (up to `timeout`) for the outstanding request to end,
        and hand over everything fetched ahead."""
        self._draining = True
        deadline = min(time.monotonic() + timeout, self._request_deadline)
        while self._owed and (remaining := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        messages = list(self._buffer)
        self._buffer.clear()
        return messages

    async def unsubscribe(self) -> None:
        """Stop receiving; what was fetched ahead and not handed over is nak'd."""
        if self._subscription is not None:
            with contextlib.suppress(NatsError):
                await self._subscription.unsubscribe()
            self._subscription = None
        while self._buffer:
            with contextlib.suppress(NatsError):
                await self._buffer.popleft().nak()

    async def _request(self, batch: int) -> None:
        """Ask for `batch` more messages, unless a request is still out, a batch is held or
        the source is draining."""
        if self._draining or (self._owed and time.monotonic() < self._request_deadline):
            return
        if len(self._buffer) >= batch:
            return
        expires_ns = int(self.expires_s * 1e9)
        request = orjson.dumps({"batch": batch, "expires": expires_ns})
        self._owed = batch
        self._request_deadline = time.monotonic() + self.expires_s + LOST_REQUEST_MARGIN_S
        await self.nc.publish(self._next_subject, request, reply=self._inbox)

    async def _receive(self, msg: Msg) -> None:
        status = msg.headers.get(Header.STATUS) if msg.headers else None
        if status is None:
            self._buffer.append(msg)
            self._owed = max(self._owed - 1, 0)
        elif status == StatusCode.CONTROL_MESSAGE:
            return  # an idle heartbeat
        elif status in _ENDED:
            self._owed = 0
        else:
            description = msg.headers.get(Header.DESCRIPTION, "") if msg.headers else ""
            self._error = APIError(code=int(status), description=description)
            self._owed = 0
        self._arrived.set()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
