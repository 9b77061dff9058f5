"""The automations watch after a NATS restart (nats-server killed and started again on the same
port with the same JetStream store): it resumes as soon as the connection is back, from the
revision after the last one it handed out, instead of waiting for nats.py's ordered consumer
to notice its lost server-side consumer (two missed 5 s idle heartbeats, about 15 s). Nothing
made meanwhile is lost, nothing is handed out twice."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from svc.bus.automations import AutomationChange, AutomationStore
from svc.bus.streams import ensure_streams
from svc.config import Settings
from svc.domain.automations import Automation, parse_automation
from svc.embedded import NatsServer, RedisServer
from svc.service import Service
from tests.helpers import JS_API_TIMEOUT_S, eventually
from tests.reliability.support import quick_recovery_settings, started_replica
from tests.service.support import (
    reactive_automation,
    service_settings,
)

logger = logging.getLogger(__name__)

# Well under the ~15 s nats.py's heartbeats alone take, with a margin for a loaded machine.
RESUME_TIMEOUT_S = 5.0


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(data_dir=tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    async def quiet(exc: Exception) -> None:
        """This client sees the restarts too; they are expected here."""

    connection = await nats.connect(
        nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=quiet
    )
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream(timeout=JS_API_TIMEOUT_S)


@pytest.fixture
def settings(nats_server: NatsServer, key_prefix: str) -> Settings:
    # no Redis in the store tests: the URL is never used there
    return service_settings(nats_server.url, "redis://127.0.0.1:1", key_prefix)


@pytest.fixture
async def store(js: JetStreamContext, settings: Settings) -> AutomationStore:
    await ensure_streams(js, settings)
    return AutomationStore(js, settings)


def automation(event: str = "watch.ping") -> Automation:
    return parse_automation(reactive_automation(event))


async def restart(server: NatsServer, nc: NATS) -> float:
    """Kill the server, start it again, and wait until `nc` is connected to it again;
    returns when (time.monotonic()) the server answered again."""
    reconnects = nc.stats["reconnects"]
    server.halt(signal.SIGKILL)
    server.resume()  # returns once JetStream answers
    back = time.monotonic()
    await eventually(
        lambda: nc.is_connected and nc.stats["reconnects"] > reconnects,
        "the client to reconnect",
        timeout_s=RESUME_TIMEOUT_S,
    )
    return back


async def changes_within(
    changes: AsyncIterator[AutomationChange | None], count: int
) -> list[AutomationChange | None]:
    """The next `count` changes, all within RESUME_TIMEOUT_S."""

    async def take() -> list[AutomationChange | None]:
        return [await anext(changes) for _ in range(count)]

    return await asyncio.wait_for(take(), RESUME_TIMEOUT_S)


def described(changes: list[AutomationChange | None]) -> list[tuple[str, object] | None]:
    return [None if c is None else (c.kind, c.automation_id) for c in changes]


async def test_the_watch_resumes_after_a_restart_with_every_change_made_meanwhile_once(
    nats_server: NatsServer, nc: NATS, store: AutomationStore
) -> None:
    kept, deleted = automation(), automation()
    await store.put(kept)
    await store.put(deleted)
    changes = store.watch()
    try:
        initial = await changes_within(changes, 3)
        assert {c.automation_id for c in initial[:2] if c is not None} == {kept.id, deleted.id}
        assert initial[2] is None

        await restart(nats_server, nc)
        # made before the watch is asked for more, so before it can have resumed: a watch
        # that started over from "new changes only" would miss them
        added, replaced = automation(), kept.model_copy(update={"name": "replaced"})
        await store.put(added)
        await store.delete(deleted.id)
        await store.put(replaced)
        started = time.monotonic()
        after = await changes_within(changes, 3)
        logger.info("the watch resumed in %.2f s", time.monotonic() - started)
        assert described(after) == [
            ("put", added.id), ("delete", deleted.id), ("put", replaced.id)
        ]
        assert after[2] is not None and after[2].automation == replaced

        # nothing comes twice: the next change is the next one made
        last = automation()
        await store.put(last)
        assert described(await changes_within(changes, 1)) == [("put", last.id)]
    finally:
        await changes.aclose()


async def test_a_restart_during_the_initial_values_gives_each_current_automation_once(
    nats_server: NatsServer, nc: NATS, store: AutomationStore
) -> None:
    first, updated, removed_before, removed_after = (automation() for _ in range(4))
    for each in (first, updated, removed_before, removed_after):
        await store.put(each)
    updated = updated.model_copy(update={"name": "updated"})
    await store.put(updated)  # its revision is now after the others'
    await store.delete(removed_before.id)  # the last initial revision: a delete
    changes = store.watch()
    try:
        assert described(await changes_within(changes, 1)) == [("put", first.id)]

        await restart(nats_server, nc)
        await store.delete(removed_after.id)  # an initial value not handed out yet
        added = automation()
        await store.put(added)
        rest = await changes_within(changes, 4)
        # `removed_after` is no initial value any more: it comes as the delete it now is
        assert described(rest) == [
            ("put", updated.id), None, ("delete", removed_after.id), ("put", added.id)
        ]
        assert rest[0] is not None and rest[0].automation == updated
    finally:
        await changes.aclose()


@pytest.fixture
async def service(
    nats_server: NatsServer, tmp_path: Path, key_prefix: str
) -> AsyncIterator[Service]:
    with RedisServer(data_dir=tmp_path / "redis") as redis_server:
        settings = quick_recovery_settings(nats_server.url, redis_server.url, key_prefix)
        async with started_replica(settings) as replica:
            yield replica


async def test_a_replica_applies_changes_made_right_after_a_nats_restart_promptly(
    nats_server: NatsServer, nc: NATS, js: JetStreamContext, service: Service
) -> None:
    engine = service.engine
    assert engine is not None
    store = AutomationStore(js, service.settings)
    before = automation("watch.before")
    await store.put(before)
    await eventually(lambda: before.id in engine.automations, "the first automation to load")

    back = await restart(nats_server, nc)
    later = automation("watch.later")
    await store.put(later)
    await store.delete(before.id)
    stored = time.monotonic()
    await eventually(
        lambda: later.id in engine.automations and before.id not in engine.automations,
        "the put and the delete made after the restart to be applied",
        timeout_s=RESUME_TIMEOUT_S,
    )
    applied = time.monotonic()
    logger.info(
        "changes applied %.2f s after they were stored, %.2f s after NATS was back",
        applied - stored, applied - back,
    )
