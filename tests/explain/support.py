"""What the explain-and-replay tests share: the real service in-process on the session's NATS
and Redis under names of the test's own, events published to its stream, and waiting for
them to be handled."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import orjson
import redis.asyncio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from svc.bus.streams import desired_streams
from svc.client import AdminClient, event_subject
from svc.config import Settings
from svc.service import Service
from svc.telemetry import Instruments
from tests.helpers import JS_API_TIMEOUT_S
from tests.service.support import settle


def settings_for(nats_url: str, redis_url: str, suffix: str, **changes: Any) -> Settings:
    """Every name (streams, subjects, bucket, consumer, key prefix) this test's own, the
    admin API on a free port, a 1 s periodic timer."""
    return dataclasses.replace(
        Settings.from_env({}).named_apart(suffix),
        nats_url=nats_url,
        redis_url=redis_url,
        key_prefix=suffix,  # the redis_client fixture deletes the keys under it afterwards
        grpc_address="127.0.0.1:0",
        periodic_interval_s=1.0,
        fetch_timeout_s=0.2,
        **changes,
    )


@dataclass
class Running:
    """The service, with clients on what it uses."""

    service: Service
    settings: Settings  # with the admin API's bound address
    nc: NATS
    js: JetStreamContext
    admin: AdminClient
    redis: redis.asyncio.Redis

    async def publish(self, event: dict[str, Any]) -> str:
        """Publish an event (a fresh id and `occurred` now unless given); return its id."""
        event = {"id": str(uuid.uuid4()), "occurred": datetime.now(UTC).isoformat(), **event}
        subject = event_subject(self.settings, str(event.get("event", "")))
        await self.js.publish(subject, orjson.dumps(event), stream=self.settings.events_stream)
        return str(event["id"])

    async def settled(self) -> None:
        """Wait until the consumer has taken and acknowledged everything published so far."""
        await settle(self.js, self.settings)

    async def actions(self) -> list[dict[str, Any]]:
        """Every triggered action in the ACTIONS stream so far."""
        from svc.bus.history import read_history

        return [
            orjson.loads(m.data)
            async for m in read_history(
                self.js, self.settings.actions_stream, f"{self.settings.actions_subject_prefix}.>"
            )
        ]

    async def actions_count_at_least(self, count: int) -> bool:
        try:
            info = await self.js.stream_info(self.settings.actions_stream)
        except NotFoundError:
            return False
        return info.state.messages >= count

    async def dump_state(self) -> dict[bytes, bytes]:
        """Every Redis key of the service, DUMPed: byte for byte what it holds."""
        keys = [k async for k in self.redis.scan_iter(match=f"{self.settings.key_prefix}:*")]
        return {k: await self.redis.dump(k) for k in sorted(keys)}


@contextlib.asynccontextmanager
async def running_service(
    settings: Settings, instruments: Instruments | None = None, **kwargs: Any
) -> AsyncIterator[Running]:
    service = Service(settings, instruments=instruments, **kwargs)
    nc = await nats.connect(settings.nats_url)
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    try:
        await service.start()
        bound = dataclasses.replace(settings, grpc_address=service.admin_address)
        async with AdminClient(service.admin_address) as admin:  # type: ignore[arg-type]
            yield Running(service, bound, nc, nc.jetstream(timeout=JS_API_TIMEOUT_S), admin, client)
    finally:
        await service.stop()
        js = nc.jetstream(timeout=JS_API_TIMEOUT_S)
        for stream in desired_streams(dataclasses.replace(settings, decisions_enabled=True)):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream.name)
        keys = [k async for k in client.scan_iter(match=f"{settings.key_prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await nc.close()


def reactive(expect: str = "x.happened", **fields: Any) -> dict[str, Any]:
    return {"type": "event", "posture": "Reactive", "expect": [expect], **fields}


def automation(trigger: dict[str, Any], name: str = "test", **fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "name": name,
        "trigger": trigger,
        "actions": [{"type": "do-nothing"}],
        **fields,
    }


def event(name: str = "x.happened", resource: str = "r-1", **fields: Any) -> dict[str, Any]:
    return {"event": name, "resource": {"prefect.resource.id": resource}, **fields}
