"""Fixtures of the service tests: settings of the test's own, the Service in-process (as many
replicas as a test asks for), and admin API clients on them. (The JetStream connection to look
at what it did, `js`, is tests/conftest.py's.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from svc.client import AdminClient
from svc.config import Settings
from svc.service import Service
from tests.service.support import remove_names, service_settings


@pytest.fixture
def settings(nats_url: str, redis_url: str, key_prefix: str) -> Settings:
    """Names of this test's own; a short fetch timeout so that a stop is quick."""
    return service_settings(nats_url, redis_url, key_prefix, fetch_timeout_s=0.2)


StartService = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start_service(settings: Settings) -> AsyncIterator[StartService]:
    """Starts a Service replica on this test's settings (keyword arguments go to Service);
    every replica still running is stopped afterwards, and the test's names are removed."""
    started: list[Service] = []

    async def start(**kwargs: Any) -> Service:
        service = Service(settings, **kwargs)
        started.append(service)
        await service.start()
        return service

    try:
        yield start
    finally:
        for service in started:
            if service.nc is not None and not service.nc.is_closed:
                await service.stop()
        await remove_names(settings)


@pytest.fixture
async def admin_of() -> AsyncIterator[Callable[[Service], AdminClient]]:
    """An admin API client for a started replica (closed afterwards)."""
    clients: list[AdminClient] = []

    def connect(service: Service) -> AdminClient:
        assert service.admin_address is not None
        clients.append(AdminClient(service.admin_address))
        return clients[-1]

    try:
        yield connect
    finally:
        for client in clients:
            await client.channel.close()
