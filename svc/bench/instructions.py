"""`python -m svc.bench.instructions`: instructions per event of the engine and of Redis,
counted by valgrind's callgrind, for the one-match traffic of the benchmark.

Timings on a shared machine move a lot between runs (docs/performance.md saw the same pure
Python loop take 1.4 to 2.3 s); instructions do not: the same code on the same traffic counts
the same to about 0.1 %. So each change to the hot path can say what it bought, however
small, before the benchmark, which says what the service does end to end, is run.

What it runs: the engine alone (`Engine.handle_batch`, decoding each next batch ahead as the
service does, decision records on, firings published in the background to a publisher that
keeps nothing), on a redis-server of its own, with the benchmark's one-match automations and
traffic: the warm-up that fills each bucket part way, then round-robin events, a tenth of them
firing. Both processes run under callgrind with instrumentation off; it is switched on
(`callgrind_control`) for the measured events only. NATS is not part of it: the benchmark
measures the consumer and the publisher.

Needs valgrind (callgrind_control comes with it). Slow: ~2 minutes for the default 5,000
measured events, most of it the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from svc.bench import workloads as wl
from svc.embedded import RedisServer

# Events between the warm-up and the measured ones: the buckets reach their steady state.
SETTLE_EVENTS = 20_000
BATCH = 100
STARTUP_TIMEOUT_S = 120.0
_COLLECTED = re.compile(rb"Collected : (\d+)")


class _CallgrindRedis(RedisServer):
    """The embedded redis-server, under callgrind with instrumentation off at start."""

    def __init__(self, out_file: Path) -> None:
        super().__init__(startup_timeout_s=STARTUP_TIMEOUT_S)
        self.out_file = out_file

    def _build_command(self, binary: Path) -> list[str]:
        return [*_callgrind(self.out_file), *super()._build_command(binary)]


def _callgrind(out_file: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out_file}"]  # fmt: skip


def _collected(log: bytes) -> int:
    found = _COLLECTED.findall(log)
    if not found:
        raise RuntimeError("callgrind reported no count:\n" + log.decode(errors="replace")[-2000:])
    return int(found[-1])


def measure(events: int, work_dir: Path) -> dict[str, Any]:
    """Run the engine and Redis under callgrind; their instructions for `events` events."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install valgrind)")
    redis = _CallgrindRedis(work_dir / "redis.callgrind")
    redis.start()
    try:
        engine_log = work_dir / "engine.log"
        command = [
            *_callgrind(work_dir / "engine.callgrind"), sys.executable, "-m", "svc.bench.instructions",
            "--engine", redis.url, "--events", str(events), "--redis-pid", str(redis.pid),
        ]  # fmt: skip
        # a fixed hash seed: string hashing (dicts, sets) then runs the same way every time
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        with open(engine_log, "wb") as log:
            done = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False
            )
        output = engine_log.read_bytes()
        if done.returncode != 0:
            raise RuntimeError("the engine run failed:\n" + output.decode(errors="replace")[-3000:])
        summary = json.loads(output.split(b"SUMMARY ", 1)[1].split(b"\n", 1)[0])
        redis.halt()  # SIGTERM: callgrind writes its count to the log on exit
        assert redis.log_path is not None
        redis_instructions = _collected(redis.log_path.read_bytes())
    finally:
        redis.stop()
    engine_instructions = _collected(output)
    return {
        "events": events,
        "firings": summary["firings"],
        "engine_instructions_per_event": engine_instructions / events,
        "redis_instructions_per_event": redis_instructions / events,
        "engine_instructions": engine_instructions,
        "redis_instructions": redis_instructions,
    }


# -- the engine's side, run under callgrind (`--engine`) --


class _NoPublisher:
    firings = 0

    async def publish(self, automation: Any, out: Any) -> None:
        self.firings += 1


def _instrument(pids: Sequence[int], on: bool) -> None:
    for pid in pids:
        subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(pid)],
                       check=True, capture_output=True)  # fmt: skip


async def _handle(engine: Any, bodies: list[bytes]) -> None:
    batches = [bodies[i : i + BATCH] for i in range(0, len(bodies), BATCH)]
    for k, batch in enumerate(batches):
        if k + 1 < len(batches):
            following = batches[k + 1]
            engine.meanwhile = lambda following=following: engine.decode_ahead(following)
        else:
            engine.meanwhile = None
        await engine.handle_batch(batch)
        firings = engine.take_batch_firings()
        if firings is not None:
            await firings
        engine.decisions.clear()


async def _engine_run(
    redis_url: str,
    events: int,
    redis_pid: int | None,
    *,
    workers: int = 100,
    settle: int = SETTLE_EVENTS,
    instrument: bool = True,
    key_prefix: str = "instructions",
) -> dict[str, Any]:
    """The engine's side: warm up, settle, then `events` measured events between the two
    switches of callgrind's instrumentation (of this process and Redis's, with
    `instrument`); returns how many of them fired."""
    from svc.config import Settings
    from svc.connections import redis_client
    from svc.domain.automations import parse_automation
    from svc.engine.clock import SystemClock
    from svc.engine.engine import Engine
    from svc.state.keys import Keys
    from svc.state.store import RedisState

    client = redis_client(Settings(redis_url=redis_url))
    try:
        state = RedisState(client, Keys(key_prefix))
        await state.start()
        publisher = _NoPublisher()
        engine = Engine(state, publisher, SystemClock())
        engine.record_decisions = True
        engine.publish_in_background = True
        traffic = wl.Traffic(automations=100, workers=workers)
        namespace = uuid.UUID(int=0)
        await engine.load_many([
            parse_automation({**wl.one_match_automation(i), "id": str(uuid.uuid5(namespace, str(i)))})
            for i in range(traffic.automations)
        ])  # fmt: skip
        now = datetime.now(UTC)
        warm = [orjson.dumps(traffic.bucket_event(b, now)) for b in traffic.warm_up()]
        steady = [orjson.dumps(traffic.event(i, now)) for i in range(settle + events)]
        await _handle(engine, warm + steady[:settle])
        measured = steady[settle:]
        before = publisher.firings
        pids = [os.getpid(), *([] if redis_pid is None else [redis_pid])] if instrument else []
        _instrument(pids, on=True)
        await _handle(engine, measured)
        _instrument(pids, on=False)
        return {"firings": publisher.firings - before}
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m svc.bench.instructions", description=(
        "instructions per one-match event of the engine and of Redis (valgrind's callgrind)"
    ))  # fmt: skip
    parser.add_argument("--events", type=int, default=5000, help="events measured (5,000)")
    parser.add_argument("--out", metavar="FILE", help="write the figures as JSON to FILE")
    parser.add_argument("--engine", metavar="REDIS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--redis-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine:
        summary = asyncio.run(_engine_run(args.engine, args.events, args.redis_pid))
        print("SUMMARY " + json.dumps(summary), flush=True)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="triggers-instructions-") as work:
        figures = measure(args.events, Path(work))
    print(
        f"{figures['events']:,} one-match events ({figures['firings']:,} firing): "
        f"engine {figures['engine_instructions_per_event']:,.0f}, "
        f"Redis {figures['redis_instructions_per_event']:,.0f} instructions per event"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
