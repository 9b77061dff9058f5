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
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE, KeyValue

from svc.bus.streams import KV_STREAM
from svc.config import Settings
from svc.domain.automations import Automation, parse_automation_json
from svc.domain.errors import InvalidAutomation

logger = logging.getLogger(__name__)

# How nats.py names the subject of a KV key (nats.js.kv: `$KV.<bucket>.<key>`).
KV_PRE = "$KV.{bucket}."
# Writes of put_many awaiting their acknowledgement at once.
PUT_MANY_WINDOW = 1_000
# A watch re-creates its consumer as soon as the connection is back from a reconnect (after a
# NATS restart its server-side consumer is gone, and nats.py's ordered consumer would notice
# only after two missed 5 s idle heartbeats). While no entry arrives, it looks this often.
RECONNECT_CHECK_S = 0.1
# Pauses between failed attempts to re-create a watch's consumer: doubling, capped.
RESUME_RETRY_INITIAL_S = 0.1
RESUME_RETRY_MAX_S = 2.0
# Entries a watch holds before its consumer waits (as nats.py's KV watcher).
WATCH_QUEUE = 256
# The server removes a watch's consumer this long after its subscriber went away (as nats.py's
# KV watcher).
WATCH_INACTIVE_S = 300.0


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

        The watch outlives reconnects: once the connection is back it re-creates its
        consumer, resuming after the last revision it handed out, so no change is lost and
        none is given twice (see `_resume`).
        """
        return self._changes(until_current=False)

    async def _changes(self, until_current: bool) -> AsyncIterator[AutomationChange | None]:
        kv = await self.bucket()
        # The end of the initial values (nats.py's KV watch marks it with a None that can come
        # before the values themselves, which is why it is found here): every initial value
        # has a revision up to the bucket's last sequence taken before the watch starts; the
        # watch delivers in sequence order, and a value superseded meanwhile comes back with
        # a later revision.
        state = (await kv.status()).stream_info.state
        initial_until = state.last_seq if state.messages else 0
        # nats.py's JetStreamContext keeps its connection here, with no public accessor; its
        # `stats["reconnects"]` grows once per reconnect, before the client is connected again.
        connection = self.js._nc
        reconnects = connection.stats["reconnects"]
        follower = _Follower(self.js, self.settings.automations_bucket)
        await follower.start(after=None)
        last = 0  # the revision of the last entry handled (handed out or skipped)
        try:
            initial = initial_until > 0
            if not initial:
                if until_current:
                    return
                yield None
            while True:
                if connection.stats["reconnects"] != reconnects and connection.is_connected:
                    reconnects, follower = await self._resume(follower, initial, last)
                    continue
                entry = await follower.next(RECONNECT_CHECK_S)
                if entry is None:
                    continue
                revision = entry.revision or 0
                if revision <= last:  # handled before a resumption
                    continue
                last = revision
                change = _change(entry)
                if change is not None and not (initial and change.kind == "delete"):
                    yield change  # a deleted key is not an initial value
                if initial and revision >= initial_until:
                    initial = False
                    if until_current:
                        return
                    yield None
        finally:
            await follower.stop()

    async def _resume(
        self, old: _Follower, initial: bool, last: int
    ) -> tuple[int, _Follower]:
        """A new consumer for a watch after a reconnect, retried until the server answers;
        returns it with the reconnect count it was created under.

        After the initial values, it delivers every entry after revision `last`: exactly the
        changes not handled yet (the bucket keeps one revision per key, so a key changed
        twice meanwhile comes once, with its latest value). During the initial values it
        delivers each key's latest entry again, as the first consumer did, and the watch
        skips those up to `last`: a key handed out before has no later revision up to the
        initial values' end (its first delivery was its latest), so what is skipped was
        handed out, and what is left is handed out as the first consumer would have. Entries
        the old consumer had queued but the watch had not handled come again."""
        await old.stop()
        connection = self.js._nc
        pause_s = RESUME_RETRY_INITIAL_S
        while True:
            reconnects = connection.stats["reconnects"]
            follower = _Follower(self.js, self.settings.automations_bucket)
            try:
                await follower.start(after=None if initial else last)
            except (TimeoutError, NatsError, OSError) as exc:
                await follower.stop()
                logger.warning(
                    "could not resume watching the automations bucket after revision %d "
                    "(%r); retrying in %.1f s", last, exc, pause_s,
                )
            except BaseException:  # the watch closed meanwhile
                await follower.stop()
                raise
            else:
                logger.info(
                    "watching the automations bucket again after a reconnect, from revision %d",
                    last + 1,
                )
                return reconnects, follower
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, RESUME_RETRY_MAX_S)


class _Follower:
    """One ordered push consumer on the bucket's keys, as nats.py's KV watch makes, but able to
    start after a given revision (nats.py's watch cannot); its entries queued in order."""

    def __init__(self, js: JetStreamContext, bucket: str):
        self.js = js
        self.bucket = bucket
        self.entries: asyncio.Queue[KeyValue.Entry] = asyncio.Queue(maxsize=WATCH_QUEUE)
        self._subscription: JetStreamContext.PushSubscription | None = None

    async def start(self, after: int | None) -> None:
        """after None: each key's latest entry, then every new one (nats.py's watch);
        after N: every entry from revision N + 1 on."""
        if after is None:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
        else:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
            )
        prefix = KV_PRE.format(bucket=self.bucket)

        async def queue(msg: Msg) -> None:
            entry = _entry(self.bucket, prefix, msg)
            if entry is not None:
                await self.entries.put(entry)  # waits while full: the consumer slows down

        self._subscription = await self.js.subscribe(
            f"{prefix}>",
            stream=KV_STREAM.format(bucket=self.bucket),
            cb=queue,
            config=config,
            ordered_consumer=True,
            inactive_threshold=WATCH_INACTIVE_S,
        )

    async def next(self, timeout_s: float) -> KeyValue.Entry | None:
        """The next entry, or None if none arrives within timeout_s."""
        with contextlib.suppress(asyncio.QueueEmpty):
            return self.entries.get_nowait()
        try:
            return await asyncio.wait_for(self.entries.get(), timeout_s)
        except TimeoutError:
            return None

    async def stop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            # The connection may already be closing; the ephemeral consumer then goes away
            # by itself after its inactive threshold (as it does when the server lost it).
            with contextlib.suppress(NatsError):
                await subscription.unsubscribe()


def _entry(bucket: str, prefix: str, msg: Msg) -> KeyValue.Entry | None:
    """A message of the bucket's stream as the KV entry nats.py's watch would make of it;
    None for a marker nats.py's watch skips too."""
    headers = msg.headers or {}
    operation = headers.get(KV_OP)
    if operation is None and KV_MARKER_REASON in headers:
        # nats-server 2.11+ marks a key removed by TTL or age with a reason, not an operation
        reason = headers[KV_MARKER_REASON]
        if reason in ("MaxAge", "Purge"):
            operation = KV_PURGE
        elif reason == "Remove":
            operation = KV_DEL
        else:
            return None
    metadata = msg.metadata
    return KeyValue.Entry(
        bucket=bucket,
        key=msg.subject[len(prefix):],
        value=msg.data,
        revision=metadata.sequence.stream,
        delta=metadata.num_pending,
        created=metadata.timestamp,  # type: ignore[arg-type]
        operation=operation,
    )


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
