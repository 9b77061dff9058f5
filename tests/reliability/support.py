"""What the reliability tests share: replicas of the service in-process, settings with which a
replica notices an outage and recovers from it quickly, replicas stopped abruptly on purpose,
and counters of what each replica's engine ran."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from svc.config import Settings
from svc.service import Service
from tests.service.support import service_settings


def quick_recovery_settings(
    nats_url: str, redis_url: str, key_prefix: str, **changes: Any
) -> Settings:
    """service_settings (names of the test's own) for a replica that notices an outage within
    a fraction of a second and goes back to work as quickly once it ends: short fetches,
    dependency checks every 0.1 s that give up after 0.5 s, a consumer backing off from
    0.05 s up to 0.5 s after failed batches. `changes` override any of these."""
    quick: dict[str, Any] = {
        "fetch_timeout_s": 0.2,
        "dependency_check_interval_s": 0.1,
        "dependency_timeout_s": 0.5,
        "consumer_backoff_initial_s": 0.05,
        "consumer_backoff_max_s": 0.5,
    }
    return service_settings(nats_url, redis_url, key_prefix, **{**quick, **changes})


@contextlib.asynccontextmanager
async def started_replica(settings: Settings, **kwargs: Any) -> AsyncIterator[Service]:
    """A replica of the service started on `settings` (keyword arguments go to Service),
    stopped gracefully on the way out."""
    replica = Service(settings, **kwargs)
    await replica.start()
    try:
        yield replica
    finally:
        await replica.stop()


def count_calls(service: Service, counts: Counter[str], *names: str) -> None:
    """Count each call of the named engine methods of one replica (by method name)."""
    engine = service.engine
    assert engine is not None
    for name in names:
        method: Callable[..., Awaitable[Any]] = getattr(engine, name)

        @functools.wraps(method)
        async def counted(*args: Any, _method=method, _name=name, **kwargs: Any) -> Any:
            counts[_name] += 1
            return await _method(*args, **kwargs)

        setattr(engine, name, counted)


async def crash(service: Service) -> None:
    """End a replica the way a crash would, as far as its peers can tell: its loops stop
    at once, nothing is released (the lease stays until its TTL), connections drop."""
    for task in service._tasks:
        task.cancel()
    await asyncio.gather(*service._tasks, return_exceptions=True)
    service._tasks.clear()
    if service._grpc is not None:
        await service._grpc.stop(None)  # type: ignore[attr-defined]
    if service.nc is not None:
        with contextlib.suppress(Exception):
            await service.nc.close()
    if service.redis is not None:
        await service.redis.aclose()
