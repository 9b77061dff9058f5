"""Scenarios from differential testing against Prefect 3.9.1's own engine (the oracle in
../shared/oracle): `scenarios/NNN-*.json` record what Prefect does where we once differed;
`scenarios/difftest/` is a sample of random scenarios (automations, timelines, admin steps)
whose expectations were recorded from Prefect, chosen to cover each mix of features."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio

from svc.conformance import ScenarioRunner

SCENARIOS = sorted((Path(__file__).parent / "scenarios").rglob("*.json"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_regression_scenario(path: Path, redis_client: redis.asyncio.Redis) -> None:
    result = await ScenarioRunner(redis_client).run_file(path)
    details = "\n".join(f.describe() for f in result.failures)
    assert result.passed, f"{result.name}: {result.error or ''}\n{details}"
