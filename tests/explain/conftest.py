"""Fixtures of the explain-and-replay tests: the real service, started per test module area."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.explain.support import Running, running_service, settings_for


@pytest.fixture
def suffix() -> str:
    return f"x{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def live(nats_url: str, redis_url: str, suffix: str) -> AsyncIterator[Running]:
    """The service in-process with decision records on (the default)."""
    async with running_service(settings_for(nats_url, redis_url, suffix)) as running:
        yield running
