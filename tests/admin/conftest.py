"""A real grpc.aio admin server on a free loopback port, over an in-memory backend.

The backend stands in for the service's own store and engine state (a dict), not for NATS
or Redis: the admin API only sees the `AdminBackend` protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from svc.admin.backend import AdminBackend
from svc.admin.generated.triggers.admin.v1 import admin_pb2_grpc as pb_grpc
from svc.admin.server import start_admin_server
from tests.admin.support import Admin, InMemoryBackend


def _implements_protocol(backend: InMemoryBackend) -> AdminBackend:
    return backend  # a type checker verifies the in-memory backend against the protocol


@pytest.fixture
def backend() -> InMemoryBackend:
    return InMemoryBackend()


@pytest.fixture
async def admin(backend: InMemoryBackend) -> AsyncIterator[Admin]:
    server, health, address = await start_admin_server(_implements_protocol(backend), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Admin(pb_grpc.AutomationAdminServiceStub(channel), channel, backend, health)
    finally:
        await channel.close()
        await server.stop(None)
