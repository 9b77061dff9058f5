"""Fixtures of the reliability tests: a JetStream connection to the session's NATS (tests
with servers of their own override it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from tests.service.support import JS_API_TIMEOUT_S


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    try:
        yield nc.jetstream(timeout=JS_API_TIMEOUT_S)
    finally:
        await nc.close()
