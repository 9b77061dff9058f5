"""`python -m svc.bench.instructions` counts instructions under valgrind, too slow for the
suite; its engine side runs here on small traffic, uninstrumented, to prove it works."""

from __future__ import annotations

import redis.asyncio

from svc.bench.instructions import _engine_run


async def test_the_engine_side_runs_the_one_match_traffic_and_counts_its_firings(
    redis_url: str, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """(`redis_client` deletes what it leaves under `key_prefix`.)"""
    # 100 automations x 2 workers: every bucket gets 10 events in 2,000, so each fires once
    summary = await _engine_run(
        redis_url, 2_000, None, workers=2, settle=400, instrument=False, key_prefix=key_prefix
    )
    assert summary == {"firings": 200}
