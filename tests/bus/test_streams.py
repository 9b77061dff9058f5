"""Stream and bucket set-up: created once, idempotent from many replicas, collisions refused."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from nats.js import JetStreamContext

from svc.bus.streams import (
    KV_STREAM,
    NameCollisionError,
    StreamSetupError,
    check_names,
    ensure_streams,
    subjects_overlap,
)
from svc.config import Settings


async def test_ensure_streams_creates_the_streams_and_the_bucket(
    js: JetStreamContext, bus_settings: Settings
) -> None:
    s = bus_settings
    await ensure_streams(js, s)

    events = (await js.stream_info(s.events_stream)).config
    actions = (await js.stream_info(s.actions_stream)).config
    dead_letters = (await js.stream_info(s.dead_letter_stream)).config
    assert events.subjects == [f"{s.events_subject_prefix}.>"]
    assert actions.subjects == [f"{s.actions_subject_prefix}.>"]
    assert actions.duplicate_window == s.actions_duplicate_window_s == 600
    assert dead_letters.subjects == [s.dead_letter_subject]
    bucket = await js.key_value(s.automations_bucket)
    assert (await bucket.status()).history == 1


async def test_ensure_streams_twice_and_from_several_replicas_at_once_is_harmless(
    js: JetStreamContext, bus_settings: Settings
) -> None:
    await asyncio.gather(*(ensure_streams(js, bus_settings) for _ in range(4)))
    first = (await js.stream_info(bus_settings.actions_stream)).config
    await ensure_streams(js, bus_settings)
    assert (await js.stream_info(bus_settings.actions_stream)).config == first


async def test_ensure_streams_sets_the_fields_it_owns_and_keeps_an_operators_limits(
    js: JetStreamContext, bus_settings: Settings
) -> None:
    s = bus_settings
    await js.add_stream(
        name=s.actions_stream,
        subjects=[f"{s.actions_subject_prefix}.old.>"],
        duplicate_window=60,
        max_age=3600,
    )
    await js.create_key_value(bucket=s.automations_bucket, history=5)

    await ensure_streams(js, s)

    actions = (await js.stream_info(s.actions_stream)).config
    assert actions.subjects == [f"{s.actions_subject_prefix}.>"]
    assert actions.duplicate_window == 600
    assert actions.max_age == 3600
    bucket = (await js.stream_info(KV_STREAM.format(bucket=s.automations_bucket))).config
    assert bucket.max_msgs_per_subject == 1


async def test_a_stream_that_already_takes_our_subjects_gives_a_clear_error(
    js: JetStreamContext, bus_settings: Settings
) -> None:
    s = dataclasses.replace(bus_settings, events_stream=f"{bus_settings.events_stream}-2")
    await js.add_stream(name=bus_settings.events_stream, subjects=[f"{s.events_subject_prefix}.>"])
    try:
        with pytest.raises(StreamSetupError, match=f"stream '{s.events_stream}'.*events_stream"):
            await ensure_streams(js, s)
    finally:
        await js.delete_stream(bus_settings.events_stream)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"actions_subject_prefix": "events"}, "events_stream.*actions_stream.*overlap"),
        ({"actions_subject_prefix": "events.actions"}, "overlap"),
        ({"dead_letter_subject": "events.dead"}, "events_stream.*dead_letter_stream.*overlap"),
        ({"actions_stream": "EVENTS"}, "events_stream and actions_stream both give stream name"),
        ({"dead_letter_stream": "KV_automations"}, "dead_letter_stream and automations_bucket"),
        ({"events_subject_prefix": "$KV.automations"}, "automations_bucket"),
    ],
)
async def test_colliding_names_are_refused_naming_both_settings(changes, message) -> None:
    settings = dataclasses.replace(Settings(), **changes)
    with pytest.raises(NameCollisionError, match=message.replace("$", r"\$")):
        check_names(settings)
    with pytest.raises(NameCollisionError):
        await ensure_streams(None, settings)  # type: ignore[arg-type]  # refused before any I/O


def test_the_default_names_do_not_collide() -> None:
    check_names(Settings())


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("events.>", "events.x", True),
        ("events.>", "events.x.y", True),
        ("events.>", "events", False),
        ("events.>", "actions.>", False),
        ("events.>", "events-dead-letter", False),
        ("a.*.c", "a.b.>", True),
        ("a.*.c", "a.b.d", False),
        ("a.b", "a.b", True),
    ],
)
def test_subjects_overlap_like_jetstream_does(a: str, b: str, overlap: bool) -> None:
    assert subjects_overlap(a, b) is overlap
    assert subjects_overlap(b, a) is overlap
