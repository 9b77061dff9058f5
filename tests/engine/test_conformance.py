"""Every shared conformance scenario, in-process: fake clock, the real engine, real Redis.

The scenarios live beside the repository in ../shared/conformance (and its generated/
folder), as in CI; each one was checked against Prefect 3.9.1's own engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio

from svc.conformance import ScenarioRunner

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "conformance"
SCENARIOS = sorted(SHARED.glob("*.json")) + sorted(SHARED.glob("generated/*.json"))


def test_the_shared_scenarios_are_there() -> None:
    """Without ../shared the parametrized test below would silently run nothing."""
    assert len(SCENARIOS) >= 100, f"expected the shared scenarios in {SHARED}"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_scenario(path: Path, redis_client: redis.asyncio.Redis) -> None:
    result = await ScenarioRunner(redis_client).run_file(path)
    details = "\n".join(f.describe() for f in result.failures)
    assert result.passed, f"{result.name}: {result.error or ''}\n{details}"
