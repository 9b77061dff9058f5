"""The automations KV store: put/get/list/delete, and a watch that gives the stored
automations first, then marks the end of them, then follows every change."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from nats.js import JetStreamContext

from svc.bus.automations import AutomationChange, AutomationStore
from svc.bus.streams import ensure_streams
from svc.config import Settings
from svc.domain.automations import Automation
from tests.bus.support import automation_document

NEXT_CHANGE_TIMEOUT_S = 10.0


@pytest.fixture
async def store(js: JetStreamContext, bus_settings: Settings) -> AutomationStore:
    await ensure_streams(js, bus_settings)
    return AutomationStore(js, bus_settings)


async def next_change(changes: AsyncIterator[AutomationChange | None]) -> AutomationChange | None:
    return await asyncio.wait_for(anext(changes), timeout=NEXT_CHANGE_TIMEOUT_S)


async def test_put_get_list_and_delete(
    store: AutomationStore, make_automation: Callable[..., Automation]
) -> None:
    first, second = make_automation(name="first"), make_automation(name="second")
    revision = await store.put(first)
    assert await store.put(second) > revision > 0

    assert await store.get(first.id) == first
    assert await store.get(uuid.uuid4()) is None
    assert sorted(a.name for a in await store.list()) == ["first", "second"]

    assert await store.delete(first.id) is True
    assert await store.delete(first.id) is False
    assert await store.delete(uuid.uuid4()) is False
    assert await store.get(first.id) is None
    assert await store.list() == [second]


async def test_a_put_replaces_the_stored_automation(
    store: AutomationStore, make_automation: Callable[..., Automation]
) -> None:
    automation = make_automation(name="before")
    await store.put(automation)
    renamed = automation.model_copy(update={"name": "after"})
    await store.put(renamed)
    assert (await store.get(automation.id)).name == "after"  # type: ignore[union-attr]
    assert await store.list() == [renamed]


async def test_list_of_an_empty_bucket_is_empty(store: AutomationStore) -> None:
    assert await store.list() == []


async def test_watch_gives_the_stored_automations_then_none_then_each_change(
    store: AutomationStore, make_automation: Callable[..., Automation]
) -> None:
    kept, changed, gone = (make_automation() for _ in range(3))
    for automation in (kept, changed, gone):
        await store.put(automation)
    await store.delete(gone.id)

    changes = store.watch()
    try:
        initial = [await next_change(changes), await next_change(changes)]
        by_id = {c.automation_id: c for c in initial if c is not None}
        assert by_id.keys() == {kept.id, changed.id}
        assert by_id[kept.id].kind == by_id[changed.id].kind == "put"
        assert (by_id[kept.id].automation, by_id[changed.id].automation) == (kept, changed)
        assert await next_change(changes) is None  # the end of the initial values

        added = make_automation()
        await store.put(added)
        change = await next_change(changes)
        assert change is not None
        assert (change.kind, change.automation_id, change.automation) == ("put", added.id, added)

        renamed = changed.model_copy(update={"name": "renamed"})
        revision = await store.put(renamed)
        change = await next_change(changes)
        assert change == AutomationChange("put", changed.id, renamed, revision)

        await store.delete(kept.id)
        change = await next_change(changes)
        assert change is not None
        assert (change.kind, change.automation_id, change.automation) == ("delete", kept.id, None)
    finally:
        await changes.aclose()


async def test_watch_of_an_empty_bucket_starts_with_none(
    store: AutomationStore, make_automation: Callable[..., Automation]
) -> None:
    changes = store.watch()
    try:
        assert await next_change(changes) is None
        automation = make_automation()
        await store.put(automation)
        change = await next_change(changes)
        assert change is not None and change.automation == automation
    finally:
        await changes.aclose()


async def test_a_purged_key_reaches_the_watch_as_a_delete(
    store: AutomationStore, make_automation: Callable[..., Automation]
) -> None:
    automation = make_automation()
    changes = store.watch()
    try:
        assert await next_change(changes) is None
        await store.put(automation)
        assert (await next_change(changes)).kind == "put"  # type: ignore[union-attr]
        await (await store.bucket()).purge(str(automation.id))
        change = await next_change(changes)
        assert change is not None
        assert (change.kind, change.automation_id) == ("delete", automation.id)
    finally:
        await changes.aclose()


async def test_a_stored_document_that_does_not_parse_is_skipped_not_fatal(
    store: AutomationStore, make_automation: Callable[..., Automation], caplog
) -> None:
    bucket = await store.bucket()
    broken_id = uuid.uuid4()
    good = make_automation()
    await bucket.put(str(broken_id), b'{"id": "not json')
    await bucket.put("not-an-automation-id", b"{}")
    await bucket.put(str(uuid.uuid4()), _json(automation_document(trigger={"type": "nope"})))
    await store.put(good)

    assert await store.get(broken_id) is None
    assert await store.list() == [good]

    changes = store.watch()
    try:
        change = await next_change(changes)
        assert change is not None and change.automation == good
        assert await next_change(changes) is None
        await bucket.put(str(broken_id), b"[]")
        later = make_automation()
        await store.put(later)
        change = await next_change(changes)  # the broken put was skipped
        assert change is not None and change.automation == later
    finally:
        await changes.aclose()
    assert f"skipping stored automation {broken_id}" in caplog.text


def _json(document: dict) -> bytes:
    return orjson.dumps(document)
