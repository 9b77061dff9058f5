"""Redis or NATS unreachable (DESIGN "Delivery guarantees"): the replica stops fetching,
reports NOT_SERVING on health, acks nothing whose effects are not durable, and recovers by
itself once the server is back. Each test has its own nats-server and redis-server (the
append-only file on), halted and resumed on the same ports with the same data."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js import JetStreamContext

from svc.bus.automations import AutomationStore
from svc.client import AdminClient
from svc.config import Settings
from svc.domain.automations import parse_automation
from svc.embedded import NatsServer, RedisServer
from svc.service import Service
from tests.helpers import JS_API_TIMEOUT_S, eventually
from tests.reliability.support import count_calls, quick_recovery_settings, started_replica
from tests.service.support import (
    consumer_settled,
    event_document,
    publish,
    reactive_automation,
    stream_messages,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# How long an outage lasts in these tests: many fetch timeouts and check intervals.
OUTAGE_S = 2.0
# The automations watch re-creates its consumer once the connection is back (about 0.6 s after
# NATS answers again, svc/bus/automations.py); the margin is for a loaded machine.
WATCHER_RECOVERY_S = 10.0


@dataclasses.dataclass
class Servers:
    nats: NatsServer
    redis: RedisServer


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    with (
        NatsServer(data_dir=tmp_path / "nats") as nats_server,
        RedisServer(data_dir=tmp_path / "redis", appendonly=True) as redis_server,
    ):
        yield Servers(nats_server, redis_server)


@pytest.fixture
def settings(servers: Servers, key_prefix: str) -> Settings:
    return quick_recovery_settings(servers.nats.url, servers.redis.url, key_prefix, ack_wait_s=5.0)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Service]:
    async with started_replica(settings) as replica:
        yield replica


@pytest.fixture
async def js(servers: Servers) -> AsyncIterator[JetStreamContext]:
    async def quiet(exc: Exception) -> None:
        """The test's own client sees the outages too; they are expected here."""

    nc = await nats.connect(
        servers.nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=quiet
    )
    try:
        yield nc.jetstream(timeout=JS_API_TIMEOUT_S)
    finally:
        await nc.close()


async def health(service: Service) -> int:
    async with grpc.aio.insecure_channel(service.admin_address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return reply.status


async def reports(service: Service, status: int) -> bool:
    return await health(service) == status


async def action_ids(js: JetStreamContext, settings: Settings) -> list[str]:
    return [m.json()["id"] for m in await stream_messages(js, settings.actions_stream)]


async def acked_up_to(js: JetStreamContext, settings: Settings) -> int:
    info = await js.consumer_info(settings.events_stream, settings.consumer_name)
    return info.ack_floor.stream_seq


async def start_with_one_firing(service: Service, js: JetStreamContext, settings: Settings):
    """Load a reactive automation through the admin API, fire it once, wait until settled."""
    async with AdminClient(service.admin_address) as admin:
        await admin.load(reactive_automation("outage.ping"))
    await publish(js, settings, event_document("outage.ping"))
    await eventually(lambda: consumer_settled(js, settings), "the first event to be handled")
    assert len(await action_ids(js, settings)) == 1
    assert await health(service) == SERVING


def alive(service: Service) -> bool:
    return all(not t.done() for t in service._tasks)


async def test_redis_down_pauses_intake_acks_nothing_and_recovers_with_every_firing_once(
    servers: Servers, service: Service, js: JetStreamContext, settings: Settings
) -> None:
    await start_with_one_firing(service, js, settings)
    acked = await acked_up_to(js, settings)
    servers.redis.halt(signal.SIGKILL)
    # published at once: some may be fetched before the outage is noticed, and are nak'd
    for _ in range(5):
        await publish(js, settings, event_document("outage.ping"))
    await eventually(lambda: reports(service, NOT_SERVING), "health to report NOT_SERVING")
    # the outage lasts a while: nothing is acked or fired, and no loop gives up, meanwhile
    await asyncio.sleep(OUTAGE_S)
    assert await acked_up_to(js, settings) == acked, "an event was acked while Redis was down"
    assert len(await action_ids(js, settings)) == 1
    assert alive(service)

    servers.redis.resume()
    await eventually(lambda: reports(service, SERVING), "health to report SERVING again")
    await eventually(lambda: consumer_settled(js, settings), "every event to be handled")
    ids = await action_ids(js, settings)
    assert len(ids) == 6 and len(set(ids)) == 6


async def test_nats_down_reports_not_serving_and_the_replica_recovers_by_itself(
    servers: Servers, service: Service, js: JetStreamContext, settings: Settings
) -> None:
    await start_with_one_firing(service, js, settings)
    servers.nats.halt(signal.SIGKILL)
    await eventually(lambda: reports(service, NOT_SERVING), "health to report NOT_SERVING")
    # the outage lasts a while: no loop of the replica gives up meanwhile
    await asyncio.sleep(OUTAGE_S)
    assert alive(service)

    servers.nats.resume()
    await eventually(lambda: reports(service, SERVING), "health to report SERVING again")
    for _ in range(3):
        await publish(js, settings, event_document("outage.ping"))
    await eventually(lambda: consumer_settled(js, settings), "the new events to be handled")
    ids = await action_ids(js, settings)
    assert len(ids) == 4 and len(set(ids)) == 4

    # the automations watcher follows the bucket again too, once nats.py's ordered consumer
    # has noticed its server-side consumer is gone (two missed 5 s idle heartbeats)
    later = parse_automation(reactive_automation("outage.later"))
    await AutomationStore(js, settings).put(later)
    await eventually(
        lambda: later.id in service.engine.automations,
        "the watcher to load it",
        timeout_s=WATCHER_RECOVERY_S,
    )


async def test_both_down_then_back_in_the_other_order(
    servers: Servers, service: Service, js: JetStreamContext, settings: Settings
) -> None:
    await start_with_one_firing(service, js, settings)
    servers.nats.halt(signal.SIGKILL)
    servers.redis.halt(signal.SIGKILL)
    await eventually(lambda: reports(service, NOT_SERVING), "health to report NOT_SERVING")
    servers.nats.resume()
    await publish(js, settings, event_document("outage.ping"))
    # for a while with NATS back and Redis still down: the replica must stay NOT_SERVING and
    # fire nothing
    await asyncio.sleep(OUTAGE_S)
    assert await health(service) == NOT_SERVING
    assert len(await action_ids(js, settings)) == 1
    servers.redis.resume()
    await eventually(lambda: reports(service, SERVING), "health to report SERVING again")
    await eventually(lambda: consumer_settled(js, settings), "the event to be handled")
    assert len(await action_ids(js, settings)) == 2


async def test_an_automation_stored_while_redis_is_down_is_applied_once_it_is_back(
    servers: Servers, service: Service, js: JetStreamContext, settings: Settings
) -> None:
    """Regression (found by the crash harness): the watcher logged a change it could not
    apply during a Redis outage and skipped it, so that replica acked the automation's
    events without evaluating them, for good."""
    await start_with_one_firing(service, js, settings)
    servers.redis.halt(signal.SIGKILL)
    await eventually(lambda: reports(service, NOT_SERVING), "health to report NOT_SERVING")
    loads: Counter[str] = Counter()
    count_calls(service, loads, "load")
    later = parse_automation(reactive_automation("outage.later"))
    await AutomationStore(js, settings).put(later)
    await eventually(
        lambda: loads["load"] >= 2, "the watcher to fail to apply the change and try again"
    )
    assert later.id not in service.engine.automations
    servers.redis.resume()
    await eventually(lambda: later.id in service.engine.automations, "the change to be applied")
    await publish(js, settings, event_document("outage.later"))
    await eventually(lambda: consumer_settled(js, settings), "the event to be handled")
    fired = [m.json() for m in await stream_messages(js, settings.actions_stream)]
    assert [a["automation"]["id"] for a in fired][-1] == str(later.id)


async def probe(address: str, service: str = "") -> int:
    """`python -m svc health`, as an exec probe runs it; its exit status."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "svc", "health", "--address", address, "--service", service,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait()


async def test_the_health_command_follows_readiness_and_liveness_stays_serving(
    servers: Servers, service: Service
) -> None:
    assert await probe(service.admin_address) == 0
    servers.redis.halt(signal.SIGKILL)
    await eventually(lambda: reports(service, NOT_SERVING), "health to report NOT_SERVING")
    assert await probe(service.admin_address) == 1
    assert await probe(service.admin_address, "liveness") == 0  # no restart for an outage
    servers.redis.resume()
    await eventually(lambda: reports(service, SERVING), "health to report SERVING again")
    assert await probe(service.admin_address) == 0
