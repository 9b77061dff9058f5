"""The crash harness as a test (DESIGN "Delivery guarantees", "Scale"): thousands of events
over hundreds of automations (reactive, proactive, composite, followers) through three
replica processes while replicas are SIGKILLed at random moments and restarted, and Redis
(append-only file on) and NATS are killed and restarted. The ACTIONS stream must then hold
exactly what the in-process engine publishes for the same workload: none missing, none twice
(messages are counted, not only ids). `python -m svc crash-test` runs longer ones."""

from __future__ import annotations

from pathlib import Path

from svc.crash.harness import run_crash_test
from svc.crash.options import CrashOptions


async def test_replicas_redis_and_nats_killed_mid_run_publish_every_action_exactly_once(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    options = CrashOptions(seed=7, kills=8, redis_restarts=1, nats_restarts=1,
                           settle_timeout_s=90.0, data_dir=tmp_path)
    figures = await run_crash_test(options, say=said.append)
    report = "\n".join(said)
    assert figures.events >= 1000 and figures.automations >= 100, report
    assert figures.kills == 8 and figures.redis_restarts == 1 and figures.nats_restarts == 1
    assert figures.expected_actions > 1000, report
    assert figures.settled, report
    assert (figures.lost, figures.duplicated, figures.unexpected) == (0, 0, 0), report
    assert figures.replica_exits == 0, report
    assert figures.action_messages == figures.expected_actions, report
