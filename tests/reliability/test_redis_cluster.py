"""The state layer unchanged on a Redis Cluster of three masters, started here from the same
redis-server binary (DESIGN "State in Redis", "Scale"): every script touches one slot, a
pipeline of scripts across slots works (and reloads scripts a node lost), the conformance
scenarios pass, and the service runs on it with nothing but TRIGGERS_REDIS_CLUSTER set."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from svc.bus.streams import desired_streams
from svc.conformance import ScenarioRunner
from svc.state import scripts as scripts_module
from svc.state.keys import Keys
from svc.state.lease import Lease
from svc.state.store import RedisState, ScriptCall
from svc.topology import LocalRedisCluster
from tests.engine.test_conformance import SCENARIOS
from tests.helpers import eventually
from tests.reliability.support import started_replica
from tests.service.support import (
    consumer_settled,
    event_document,
    publish,
    reactive_automation,
    service_settings,
    stream_messages,
)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture
async def cluster_client(redis_cluster: LocalRedisCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster.url)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def one_slot_per_call(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any script call or queued call whose keys span two slots; returns the names of
    the scripts seen, so a test can tell which it exercised."""
    seen: list[str] = []
    check = scripts_module.Script._check

    def checked(self, keys):
        numkeys = check(self, keys)
        # keys arrive as str, or already encoded (the engine's reactive calls, svc/engine)
        slots = {key_slot(k if isinstance(k, bytes) else k.encode()) for k in keys}
        assert len(slots) <= 1, f"script {self.name} touches slots {slots}: {list(keys)}"
        seen.append(self.name)
        return numkeys

    monkeypatch.setattr(scripts_module.Script, "_check", checked)
    return seen


async def test_the_cluster_has_three_masters_covering_every_slot(cluster_client) -> None:
    masters = [n for n in cluster_client.get_nodes() if n.server_type == "primary"]
    assert len(masters) == 3
    info = await cluster_client.cluster_info()
    assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == 16384


def test_each_key_group_shares_one_slot() -> None:
    keys = Keys("triggers")
    trigger, generation = uuid.uuid4(), "g1"
    for group in (keys.trigger(trigger, generation), keys.composite(trigger, generation)):
        assert len({key_slot(k.encode()) for k in group.as_list()}) == 1
    event = uuid.uuid4()
    ordering = [keys.seen(event), keys.followers(event), keys.parked_events, keys.waitlist]
    assert len({key_slot(k.encode()) for k in ordering}) == 1


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_scenario_on_redis_cluster(
    path: Path, cluster_client: RedisCluster, one_slot_per_call: list[str]
) -> None:
    result = await ScenarioRunner(cluster_client).run_file(path)
    details = "\n".join(f.describe() for f in result.failures)
    assert result.passed, f"{result.name}: {result.error or ''}\n{details}"
    assert one_slot_per_call


async def test_a_pipeline_of_scripts_across_slots_reloads_the_scripts_a_node_lost(
    cluster_client: RedisCluster, key_prefix: str
) -> None:
    state = RedisState(cluster_client, Keys(key_prefix))
    await state.start()
    ticks = [state.tick(1_000 + i, 2_000) for i in range(3)]
    lease_keys = [f"{key_prefix}:{{lease-{i}}}:x" for i in range(30)]
    for key in lease_keys:
        await cluster_client.set(key, "token")
    assert len({key_slot(k.encode()) for k in lease_keys}) > 3  # many slots, every node
    await cluster_client.script_flush()  # every node forgets every script
    renew = state.scripts.lease_renew
    calls = [*ticks] + [ScriptCall(renew, [key], ["token", 60_000]) for key in lease_keys]
    results = await state.call_many(calls)
    assert results[len(ticks):] == [1] * len(lease_keys)


async def test_a_call_marked_after_earlier_goes_in_a_second_round_on_a_cluster(
    cluster_client: RedisCluster, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seen marks of a segment (finish) must not land before its evaluations: on a
    cluster the nodes run their shares of a pipeline concurrently."""
    state = RedisState(cluster_client, Keys(key_prefix))
    await state.start()
    rounds: list[list[str]] = []
    pipeline = state._pipeline

    async def recorded(calls):
        rounds.append([getattr(c, "script", None) and c.script.name for c in calls])
        return await pipeline(calls)

    monkeypatch.setattr(state, "_pipeline", recorded)
    events = [uuid.uuid4(), uuid.uuid4()]
    results = await state.call_many([state.tick(5, 10), state.finish(events, 10), state.tick(6, 11)])
    assert rounds == [["clock-1", "clock-1"], [state.scripts.finish.name]]
    assert results[1] == [[], []]  # finish's answer, back in its place


async def test_the_lease_on_the_cluster(cluster_client: RedisCluster, key_prefix: str) -> None:
    state = RedisState(cluster_client, Keys(key_prefix))
    a, b = (
        Lease(cluster_client, state.keys.periodic_lease, state.scripts, ttl_ms=1000,
              renew_interval_ms=200, token=t)
        for t in "ab"
    )
    assert await a.refresh() and not await b.refresh()
    await a.release()
    assert await b.refresh()


async def test_the_service_runs_unchanged_on_redis_cluster(
    redis_cluster: LocalRedisCluster, nats_url: str, key_prefix: str, js
) -> None:
    from svc.client import AdminClient

    settings = dataclasses.replace(
        service_settings(nats_url, redis_cluster.url, key_prefix, fetch_timeout_s=0.2),
        redis_cluster=True,
    )
    try:
        async with started_replica(settings) as service:
            assert isinstance(service.redis, RedisCluster)
            async with AdminClient(service.admin_address) as admin:
                await admin.load(reactive_automation("cluster.ping"))
            for _ in range(5):
                await publish(js, settings, event_document("cluster.ping"))
            await eventually(lambda: consumer_settled(js, settings), "every event to be handled")
            assert len(await stream_messages(js, settings.actions_stream)) == 5
            await eventually(lambda: service.lease.held, "the replica to take the lease")
    finally:
        for stream in desired_streams(settings):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream.name)
        client = RedisCluster.from_url(redis_cluster.url)
        async for key in client.scan_iter(match=f"{settings.key_prefix}:*"):
            await client.delete(key)
        await client.aclose()
