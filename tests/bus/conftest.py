"""Fixtures of the bus tests: a JetStream connection, and settings naming streams, subjects and
a bucket of this test's own (removed afterwards), so tests never see each other's messages."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from svc.bus.streams import desired_streams
from svc.config import Settings
from svc.domain.automations import Automation, parse_automation
from tests.bus.support import automation_document
from tests.helpers import JS_API_TIMEOUT_S


@pytest.fixture
def bus_settings(key_prefix: str) -> Settings:
    """Names of this test's own; short waits so that tests run fast."""
    return dataclasses.replace(
        Settings.from_env({}).named_apart(key_prefix),
        fetch_timeout_s=0.2,
        consumer_backoff_initial_s=0.05,
        consumer_backoff_max_s=0.2,
    )


@pytest.fixture
async def js(nats_url: str, bus_settings: Settings) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on the session's NATS; this test's streams are deleted afterwards."""
    nc = await nats.connect(nats_url)
    context = nc.jetstream(timeout=JS_API_TIMEOUT_S)
    try:
        yield context
        for stream in desired_streams(bus_settings):
            with contextlib.suppress(NotFoundError):
                await context.delete_stream(stream.name)
    finally:
        await nc.close()


@pytest.fixture
def make_automation() -> Callable[..., Automation]:
    """A valid automation with a fresh id; keyword arguments override document fields."""
    return lambda **overrides: parse_automation(automation_document(**overrides))
