"""The processes the benchmark measures, each started by it as `python -m svc.bench.worker`.

- `service`: the real service (svc/service.py), with telemetry set up as `svc run` does;
- `ceiling`: a bare nats-py loop that fetches and acks the events stream, nothing else;
- `pull-ceiling`: the same loop fetching with the service's PullSource (svc/bus/pull.py).

Each answers requests on a control subject (core NATS, its own connection): `stats` returns
its counters as JSON, `stop` stops it. The counters are read in the process itself, so the
benchmark gets CPU time, events handled and Redis round trips from one consistent moment.

Each also keeps a `Timeline`: after every batch it acked, the time, the stream sequence of
the batch's last message, the messages processed so far and its CPU time. `span FIRST LAST`
returns the marks of the batches that first reached FIRST and LAST: the benchmark times a
backlog between them, to the batch, however short it is (the ack floor, polled, would add up
to a poll interval at each end, and miss the start when the backlog drains faster than that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import resource
import time
from collections import deque
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
SPAN = b"span"
# Batches a timeline remembers: far more than the largest backlog has (150,000 events in
# batches of 100), few enough to stay small whatever runs after the backlog.
TIMELINE_BATCHES = 100_000


class Timeline:
    """One mark per acked batch: (perf_counter s, last stream sequence, processed, CPU s)."""

    def __init__(self) -> None:
        self.marks: deque[tuple[float, int, int, float]] = deque(maxlen=TIMELINE_BATCHES)

    def mark(self, last_sequence: int, processed: int) -> None:
        self.marks.append((time.perf_counter(), last_sequence, processed, time.process_time()))

    def span(self, first: int, last: int) -> dict[str, Any]:
        """The marks of the first batches whose last sequence reached `first` and `last`."""
        start = end = None
        for mark in self.marks:
            if start is None and mark[1] >= first:
                start = mark
            if mark[1] >= last:
                end = mark
                break
        return {"start": start, "end": end}


@dataclass
class PeriodicRun:
    """One run of the service's periodic loop (periodic, then proactive evaluation)."""

    started: float  # wall clock, seconds
    duration_s: float = 0.0
    round_trips: int = 0
    firings: int = 0
    # HGETs Redis served while proactive-7 evaluated the due buckets (with
    # --count-bucket-reads): the bucket reads alone, not the events clock's HGETs
    bucket_reads: int | None = None
    probe_s: float = 0.0  # time the bucket-read count took, left out of duration_s


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
    url: str,
    subject: str,
    stats: Callable[[], dict[str, Any]],
    stop: asyncio.Event,
    timeline: Timeline,
) -> nats.NATS:
    nc = await nats.connect(url, name="bench-control")

    async def answer(msg: Msg) -> None:
        if msg.data == STOP:
            stop.set()
            await msg.respond(b"{}")
        elif msg.data.startswith(SPAN):
            first, last = (int(n) for n in msg.data.split()[1:3])
            await msg.respond(orjson.dumps(timeline.span(first, last)))
        else:
            await msg.respond(orjson.dumps({**_process_stats(), **stats()}))

    await nc.subscribe(subject, cb=answer)
    return nc


async def run_service(settings: Settings, control: str, count_bucket_reads: bool = False) -> None:
    """Start the service as `svc run` does, count what the benchmark needs, stop on request.

    With `count_bucket_reads`, each proactive evaluation also counts the HGETs Redis served
    while its scripts ran (two INFO commandstats per run, their time left out of the run's)."""
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
    timeline = Timeline()
    _mark_batches(service.consumer, timeline)
    _count_firings(engine, probe)
    _time_periodic(engine, probe)
    counter = None
    if count_bucket_reads:
        from redis.asyncio import Redis

        counter = Redis.from_url(settings.redis_url or "")
        _count_bucket_reads(engine, probe, counter)
    gc.callbacks.append(probe.on_gc)
    state = engine.state

    def stats() -> dict[str, Any]:
        consumer = service.consumer
        return {
            "start_s": start_s,
            "automations": len(engine.automations),
            "processed": consumer.processed if consumer else 0,
            # failed batches and fetches: the runner gives up early when they keep coming
            "errors": consumer.errors if consumer else 0,
            "round_trips": state.round_trips,
            "firings": probe.firings,
            "admin_address": service.admin_address,
            "periodic": [vars(run) for run in probe.periodic],
            "gc_counts": probe.gc_counts,
            "gc_max_s": probe.gc_max_s,
        }

    nc = await _control(settings.nats_url or "", control, stats, stop, timeline)
    try:
        await stop.wait()
    finally:
        await service.stop()
        telemetry.shutdown()
        await nc.drain()
        if counter is not None:
            await counter.aclose()


def _mark_batches(consumer: Any, timeline: Timeline) -> None:
    """A timeline mark after each batch the consumer handled and acked."""
    handle_batch: Callable[..., Awaitable[None]] = consumer._handle_batch

    async def marked(messages: list[Msg], *rest: Any) -> None:
        await handle_batch(messages, *rest)
        timeline.mark(messages[-1].metadata.sequence.stream, consumer.processed)

    consumer._handle_batch = marked


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
                run.duration_s = time.perf_counter() - marks.pop("t0") - run.probe_s
                run.round_trips += engine.state.round_trips
                run.firings += probe.firings

    engine.periodic_evaluation = timed_periodic
    engine.evaluate_proactive_triggers = timed_proactive


def _count_bucket_reads(engine: Any, probe: Probe, redis: Any) -> None:
    """Count the HGETs of each run's proactive scripts: Redis's HGET calls just before and
    just after Engine._evaluate_proactive, which sends them once the events clock was read
    (clock-1 reads it with two HGETs of its own). The service's lock keeps event batches
    out meanwhile; the time of the two INFO requests is taken off the run's duration."""
    evaluate: Callable[[int, int], Awaitable[None]] = engine._evaluate_proactive

    async def hgets() -> int:
        stats = await redis.info("commandstats")
        return int((stats.get("cmdstat_hget") or {}).get("calls", 0))

    async def counted(now_us: int, as_of_us: int) -> None:
        probing = time.perf_counter()
        before = await hgets()
        probe_s = time.perf_counter() - probing
        try:
            await evaluate(now_us, as_of_us)
        finally:
            probing = time.perf_counter()
            after = await hgets()
            probe_s += time.perf_counter() - probing
            if probe.periodic:
                run = probe.periodic[-1]
                run.bucket_reads = (run.bucket_reads or 0) + after - before
                run.probe_s += probe_s

    engine._evaluate_proactive = counted


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
    timeline = Timeline()
    control_nc = await _control(
        options.nats_url, control, lambda: {"processed": processed}, stop, timeline
    )
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
            if messages:
                timeline.mark(messages[-1].metadata.sequence.stream, processed)
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
    parser.add_argument(
        "--count-bucket-reads",
        action="store_true",
        help="service: count the HGETs of each proactive evaluation's scripts",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings(**orjson.loads(args.settings))
    if args.mode == "service":
        asyncio.run(run_service(settings, args.control, args.count_bucket_reads))
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
