"""The processes the benchmark measures, each started by it as `python -m svc.bench.worker`.

- `service`: the real service (svc/service.py), with telemetry set up as `svc run` does;
- `ceiling`: a bare nats-py loop that fetches and acks the events stream, nothing else;
- `pull-ceiling`: the same loop fetching with the service's PullSource (svc/bus/pull.py).

Each answers requests on a control subject (core NATS, its own connection): `stats` returns
its counters as JSON, `stop` stops it. The counters are read in the process itself, so the
benchmark gets CPU time, events handled and Redis round trips from one consistent moment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import orjson
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from svc.bus.pull import PullSource
from svc.config import Settings

logger = logging.getLogger(__name__)

STATS = b"stats"
STOP = b"stop"


@dataclass
class PeriodicRun:
    """One run of the service's periodic loop (periodic, then proactive evaluation)."""

    started: float  # wall clock, seconds
    duration_s: float = 0.0
    round_trips: int = 0
    firings: int = 0


@dataclass
class Probe:
    """What the service worker counts beside the service's own counters."""

    firings: int = 0
    periodic: list[PeriodicRun] = field(default_factory=list)
    # garbage collections by generation: how many, and the longest pause (seconds)
    gc_counts: list[int] = field(default_factory=lambda: [0, 0, 0])
    gc_max_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _gc_started: float = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        generation = info["generation"]
        self.gc_counts[generation] += 1
        pause = time.perf_counter() - self._gc_started
        self.gc_max_s[generation] = max(self.gc_max_s[generation], pause)


def _process_stats() -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/statm") as statm:  # pages: size, resident, ...
        resident_pages = int(statm.read().split()[1])
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "rss_mb": resident_pages * resource.getpagesize() / 2**20,
        "wall": time.time(),
    }


async def _control(
    url: str, subject: str, stats: Callable[[], dict[str, Any]], stop: asyncio.Event
) -> nats.NATS:
    nc = await nats.connect(url, name="bench-control")

    async def answer(msg: Msg) -> None:
        if msg.data == STOP:
            stop.set()
            await msg.respond(b"{}")
        else:
            await msg.respond(orjson.dumps({**_process_stats(), **stats()}))

    await nc.subscribe(subject, cb=answer)
    return nc


async def run_service(settings: Settings, control: str) -> None:
    """Start the service as `svc run` does, count what the benchmark needs, stop on request."""
    from svc.service import Service
    from svc.telemetry import configure_telemetry

    telemetry = configure_telemetry(
        service_name=settings.service_name,
        traces_exporter=settings.traces_exporter,
        metrics_exporter=settings.metrics_exporter,
        prometheus_address=settings.prometheus_address,
    )
    service = Service(settings, instruments=telemetry.instruments)
    probe = Probe()
    stop = asyncio.Event()
    started = time.perf_counter()
    await service.start()
    start_s = time.perf_counter() - started
    engine = service.engine
    assert engine is not None and service.consumer is not None
    _count_firings(engine, probe)
    _time_periodic(engine, probe)
    gc.callbacks.append(probe.on_gc)
    state = engine.state

    def stats() -> dict[str, Any]:
        consumer = service.consumer
        return {
            "start_s": start_s,
            "automations": len(engine.automations),
            "processed": consumer.processed if consumer else 0,
            "round_trips": state.round_trips,
            "firings": probe.firings,
            "admin_address": service.admin_address,
            "periodic": [vars(run) for run in probe.periodic],
            "gc_counts": probe.gc_counts,
            "gc_max_s": probe.gc_max_s,
        }

    nc = await _control(settings.nats_url or "", control, stats, stop)
    try:
        await stop.wait()
    finally:
        await service.stop()
        telemetry.shutdown()
        await nc.drain()


def _count_firings(engine: Any, probe: Probe) -> None:
    publish = engine.publisher.publish

    async def counted(automation: Any, out: Any) -> None:
        await publish(automation, out)
        probe.firings += 1

    engine.publisher.publish = counted


def _time_periodic(engine: Any, probe: Probe) -> None:
    """Time each run of the periodic loop: periodic evaluation begins it, proactive
    evaluation ends it (Service._periodic calls them in that order)."""
    periodic: Callable[[], Awaitable[None]] = engine.periodic_evaluation
    proactive: Callable[[], Awaitable[None]] = engine.evaluate_proactive_triggers
    marks: dict[str, float] = {}

    async def timed_periodic() -> None:
        marks["t0"] = time.perf_counter()
        probe.periodic.append(
            PeriodicRun(started=time.time(), round_trips=-engine.state.round_trips,
                        firings=-probe.firings)
        )
        await periodic()

    async def timed_proactive() -> None:
        try:
            await proactive()
        finally:
            if probe.periodic and "t0" in marks:
                run = probe.periodic[-1]
                run.duration_s = time.perf_counter() - marks.pop("t0")
                run.round_trips += engine.state.round_trips
                run.firings += probe.firings

    engine.periodic_evaluation = timed_periodic
    engine.evaluate_proactive_triggers = timed_proactive


@dataclass(frozen=True)
class CeilingOptions:
    nats_url: str
    stream: str
    consumer: str
    filter_subject: str
    fetch_batch: int
    max_ack_pending: int
    fetch_timeout_s: float
    pull: bool  # fetch with the service's PullSource instead of nats.py's fetch


async def run_ceiling(options: CeilingOptions, control: str) -> None:
    """The ceiling: fetch a batch, ack each message (as the service's consumer does), again.

    The issue's ceiling fetches with nats.py's `PullSubscription.fetch`; with `pull`, the
    same loop fetches with the service's own PullSource (svc/bus/pull.py), to show what of
    the service's rate comes from fetching differently."""
    nc = await nats.connect(options.nats_url, name="bench-ceiling")
    js = nc.jetstream()
    await js.add_consumer(
        options.stream,
        ConsumerConfig(
            name=options.consumer,
            durable_name=options.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            max_ack_pending=options.max_ack_pending,
            filter_subject=options.filter_subject,
        ),
    )
    subscription: Any
    if options.pull:
        subscription = await PullSource.bind(
            js, options.stream, options.consumer, expires_s=options.fetch_timeout_s
        )
    else:
        subscription = await js.pull_subscribe_bind(options.consumer, stream=options.stream)
    processed = 0
    stop = asyncio.Event()
    control_nc = await _control(options.nats_url, control, lambda: {"processed": processed}, stop)
    try:
        while not stop.is_set():
            try:
                messages = await subscription.fetch(
                    options.fetch_batch, timeout=options.fetch_timeout_s
                )
            except TimeoutError:
                continue
            for message in messages:
                await message.ack()
            processed += len(messages)
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
        await nc.drain()
        await control_nc.drain()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m svc.bench.worker")
    parser.add_argument("mode", choices=("service", "ceiling", "pull-ceiling"))
    parser.add_argument("--control", required=True, help="control subject")
    parser.add_argument("--settings", required=True, help="the service's Settings as JSON")
    parser.add_argument("--consumer", help="ceiling: its durable consumer")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings(**orjson.loads(args.settings))
    if args.mode == "service":
        asyncio.run(run_service(settings, args.control))
        return
    options = CeilingOptions(
        nats_url=settings.nats_url or "",
        stream=settings.events_stream,
        consumer=args.consumer,
        filter_subject=f"{settings.events_subject_prefix}.>",
        fetch_batch=settings.fetch_batch,
        max_ack_pending=settings.max_ack_pending,
        fetch_timeout_s=settings.fetch_timeout_s,
        pull=args.mode == "pull-ceiling",
    )
    asyncio.run(run_ceiling(options, args.control))


if __name__ == "__main__":
    main()
