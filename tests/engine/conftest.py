"""Fixtures of the engine tests: a label-aware driver over the in-process harness."""

from __future__ import annotations

import pytest
import redis.asyncio

from tests.engine.support import Driver


@pytest.fixture
def driver(redis_client: redis.asyncio.Redis, key_prefix: str) -> Driver:
    return Driver(redis_client, key_prefix)
