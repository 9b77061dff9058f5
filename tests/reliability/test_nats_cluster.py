"""The service on a three-node NATS JetStream cluster on loopback, its streams and bucket
replicated three times (DESIGN "Scale"): stopping one node mid-run, the leader of the events
stream at that, loses nothing: every event still fires exactly one triggered action."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import AsyncIterator, Iterator

import nats
import orjson
import pytest
from nats.js import JetStreamContext

from svc.bus.streams import KV_STREAM
from svc.client import AdminClient
from svc.topology import LocalNatsCluster
from tests.helpers import JS_API_TIMEOUT_S, eventually
from tests.reliability.support import started_replica
from tests.service.support import (
    event_document,
    reactive_automation,
    service_settings,
    stream_messages,
)

EVENTS = 300
# Events are published over about this long; the node goes down a third of the way in.
PUBLISH_S = 6.0


@pytest.fixture(scope="module")
def nats_cluster() -> Iterator[LocalNatsCluster]:
    with LocalNatsCluster(3) as cluster:
        yield cluster


@pytest.fixture
async def cluster_js(nats_cluster: LocalNatsCluster) -> AsyncIterator[JetStreamContext]:
    async def quiet(exc: Exception) -> None:
        """This client sees the node stop too; that is the point of the test."""

    nc = await nats.connect(
        servers=nats_cluster.url.split(","), max_reconnect_attempts=-1,
        reconnect_time_wait=0.2, error_cb=quiet,
    )
    try:
        yield nc.jetstream(timeout=JS_API_TIMEOUT_S)
    finally:
        await nc.close()


async def publish_once(js: JetStreamContext, subject: str, body: dict) -> None:
    """Publish until acknowledged; the same `Nats-Msg-Id` keeps a retry from doubling it."""
    while True:
        try:
            await js.publish(subject, orjson.dumps(body), headers={"Nats-Msg-Id": body["id"]},
                             timeout=2)
            return
        except Exception:  # a node is down, or leaders are being elected
            await asyncio.sleep(0.1)  # a pause between retries: the election takes its time


async def settled(js: JetStreamContext, settings) -> bool:
    with contextlib.suppress(Exception):  # the consumer's leader may be moving
        info = await js.consumer_info(settings.events_stream, settings.consumer_name,
                                      timeout=2)
        return info.num_pending == 0 and info.num_ack_pending == 0
    return False


async def test_stopping_the_events_stream_leader_mid_run_loses_nothing(
    nats_cluster: LocalNatsCluster, cluster_js: JetStreamContext, redis_url: str,
    key_prefix: str,
) -> None:
    settings = dataclasses.replace(
        service_settings(nats_cluster.url, redis_url, key_prefix, fetch_timeout_s=0.2),
        stream_replicas=3,
        ack_wait_s=3.0,
        dependency_check_interval_s=0.2,
        dependency_timeout_s=2.0,
    )
    stopped = None
    try:
        async with started_replica(settings) as service:
            for stream in (settings.events_stream, settings.actions_stream,
                           KV_STREAM.format(bucket=settings.automations_bucket)):
                info = await cluster_js.stream_info(stream)
                assert info.config.num_replicas == 3, stream
            async with AdminClient(service.admin_address) as admin:
                await admin.load(reactive_automation("cluster.ping"))
            leader = (await cluster_js.stream_info(settings.events_stream)).cluster.leader
            subject = f"{settings.events_subject_prefix}.cluster"
            for i in range(EVENTS):
                if i == EVENTS // 3:
                    stopped = nats_cluster.node(leader)
                    stopped.halt(signal.SIGKILL)
                await publish_once(cluster_js, subject, event_document("cluster.ping"))
                # pacing: the events spread over PUBLISH_S, so the node stops mid-run
                await asyncio.sleep(PUBLISH_S / EVENTS)
            await eventually(lambda: settled(cluster_js, settings), "every event to be handled",
                             timeout_s=60)
            actions = await stream_messages(cluster_js, settings.actions_stream)
            ids = [m.json()["id"] for m in actions]
            assert len(ids) == EVENTS and len(set(ids)) == EVENTS
    finally:
        if stopped is not None:
            stopped.resume()
            nats_cluster.wait_for_meta_leader()
