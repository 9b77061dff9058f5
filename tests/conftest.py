"""Test session fixtures: one real NATS (JetStream) and one real Redis for the whole session,
and clients on them.

Set NATS_URL and/or REDIS_URL to run the tests against servers you already have; each one
not set is started here, once, on free loopback ports, and stopped when the session ends.
Each test gets its own key prefix, so tests never see each other's state.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
import redis.asyncio
from nats.js import JetStreamContext

from svc.config import Settings
from svc.connections import redis_client as redis_client_for
from svc.embedded import EmbeddedServers
from tests.helpers import JS_API_TIMEOUT_S


@pytest.fixture(scope="session")
def server_urls() -> Iterator[tuple[str, str]]:
    """(nats_url, redis_url): from NATS_URL / REDIS_URL where set, else embedded servers."""
    settings = Settings.from_env()
    with EmbeddedServers(nats_url=settings.nats_url, redis_url=settings.redis_url) as servers:
        yield servers.nats_url, servers.redis_url


@pytest.fixture(scope="session")
def nats_url(server_urls: tuple[str, str]) -> str:
    return server_urls[0]


@pytest.fixture(scope="session")
def redis_url(server_urls: tuple[str, str]) -> str:
    return server_urls[1]


@pytest.fixture
def key_prefix() -> str:
    """A prefix unique to this test, for Redis keys and also usable in stream and subject
    names (letters, digits and '-' only)."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_client(redis_url: str, key_prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client on the session's Redis (bytes in, bytes out), built as the service builds
    its own (svc.connections, hiredis packing included). Keys under this test's
    `key_prefix` are deleted afterwards, so a shared external Redis does not fill up."""
    client = redis_client_for(Settings(redis_url=redis_url))
    try:
        yield client
        keys = [key async for key in client.scan_iter(match=f"{key_prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on the session's NATS. Tests with servers of their own, or with
    streams to remove afterwards, override it."""
    nc = await nats.connect(nats_url)
    try:
        yield nc.jetstream(timeout=JS_API_TIMEOUT_S)
    finally:
        await nc.close()
