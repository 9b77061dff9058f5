"""What the reliability tests share: replicas of the service in-process, stopped abruptly on
purpose, and counters of what each replica's engine ran."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from svc.service import Service


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
