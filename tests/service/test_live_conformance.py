"""Every shared conformance scenario that is not `"live": false`, end to end: the service runs
as a process (`python -m svc run` on the session's NATS and Redis), automations go through
the admin API, events over NATS, and triggered actions are read back from the actions stream
(svc.conformance.LiveRunner). The oracle's samples run here too, where they can.

Time is real: each `advance` sleeps, so the live scenarios take about two minutes together.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from svc.conformance import LiveRunner, ScenarioRunner
from tests.service.support import (
    SHARED,
    ServiceProcess,
    service_settings,
    stopping_cleanly,
)

CONFORMANCE = SHARED / "conformance"
SAMPLES = SHARED / "oracle" / "samples"


def _live(path: Path) -> bool:
    return json.loads(path.read_text()).get("live", True) is not False


ALL_SCENARIOS = sorted(CONFORMANCE.glob("*.json")) + sorted(CONFORMANCE.glob("generated/*.json"))
SCENARIOS = [p for p in ALL_SCENARIOS if _live(p)]
ALL_SAMPLES = sorted(SAMPLES.glob("*.json"))

# Sleeping through more than this many seconds of `advance` would put the run over its time
# budget; those samples run in-process only (below), where time is a fake clock.
LIVE_ADVANCE_BUDGET_S = 5.0
# Why a sample cannot pass live, by file name.
NOT_LIVE = {
    "08_admin_raw_feedback.json": (
        "its `reset` step is Prefect's reset(), which unloads every automation until the next "
        "reconcile; live, the runner maps it to the admin API's ResetState, which deletes "
        "trigger state and keeps automations loaded, so e5 fires where Prefect's does not"
    ),
}


def _advance_s(path: Path) -> float:
    return sum(float(s.get("advance", 0)) for s in json.loads(path.read_text())["steps"])


def _sample_param(path: Path) -> object:
    reason = NOT_LIVE.get(path.name)
    if reason is None and _advance_s(path) > LIVE_ADVANCE_BUDGET_S:
        reason = (
            f"{_advance_s(path):g} s of `advance`, slept through live, is over the live run's "
            f"budget of {LIVE_ADVANCE_BUDGET_S:g} s; test_oracle_sample_in_process runs it"
        )
    marks = [pytest.mark.skip(reason=reason)] if reason else []
    return pytest.param(path, id=path.stem, marks=marks)


def _id(path: Path) -> str:
    return str(path.relative_to(CONFORMANCE).with_suffix(""))


@pytest.fixture(scope="module")
async def service(
    nats_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    """The service as a process, on names of this module's own; stopped with SIGTERM at the
    end, which it must answer with a clean exit. Its streams and keys are removed after."""
    settings = service_settings(nats_url, redis_url, f"live-{uuid.uuid4().hex[:8]}")
    async with stopping_cleanly(settings, tmp_path_factory.mktemp("live-service")) as running:
        yield running


@pytest.fixture(scope="module")
async def runner(service: ServiceProcess) -> AsyncIterator[LiveRunner]:
    async with LiveRunner(service.settings) as live:
        yield live


def test_the_shared_scenarios_are_there() -> None:
    """Without ../shared the parametrized tests below would silently run nothing."""
    assert len(ALL_SCENARIOS) >= 100, f"expected the shared scenarios in {CONFORMANCE}"
    assert len(SCENARIOS) >= 40, f"expected live scenarios among those in {CONFORMANCE}"
    assert len(ALL_SAMPLES) >= 8, f"expected the oracle's samples in {SAMPLES}"


# Live, the service's timer ticks whenever it is due, also between two steps that the
# scenario format says take no time; a few scenarios decide differently when a tick falls
# there. Such a scenario gets a second run (a new draw of where the ticks fall) before it
# fails; one that fails every time still fails. By path, with the tick that changes it.
TIMING_SENSITIVE = {
    "generated/gen-s2-0125": (
        "a periodic tick after e4 (which moves the events clock past the end of the tag-b "
        "bucket armed by e3 at -680.5) and before e5 sweeps that bucket (SEMANTICS 9), so e5 "
        "arms a new one instead of closing it and firing: the firing comes 15 s later"
    ),
}


async def _run_live(runner: LiveRunner, service: ServiceProcess, path: Path) -> None:
    result = await runner.run_file(path)
    assert result is not None, f"{path} is marked live: false"
    if not result.passed and path.is_relative_to(CONFORMANCE) and _id(path) in TIMING_SENSITIVE:
        result = await runner.run_file(path)
        assert result is not None
    details = "\n".join(f.describe() for f in result.failures)
    assert service.process.poll() is None, f"the service died\n{service.output()}"
    assert result.passed, f"{result.name}: {result.error or ''}\n{details}"


@pytest.mark.parametrize("path", SCENARIOS, ids=_id)
async def test_scenario_live(path: Path, runner: LiveRunner, service: ServiceProcess) -> None:
    await _run_live(runner, service, path)


@pytest.mark.parametrize("path", [_sample_param(p) for p in ALL_SAMPLES])
async def test_oracle_sample_live(path: Path, runner: LiveRunner, service: ServiceProcess) -> None:
    await _run_live(runner, service, path)


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: p.stem)
async def test_oracle_sample_in_process(path: Path, redis_client: redis.asyncio.Redis) -> None:
    """Every sample, in-process on a fake clock: this covers the ones too slow to run live."""
    result = await ScenarioRunner(redis_client).run_file(path)
    details = "\n".join(f.describe() for f in result.failures)
    assert result.passed, f"{result.name}: {result.error or ''}\n{details}"
