"""Several replicas, one periodic leader (DESIGN "Scale"): only the holder of the lease drains
outboxes, sweeps and runs proactive evaluation, and when it stops, crashes, or its renewals
stop, another replica takes over within the lease's bound."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import pytest

from svc.config import Settings
from svc.service import Service
from tests.helpers import eventually
from tests.reliability.support import count_calls, crash
from tests.service.support import remove_names, service_settings

LEASE_TTL_MS = 1000
LEASE_RENEW_MS = 200
PERIODIC_S = 0.1
# Scheduling, round trips and a periodic round on a loaded machine, beyond the bound.
SLACK_S = 1.0
PERIODIC_WORK = ("periodic_evaluation", "evaluate_proactive_triggers")


@pytest.fixture
def settings(nats_url: str, redis_url: str, key_prefix: str) -> Settings:
    return dataclasses.replace(
        service_settings(nats_url, redis_url, key_prefix, fetch_timeout_s=0.2),
        periodic_interval_s=PERIODIC_S,
        lease_ttl_ms=LEASE_TTL_MS,
        lease_renew_interval_ms=LEASE_RENEW_MS,
    )


@pytest.fixture
async def replicas(settings: Settings):
    """Two started replicas, each with a counter of the periodic work its engine ran."""
    started: list[tuple[Service, Counter[str]]] = []
    try:
        for _ in range(2):
            service = Service(settings)
            await service.start()
            counts: Counter[str] = Counter()
            count_calls(service, counts, *PERIODIC_WORK)
            started.append((service, counts))
        yield started
    finally:
        for service, _ in started:
            if not service._stopping.is_set() and service._tasks:
                await service.stop()
        await remove_names(settings)


async def leader_of(replicas) -> tuple[int, Service, Counter[str]]:
    def one_holds() -> bool:
        return sum(s.lease.held for s, _ in replicas) == 1

    await eventually(one_holds, "one replica to hold the lease")
    (i,) = (i for i, (s, _) in enumerate(replicas) if s.lease.held)
    return i, *replicas[i]


def rounds_run(counts: Counter[str], since: Counter[str], rounds: int) -> bool:
    """Whether the replica counted by `counts` has run every kind of periodic work at least
    `rounds` more times than it had in `since`."""
    return all(counts[name] >= since[name] + rounds for name in PERIODIC_WORK)


async def test_only_the_lease_holder_runs_periodic_and_proactive_evaluation(replicas) -> None:
    i, leader, counts = await leader_of(replicas)
    follower, follower_counts = replicas[1 - i]
    before = counts.copy()
    # ten of the holder's rounds, in which the other replica, on the same timer, runs none
    await eventually(lambda: rounds_run(counts, before, 10), "ten periodic rounds on the holder")
    assert leader.lease.held and not follower.lease.held
    assert not follower_counts, follower_counts


async def takeover_after(stop, replicas, bound_s: float) -> None:
    i, leader, _ = await leader_of(replicas)
    follower, follower_counts = replicas[1 - i]
    stopped = time.monotonic()
    await stop(leader)
    await eventually(lambda: follower.lease.held, "the other replica to take the lease")
    taken = time.monotonic()
    await eventually(
        lambda: rounds_run(follower_counts, Counter(), 1),
        "the new holder to run periodic and proactive evaluation",
    )
    assert taken - stopped <= bound_s + SLACK_S


async def test_when_the_holder_stops_another_takes_over_within_one_renew_interval(
    replicas,
) -> None:
    await takeover_after(Service.stop, replicas, LEASE_RENEW_MS / 1000)


async def test_when_the_holder_crashes_another_takes_over_within_the_lease_bound(
    replicas,
) -> None:
    await takeover_after(crash, replicas, replicas[0][0].lease.takeover_bound_s)


async def test_when_the_holders_renewals_stop_it_stops_its_periodic_work_and_another_takes_over(
    replicas,
) -> None:
    """The holder stays up but cannot renew (its renew loop is stopped, as a partition from
    Redis would): it stops its periodic work at its deadline, before the other takes over."""
    i, leader, counts = await leader_of(replicas)
    follower, follower_counts = replicas[1 - i]
    (renewing,) = (t for t in leader._tasks if t.get_name() == "periodic lease")
    renewing.cancel()
    stopped = time.monotonic()
    await eventually(lambda: not leader.lease.held, "the holder to stop trusting its lease")
    after_deadline = counts.copy()
    await eventually(lambda: follower.lease.held, "the other replica to take the lease")
    assert time.monotonic() - stopped <= leader.lease.takeover_bound_s + SLACK_S
    # five of the new holder's rounds, in which the old one, on the same timer, runs none
    await eventually(
        lambda: rounds_run(follower_counts, Counter(), 5),
        "five periodic rounds on the new holder",
    )
    assert counts == after_deadline, "the old holder went on after its deadline"
