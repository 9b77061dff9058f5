"""Smoke test of the benchmark: `python -m svc bench --quick --out FILE` runs to the end.

It proves the benchmark works (issue 5/6: "a test runs `bench --quick` to prove it works"),
not how fast anything is: it asserts the exit code and the shape of the JSON figures (every
workload, the decision records on/off pair, the targets), never a timed figure against a
limit. The quick run takes about 45 s on two cores; it starts its own embedded NATS and
Redis, as `svc bench` does without NATS_URL / REDIS_URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from svc.bench.runner import DECISIONS_DEFAULT, DECISIONS_PAIR
from svc.bench.workloads import QUICK

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 280
# workloads measured against the ceiling (the same backlog drained by a bare fetch-and-ack)
WITH_CEILING = [
    *(f"no-match-{n}" for n in QUICK.no_match_automations),
    "one-match",
    DECISIONS_PAIR,
    "composite",
]
WORKLOADS = [*WITH_CEILING, "sla"]


@pytest.mark.timeout(RUN_TIMEOUT_S + 20)
def test_bench_quick_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "svc", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "triggers service benchmark" in result.stdout

    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert report["settings"]["decisions_default"] is DECISIONS_DEFAULT
    figures = {f["workload"]: f for f in report["figures"]}
    assert sorted(figures) == sorted(WORKLOADS)
    for name, f in figures.items():
        assert f["events_per_s"] is not None and f["events_per_s"] > 0, name
        assert f["cpu_us_per_event"] is not None and f["cpu_us_per_event"] > 0, name
    for name in WITH_CEILING:
        f = figures[name]
        assert f["ceiling_per_s"] is not None and f["ceiling_per_s"] > 0, name
        assert f["ratio_to_ceiling"] is not None and f["ratio_to_ceiling"] > 0, name
    assert figures["sla"]["ratio_to_ceiling"] is None
    assert figures["sla"]["ticks"] >= 1
    assert figures["sla"]["bucket_reads_per_tick"] is not None
    for name in ("one-match", "composite"):
        assert figures[name]["latency_samples"] > 0, name

    # decision records: one-match as the setting's default has them, the pair the other way
    assert figures["one-match"]["decisions_enabled"] is DECISIONS_DEFAULT
    assert figures[DECISIONS_PAIR]["decisions_enabled"] is not DECISIONS_DEFAULT
    decisions = report["decisions"]
    on, off = decisions["on"], decisions["off"]
    assert {on["workload"], off["workload"]} == {"one-match", DECISIONS_PAIR}
    assert figures[on["workload"]]["decisions_enabled"] is True
    assert figures[off["workload"]]["decisions_enabled"] is False
    for side in (on, off):
        assert side["events_per_s"] > 0 and side["cpu_us_per_event"] > 0
    assert decisions["events_per_s_change_pct"] is not None
    assert decisions["cpu_us_per_event_cost"] is not None

    targets = report["targets"]
    assert targets
    for target in targets:
        assert set(target) == {"target", "value", "limit", "unit", "met"}
    names = [t["target"] for t in targets]
    assert "one-match: events/s" in names
    assert any("decision records" in n for n in names)
    assert any(n.startswith("sla: HGETs per due bucket") for n in names)


class FailingWorker:
    """A service worker, as the runner sees it, whose batches keep failing."""

    mode = "service"

    def __init__(self) -> None:
        self.errors = 0

    async def stats(self) -> dict[str, int]:
        self.errors += 1
        return {"errors": self.errors}

    def _log_tail(self) -> str:
        return "Traceback: the handler is broken"


async def test_a_drain_gives_up_at_once_on_a_worker_whose_batches_keep_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from svc.bench import runner

    monkeypatch.setattr(runner, "STALLED_WITH_ERRORS_S", 0.0)
    monkeypatch.setattr(runner._FailureWatch, "CHECK_EVERY_S", 0.0)
    watch = runner._FailureWatch(FailingWorker())  # type: ignore[arg-type]
    await watch.check(100, "one-match")  # progress: nothing to say
    await watch.check(100, "one-match")  # stalled: the error count is taken
    with pytest.raises(runner.WorkerError, match="(?s)keep failing.*the handler is broken"):
        await watch.check(100, "one-match")  # stalled, and more errors since


async def test_a_worker_making_progress_is_not_given_up_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from svc.bench import runner

    monkeypatch.setattr(runner, "STALLED_WITH_ERRORS_S", 0.0)
    monkeypatch.setattr(runner._FailureWatch, "CHECK_EVERY_S", 0.0)
    watch = runner._FailureWatch(FailingWorker())  # type: ignore[arg-type]
    for floor in range(100, 110):  # errors, but the ack floor moves on
        await watch.check(floor, "one-match")
        await watch.check(floor, "one-match")
