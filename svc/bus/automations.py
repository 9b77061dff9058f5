"""The automations' home: a JetStream KV bucket, one key per automation id, holding its JSON
document. The admin API writes it; every replica watches it to load and forget automations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

import orjson
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from svc.config import Settings
from svc.domain.automations import Automation, parse_automation_json
from svc.domain.errors import InvalidAutomation

logger = logging.getLogger(__name__)

# How nats.py names the subject of a KV key (nats.js.kv: `$KV.<bucket>.<key>`).
KV_PRE = "$KV.{bucket}."
# Writes of put_many awaiting their acknowledgement at once.
PUT_MANY_WINDOW = 1_000


@dataclass(frozen=True)
class AutomationChange:
    """One entry of the bucket, as the watcher sees it: stored (`put`) or removed (`delete`)."""

    kind: Literal["put", "delete"]
    automation_id: UUID
    automation: Automation | None  # None for a delete
    revision: int = 0  # the KV revision (stream sequence) of this change


class AutomationStore:
    """Reads, writes and watches the automations bucket (created by ensure_streams)."""

    def __init__(self, js: JetStreamContext, settings: Settings):
        self.js = js
        self.settings = settings
        self._kv: KeyValue | None = None

    async def bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.js.key_value(self.settings.automations_bucket)
        return self._kv

    async def put(self, automation: Automation) -> int:
        """Store (create or replace) an automation; returns its new revision."""
        kv = await self.bucket()
        return await kv.put(str(automation.id), orjson.dumps(automation.to_json()))

    async def put_many(
        self,
        automations: Iterable[Automation],
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Store many automations with up to PUT_MANY_WINDOW writes in flight (a bulk load:
        one `put` waits for each acknowledgement in turn); returns how many were stored.

        Every replica's watcher loads them as it does any put."""
        await self.bucket()  # looked up once, so a missing bucket fails here, not per write
        subject = KV_PRE.format(bucket=self.settings.automations_bucket)
        stored = 0
        pending: list[asyncio.Future[object]] = []
        for automation in automations:
            body = orjson.dumps(automation.to_json())
            pending.append(await self.js.publish_async(f"{subject}{automation.id}", body))
            if len(pending) >= PUT_MANY_WINDOW:
                stored += await _settled(pending, on_progress)
                pending = []
        stored += await _settled(pending, on_progress)
        return stored

    async def get(self, automation_id: UUID) -> Automation | None:
        """The stored automation, or None if there is none (or it no longer parses: logged)."""
        kv = await self.bucket()
        try:
            entry = await kv.get(str(automation_id))
        except KeyNotFoundError:  # also raised for a deleted key
            return None
        return _parse(entry.key, entry.value)

    async def delete(self, automation_id: UUID) -> bool:
        """Delete an automation; True if it was stored."""
        kv = await self.bucket()
        try:
            await kv.get(str(automation_id))
        except KeyNotFoundError:
            return False
        await kv.delete(str(automation_id))
        return True

    async def list(self) -> list[Automation]:
        """Every stored automation that parses, in no particular order."""
        automations = []
        async for change in self._changes(until_current=True):
            if change is not None and change.automation is not None:
                automations.append(change.automation)
        return automations

    def watch(self) -> AsyncIterator[AutomationChange | None]:
        """Every stored automation (as `put`), then None once, then every change as it happens.

        The None marks the end of the initial values: a replica that has applied everything
        before it has loaded all stored automations. Deleted keys are not initial values.
        A stored document that no longer parses is logged and skipped. To stop watching,
        close the iterator (`aclose()`, e.g. through `contextlib.aclosing`).
        """
        return self._changes(until_current=False)

    async def _changes(self, until_current: bool) -> AsyncIterator[AutomationChange | None]:
        kv = await self.bucket()
        # nats.py marks the end of the initial values with None, but can send that marker
        # before the values themselves (when they reach the client after its consumer-info
        # check). So the end is found here instead: every initial value has a revision up to
        # the bucket's last sequence taken before the watch starts; the watch delivers in
        # sequence order, and a value superseded meanwhile comes back with a later revision.
        state = (await kv.status()).stream_info.state
        initial_until = state.last_seq if state.messages else 0
        watcher = await kv.watchall()
        try:
            initial = initial_until > 0
            if not initial:
                if until_current:
                    return
                yield None
            async for entry in watcher:
                if entry is None:  # nats.py's marker, see above
                    continue
                change = _change(entry)
                if change is not None and not (initial and change.kind == "delete"):
                    yield change  # a deleted key is not an initial value
                if initial and (entry.revision or 0) >= initial_until:
                    initial = False
                    if until_current:
                        return
                    yield None
        finally:
            # The connection may already be closing; the ephemeral consumer then goes away
            # by itself after its inactive threshold.
            with contextlib.suppress(NatsError):
                await watcher.stop()


async def _settled(
    pending: list[asyncio.Future[object]], on_progress: Callable[[int], None] | None
) -> int:
    """Wait for every acknowledgement (raising the first failure); returns how many."""
    await asyncio.gather(*pending)
    if on_progress is not None:
        on_progress(len(pending))
    return len(pending)


def _change(entry: KeyValue.Entry) -> AutomationChange | None:
    try:
        automation_id = UUID(entry.key)
    except ValueError:
        logger.warning(
            "skipping key %r of the automations bucket: it is not an automation id", entry.key
        )
        return None
    revision = entry.revision or 0
    if entry.operation in (KV_DEL, KV_PURGE):
        return AutomationChange("delete", automation_id, None, revision)
    automation = _parse(entry.key, entry.value)
    if automation is None:
        return None
    return AutomationChange("put", automation_id, automation, revision)


def _parse(key: str, value: bytes | None) -> Automation | None:
    try:
        automation = parse_automation_json(value or b"")
    except (InvalidAutomation, ValueError, TypeError) as exc:
        logger.error("skipping stored automation %s: it no longer parses: %s", key, exc)
        return None
    if str(automation.id) != key:
        logger.error(
            "skipping stored automation under key %s: its document says id %s", key, automation.id
        )
        return None
    return automation
