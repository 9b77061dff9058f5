"""The periodic-evaluation lease (DESIGN "Scale"): one holder at a time, renewed inside its
TTL, released on stop, and taken over within a bounded time when the holder dies or its
renewals stop; a replica that lost it can neither renew nor release its successor's."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import redis.asyncio

from svc.state.keys import Keys
from svc.state.lease import Lease, LeaseSettingsError
from svc.state.scripts import Scripts
from tests.helpers import eventually

TTL_MS = 600
RENEW_MS = 100
# Scheduling and round trips on a loaded machine, beyond the lease's own bound.
SLACK_S = 0.5


def make_lease(client: redis.asyncio.Redis, prefix: str, name: str) -> Lease:
    return Lease(
        client,
        Keys(prefix).periodic_lease,
        Scripts(),
        ttl_ms=TTL_MS,
        renew_interval_ms=RENEW_MS,
        token=name,
    )


async def when(condition, what: str) -> float:
    """When (time.monotonic()) `condition()` came to hold, to within one poll."""
    await eventually(condition, what)
    return time.monotonic()


@contextlib.asynccontextmanager
async def running(*leases: Lease):
    """Run each lease's renew loop; stop them (without releasing) on the way out."""
    stopping = asyncio.Event()
    tasks = {lease: asyncio.create_task(lease.run(stopping)) for lease in leases}
    try:
        yield tasks
    finally:
        stopping.set()
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def test_one_replica_takes_the_lease_and_the_other_does_not(redis_client, key_prefix):
    a, b = (make_lease(redis_client, key_prefix, n) for n in "ab")
    assert await a.refresh() and a.held
    assert not await b.refresh() and not b.held
    assert await redis_client.get(a.key) == b"a"
    assert 0 < await redis_client.pttl(a.key) <= TTL_MS


async def test_the_holder_renews_well_inside_its_ttl_and_keeps_the_lease(redis_client, key_prefix):
    a, b = (make_lease(redis_client, key_prefix, n) for n in "ab")
    await a.refresh()
    async with running(a, b):
        # for five TTLs, sampled every 10 ms: the lease must never change hands
        deadline = time.monotonic() + 5 * TTL_MS / 1000
        while time.monotonic() < deadline:
            assert a.held and not b.held
            await asyncio.sleep(0.01)


async def test_a_released_lease_is_taken_by_another_within_one_renew_interval(
    redis_client, key_prefix
):
    a, b = (make_lease(redis_client, key_prefix, n) for n in "ab")
    await a.refresh()
    async with running(b):
        released = time.monotonic()
        await a.release()
        assert not a.held
        taken = await when(lambda: b.held, "b to take the lease")
    assert taken - released <= RENEW_MS / 1000 + SLACK_S


async def test_when_renewals_stop_the_holder_lets_go_before_another_takes_over_in_bound(
    redis_client, key_prefix
):
    """A holder whose renewals stop (a partition, a stalled loop) stops trusting the lease
    at its own deadline, which comes before Redis lets another replica take it."""
    a, b = (make_lease(redis_client, key_prefix, n) for n in "ab")
    await a.refresh()
    async with running(a, b) as tasks:
        tasks[a].cancel()  # renewals stop; the lease is not released
        stopped = time.monotonic()
        let_go = await when(lambda: not a.held, "a to stop trusting the lease")
        taken = await when(lambda: b.held, "b to take the lease")
    assert let_go <= taken
    assert taken - stopped <= b.takeover_bound_s + SLACK_S
    assert await redis_client.get(b.key) == b"b"


async def test_a_replica_whose_lease_ran_out_cannot_renew_or_release_its_successors(
    redis_client, key_prefix
):
    a, b = (make_lease(redis_client, key_prefix, n) for n in "ab")
    await a.refresh()
    await redis_client.delete(a.key)  # expired in Redis while `a` was not looking
    assert await b.refresh()
    assert not await a.refresh() and not a.held
    a._valid_until = time.monotonic() + 60  # even if `a` still believed it held the lease
    await a.release()
    assert await redis_client.get(b.key) == b"b" and b.held
    assert await b.refresh()


async def test_renewal_compares_the_token(redis_client, key_prefix):
    """lease_renew-1 and lease_release-1 touch the key only for its holder's token."""
    scripts = Scripts()
    key = Keys(key_prefix).periodic_lease
    await redis_client.set(key, "holder", px=10_000)
    assert await scripts.lease_renew(redis_client, [key], ["other", 60_000]) == 0
    assert await redis_client.pttl(key) <= 10_000
    assert await scripts.lease_release(redis_client, [key], ["other"]) == 0
    assert await scripts.lease_renew(redis_client, [key], ["holder", 60_000]) == 1
    assert await redis_client.pttl(key) > 10_000
    assert await scripts.lease_release(redis_client, [key], ["holder"]) == 1
    assert await redis_client.exists(key) == 0


def test_a_renew_interval_over_half_the_ttl_is_refused(redis_client, key_prefix):
    with pytest.raises(LeaseSettingsError, match="TRIGGERS_LEASE_RENEW_INTERVAL_MS"):
        Lease(redis_client, "k", Scripts(), ttl_ms=1000, renew_interval_ms=600)
