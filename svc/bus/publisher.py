"""Publishes what act() decided: state-change events back onto the events subjects, and each
triggered action to `<actions prefix>.<action type>.<automation id>` (DESIGN, "Wire formats").

Every message carries its id as `Nats-Msg-Id`, so a re-publish after a crash (the outbox
drained again, or a redelivered event) is dropped by the stream's duplicate window, and the
current trace context, so a triggered action's span continues the event's trace.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import orjson
from nats.js import JetStreamContext
from opentelemetry import propagate

from svc.config import Settings
from svc.domain.automations import Automation
from svc.domain.firings import Act

MSG_ID = "Nats-Msg-Id"
# One subject token: no whitespace, no wildcards, not empty (the dots separate tokens).
_TOKEN = re.compile(r"[^\s.*>]+")


class PublishError(RuntimeError):
    """One or more messages of a firing were not acknowledged by JetStream."""


class JetStreamPublisher:
    """The engine's Publisher on JetStream: returns only once every message is acknowledged."""

    def __init__(self, js: JetStreamContext, settings: Settings):
        self.js = js
        self.settings = settings

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
        s = self.settings
        messages = [(self.event_subject(e), e, s.events_stream) for e in out.events]
        messages += [(self.action_subject(a), a, s.actions_stream) for a in out.actions]
        results = await asyncio.gather(
            *(self._publish(subject, document, stream) for subject, document, stream in messages),
            return_exceptions=True,
        )
        failed = [
            (subject, result)
            for (subject, _, _), result in zip(messages, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if failed:
            _raise_failed(automation, failed, len(messages))

    async def _publish(self, subject: str, document: dict[str, Any], stream: str) -> None:
        headers = {MSG_ID: str(document["id"])}
        propagate.inject(headers)
        # `stream` makes JetStream refuse the message if another stream captured the subject.
        await self.js.publish(subject, orjson.dumps(document), headers=headers, stream=stream)


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
        f"acknowledged (first: {subject}: {first!r}); the event stays unacked and is retried"
    ) from first
