"""Publishes what act() decided: state-change events back onto the events subjects, and each
triggered action to `<actions prefix>.<action type>.<automation id>` (DESIGN, "Wire formats").

Every message carries its id as `Nats-Msg-Id`, so a re-publish after a crash (the outbox
drained again, or a redelivered event) is dropped by the stream's duplicate window, and the
current trace context, so a triggered action's span continues the event's trace.

A JetStream publish is a request: the stream answers on the reply subject once the message
is stored. nats.py's `JetStreamContext.publish` makes each one a request of its own (a random
token from the OS, a timer and a task to wait on), which at a firing for one event in ten was
a tenth of the service's time (docs/performance.md). `AckInbox` publishes a firing's messages
with reply subjects of its own, on one subscription, and waits for all their answers under one
timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Sequence
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError
from opentelemetry import propagate

from svc.config import Settings
from svc.domain import jsonio
from svc.domain.automations import Automation
from svc.domain.firings import Act

MSG_ID = "Nats-Msg-Id"
# How long a firing's messages may wait for JetStream's acknowledgements (nats.py's default
# for a JetStream publish).
ACK_TIMEOUT_S = 5.0
EXPECTED_STREAM = "Nats-Expected-Stream"
STATUS = "Status"  # of a status message, as nats.py reads it from the headers
NO_RESPONDERS = "503"  # nothing listens on the subject: no stream captured it
# One subject token: no whitespace, no wildcards, not empty (the dots separate tokens).
_TOKEN = re.compile(r"[^\s.*>]+")


class PublishError(RuntimeError):
    """One or more messages of a firing were not acknowledged by JetStream."""


class AckInbox:
    """Publishes messages to JetStream and waits for the stream's acknowledgements, each
    message with a reply subject of its own under one inbox (one subscription for them all).

    The subscription is made on first use and lives as long as the connection (nats.py
    subscribes it again after a reconnect); an acknowledgement that comes after its publish
    gave up is dropped."""

    def __init__(self, nc: NATS):
        self.nc = nc
        self._prefix = ""
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._subscription: Subscription | None = None
        self._starting: asyncio.Lock | None = None

    async def publish(
        self, messages: Sequence[tuple[str, bytes, dict[str, str]]], timeout: float
    ) -> list[Exception | None]:
        """Publish (subject, body, headers) messages, in order, and wait up to `timeout` for
        every acknowledgement; one outcome per message: None once stored, else the error."""
        if self._subscription is None:
            await self._start()
        loop = asyncio.get_running_loop()
        waits: list[tuple[str, asyncio.Future[Msg]]] = []
        outcomes: list[Exception | None] = [None] * len(messages)
        try:
            for position, (subject, body, headers) in enumerate(messages):
                token = str(next(self._tokens))
                future: asyncio.Future[Msg] = loop.create_future()
                self._waiting[token] = future
                waits.append((token, future))
                try:
                    await self.nc.publish(
                        subject, body, reply=self._prefix + token, headers=headers
                    )
                except Exception as exc:  # the connection refused it (closed, too big...)
                    future.cancel()
                    outcomes[position] = exc
            pending = [future for _, future in waits if not future.done()]
            if pending:
                await asyncio.wait(pending, timeout=timeout)
        finally:
            for token, future in waits:
                self._waiting.pop(token, None)
                future.cancel()  # no-op once answered
        for position, (_, future) in enumerate(waits):
            if outcomes[position] is None:
                outcomes[position] = _outcome(future, timeout)
        return outcomes

    async def _start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._subscription is None:
                prefix = self.nc.new_inbox() + "."
                self._subscription = await self.nc.subscribe(prefix + "*", cb=self._receive)
                self._prefix = prefix

    async def _receive(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)


def _outcome(future: asyncio.Future[Msg], timeout: float) -> Exception | None:
    """What an acknowledgement says: None when the message is stored."""
    if future.cancelled():
        return TimeoutError(f"no acknowledgement within {timeout:g} s")
    msg = future.result()
    status = msg.headers.get(STATUS) if msg.headers else None
    if status == NO_RESPONDERS:
        return NoStreamResponseError()
    try:
        answer = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return APIError(description=f"not an acknowledgement: {msg.data[:200]!r}")
    if not isinstance(answer, dict):
        return APIError(description=f"not an acknowledgement: {msg.data[:200]!r}")
    if "error" in answer:
        try:
            APIError.from_error(answer["error"])  # raises the error's own class
        except APIError as refused:
            return refused
        return APIError(description=str(answer["error"]))
    return None


class JetStreamPublisher:
    """The engine's Publisher on JetStream: returns only once every message is acknowledged."""

    def __init__(
        self, js: JetStreamContext, settings: Settings, *, ack_timeout_s: float = ACK_TIMEOUT_S
    ):
        self.js = js
        self.settings = settings
        self.ack_timeout_s = ack_timeout_s
        # nats.py keeps the context's connection in a private attribute
        self._acks = AckInbox(js._nc) if js is not None else None

    def event_subject(self, event: dict[str, Any]) -> str:
        return _subject(self.settings.events_subject_prefix, *str(event["event"]).split("."))

    def action_subject(self, triggered_action: dict[str, Any]) -> str:
        return _subject(
            self.settings.actions_subject_prefix,
            str(triggered_action["action"]["type"]),
            str(triggered_action["automation"]["id"]),
        )

    async def publish(self, automation: Automation, out: Act) -> None:
        """Publish every event and triggered action of `out`, all at once, and wait for all
        the acknowledgements. Raises PublishError if any is missing, so the caller does not
        ack the event that caused them; what did land is deduplicated when it is retried.

        Order across subjects is not kept: the messages go to different streams, and their
        consumers must not rely on it (a triggered action names its triggering event's id).
        """
        assert self._acks is not None, "a publisher made without a JetStream context"
        s = self.settings
        documents = [(self.event_subject(e), e, s.events_stream) for e in out.events]
        documents += [(self.action_subject(a), a, s.actions_stream) for a in out.actions]
        messages = []
        for subject, document, stream in documents:
            # `stream` makes JetStream refuse the message if another stream captured the
            # subject
            headers = {MSG_ID: str(document["id"]), EXPECTED_STREAM: stream}
            propagate.inject(headers)
            # an event's payload may hold integers orjson cannot write (svc/domain/jsonio.py)
            messages.append((subject, jsonio.dumps(document), headers))
        outcomes = await self._acks.publish(messages, self.ack_timeout_s)
        failed = [
            (subject, outcome)
            for (subject, _, _), outcome in zip(documents, outcomes, strict=True)
            if outcome is not None
        ]
        if failed:
            _raise_failed(automation, failed, len(messages))


def _subject(prefix: str, *tokens: str) -> str:
    for token in tokens:
        if not _TOKEN.fullmatch(token):
            raise ValueError(
                f"cannot publish on {prefix}.{'.'.join(tokens)}: token {token!r} is empty or "
                "holds whitespace or a wildcard"
            )
    return ".".join((prefix, *tokens))


def _raise_failed(
    automation: Automation, failed: Sequence[tuple[str, BaseException]], total: int
) -> None:
    for _, error in failed:
        if not isinstance(error, Exception):  # cancellation and the like pass through
            raise error
    subject, first = failed[0]
    raise PublishError(
        f"{len(failed)} of {total} messages for automation {automation.id} were not "
        f"acknowledged (first: {subject}: {type(first).__name__}: {first}); the event stays "
        "unacked and is retried"
    ) from first
