"""Runs the benchmark's workloads against the real service and its ceiling, and reports.

For each workload, with its own streams, KV bucket and Redis key prefix:

1. the automations are written to the KV bucket in bulk (as `put_many` does), then the
   events are published ahead (a backlog: warm-up events, then the measured ones);
2. the ceiling drains that backlog: a bare fetch-and-ack loop on its own durable consumer;
3. the service starts (loading every automation from the KV bucket: the start figure) and
   drains the same backlog on its durable consumer. The bench polls the consumers' ack floors
   to know when a backlog is drained; rates are timed by the workers themselves, from the
   acked batch that reached the end of the warm-up to the one that reached the end of the
   backlog (worker.Timeline), so both sides are measured over the same stretch of the stream
   in the same way, to the batch, start-up and polling left out;
4. where the workload has actions, events are then sent at half the service's rate and each
   triggered action's arrival is matched to its event's send time (event-to-action latency).

Every workload runs with decision records as the setting's default has them (on), and
one-match runs a second time with them off (`one-match-no-decisions`, no latency phase, the
ceiling of one-match): the pair is the records' cost.

The service and the ceiling run as their own processes (svc/bench/worker.py), so their CPU
time, peak RSS and Redis round trips are theirs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from svc.bench import workloads as wl
from svc.bench.workloads import Sizes, Traffic
from svc.bus.automations import AutomationStore
from svc.bus.streams import desired_streams, ensure_streams
from svc.client import AdminClient, event_subject
from svc.config import Settings
from svc.domain.automations import parse_automation
from svc.embedded import _die_with_parent_hook

# How often the consumers' ack floors are sampled while a backlog drains.
POLL_INTERVAL_S = 0.05
# Async publishes in flight at once while a backlog is written.
PUBLISH_WINDOW = 2_000
# How long a worker may take to start (loading 100,000 automations included) or stop.
WORKER_START_TIMEOUT_S = 300.0
WORKER_STOP_TIMEOUT_S = 60.0
# How long a backlog may take to drain before the workload is abandoned.
DRAIN_TIMEOUT_S = 600.0
# A service worker whose batches keep failing, with no progress this long, is given up on
# at once rather than after DRAIN_TIMEOUT_S (its log says why).
STALLED_WITH_ERRORS_S = 30.0
# The sla workload's first slice comes due this long after its running events are built,
# plus the time to open its buckets at the rate below (a low estimate, so rarely late).
SLA_LEAD_S = 5.0
SLA_EXPECTED_OPEN_RATE = 4_000
# After the last latency event is acked, how long late actions are still collected.
LATENCY_SETTLE_S = 2.0
# Decision records (the `decisions_enabled` setting): every workload runs with the default;
# one-match runs a second time with the other value, under this name.
DECISIONS_DEFAULT: bool = next(
    f.default for f in dataclasses.fields(Settings) if f.name == "decisions_enabled"
)
DECISIONS_PAIR = "one-match-no-decisions" if DECISIONS_DEFAULT else "one-match-decisions"




class _FailureWatch:
    """Gives up on a service worker whose batches keep failing while its ack floor stays
    put (a broken build, a dependency it cannot reach): a WorkerError with its log at once,
    rather than the drain timeout's wait."""

    CHECK_EVERY_S = 2.0

    def __init__(self, worker: Worker):
        self.worker = worker
        self.floor = -1
        self.since = time.monotonic()
        self.errors_then: int | None = None
        self.checked = 0.0

    async def check(self, floor: int, label: str) -> None:
        now = time.monotonic()
        if floor != self.floor:
            self.floor, self.since, self.errors_then = floor, now, None
            return
        if self.worker.mode != "service" or now - self.checked < self.CHECK_EVERY_S:
            return
        self.checked = now
        try:
            errors = int((await self.worker.stats()).get("errors", 0))
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return  # a busy worker answers late; the drain timeout still bounds the wait
        if self.errors_then is None:
            self.errors_then = errors
        elif errors > self.errors_then and now - self.since >= STALLED_WITH_ERRORS_S:
            raise WorkerError(
                f"{label}: the service's batches keep failing ({errors - self.errors_then} "
                f"failed, no progress for {now - self.since:.0f} s):\n{self.worker._log_tail()}"
            )

@contextlib.contextmanager
def _no_collections() -> Iterator[None]:
    """No cyclic garbage collection in this process meanwhile. The load generator's heap
    holds what earlier phases built: a full collection took ~60 ms every ~4 s, and the
    events it held back meanwhile then reached the service in a burst, which measured the
    generator's pauses, not the service (docs/performance.md, "Latency")."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

@dataclass
class Figures:
    """What one workload measured; None where it does not apply."""

    workload: str
    automations: int
    decisions_enabled: bool = DECISIONS_DEFAULT  # decision records on (the setting)
    events: int = 0
    events_per_s: float | None = None
    ceiling_per_s: float | None = None  # the issue's: nats.py's fetch, then ack each
    ceiling_from: str | None = None  # the workload whose ceilings these are, when another's
    ratio_to_ceiling: float | None = None
    pull_ceiling_per_s: float | None = None  # the same loop fetching as the service does
    latency_rate_per_s: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    latency_samples: int = 0
    round_trips_per_event: float | None = None
    cpu_us_per_event: float | None = None
    ceiling_cpu_us_per_event: float | None = None
    nats_cpu_us_per_event: float | None = None  # the embedded servers' (None: not embedded)
    redis_cpu_us_per_event: float | None = None
    firings_per_event: float | None = None
    periodic_max_s: float | None = None  # the slowest periodic run while it was measured
    periodic_mean_s: float | None = None
    # the service's garbage collections by generation (0, 1, 2) and their longest pauses
    gc_collections: list[int] | None = None
    gc_max_pause_ms: list[float] | None = None
    peak_rss_mb: float | None = None
    rss_after_start_mb: float | None = None  # resident once every automation is loaded
    start_s: float | None = None  # service start, loading every automation from KV
    kv_write_s: float | None = None  # bulk write of the automations into the KV bucket
    admin_api_loads_per_s: float | None = None
    # sla only
    ticks: int = 0
    tick_max_s: float | None = None
    tick_mean_s: float | None = None
    due_per_tick: float | None = None
    # HGETs of the proactive scripts (bucket reads); all HGETs, the events clock's included
    bucket_reads_per_tick: float | None = None
    hgets_per_tick: float | None = None
    open_buckets: int = 0


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    quick: bool
    figures: list[Figures] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    # one-match with decision records on and off, and the difference (decisions_cost())
    decisions: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- processes --


def _proc_cpu_s(pid: int | None) -> float | None:
    """utime + stime of a process, from /proc (None where it cannot be read)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class WorkerError(RuntimeError):
    """A benchmark worker process did not start, answer or stop."""


class Worker:
    """One `python -m svc.bench.worker` process and its control subject."""

    def __init__(
        self,
        nc: NATS,
        mode: str,
        settings: Settings,
        log_dir: Path,
        name: str,
        extra_args: Iterable[str] = (),
    ):
        self.nc = nc
        self.mode = mode
        self.control = f"_bench.{uuid.uuid4().hex}"
        self.log_path = log_dir / f"{name}.log"
        command = [
            sys.executable, "-m", "svc.bench.worker", mode,
            "--control", self.control,
            "--settings", orjson.dumps(dataclasses.asdict(settings)).decode(),
        ]  # fmt: skip
        if mode != "service":
            command += ["--consumer", "bench-ceiling"]
        command += list(extra_args)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent_hook(),
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def _log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-30:])

    async def stats(self, timeout_s: float = 10.0) -> dict[str, Any]:
        reply = await self.nc.request(self.control, b"stats", timeout=timeout_s)
        return orjson.loads(reply.data)

    async def span(self, first: int, last: int, timeout_s: float = 10.0) -> dict[str, Any]:
        """The worker's timeline marks of the batches that reached `first` and `last`."""
        reply = await self.nc.request(self.control, f"span {first} {last}".encode(),
                                      timeout=timeout_s)
        return orjson.loads(reply.data)

    async def wait_ready(self, timeout_s: float = WORKER_START_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise WorkerError(
                    f"the {self.mode} worker exited with code {self.process.returncode}:\n"
                    + self._log_tail()
                )
            try:
                return await self.stats(timeout_s=0.5)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                await asyncio.sleep(0.1)
        raise WorkerError(f"the {self.mode} worker did not answer within {timeout_s:g} s")

    async def stop(self) -> float | None:
        """Stop the worker; returns its peak RSS in MB."""
        peak = _proc_peak_rss_mb(self.pid)
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self.nc.request(self.control, b"stop", timeout=5)
        try:
            await asyncio.to_thread(self.process.wait, WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return peak


# -- the benchmark --


def _rate(count: float, seconds: float) -> float | None:
    return count / seconds if seconds > 0 and count > 0 else None


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class Drain:
    """One backlog drained by a consumer.

    `seconds` and `events` are timed by the worker, from the batch that reached the end of
    the warm-up to the one that reached the end of the backlog (`timed` "batches"); when its
    timeline lacks them, between the bench's first samples of the ack floor at or past each
    (`timed` "polls"). The other figures come from the bench's samples: the worker's
    counters (`first`, `last`) and the servers' CPU time, over `polled_events`."""

    seconds: float
    events: int
    first: dict[str, Any]
    last: dict[str, Any]
    servers_cpu_s: dict[str, float]  # CPU seconds of each embedded server over the samples
    polled_events: int = 0  # the ack floor's advance between the samples
    cpu_s_per_event: float | None = None  # the worker's, over the timed batches
    timed: str = "polls"

    @property
    def rate(self) -> float | None:
        return _rate(self.events, self.seconds)

    def per_event(self, key: str) -> float | None:
        if key == "cpu_s" and self.cpu_s_per_event is not None:
            return self.cpu_s_per_event
        processed = self.last.get("processed", 0) - self.first.get("processed", 0)
        if key not in self.first or processed <= 0:
            return None
        return (self.last[key] - self.first[key]) / processed

    def timed_by_batches(self, span: dict[str, Any]) -> None:
        """Time the drain by the worker's marks (worker.Timeline.span), when it has two."""
        start, end = span.get("start"), span.get("end")
        if not start or not end or end[1] <= start[1] or end[0] <= start[0]:
            return
        self.seconds = end[0] - start[0]
        self.events = end[1] - start[1]
        processed = end[2] - start[2]
        self.cpu_s_per_event = (end[3] - start[3]) / processed if processed > 0 else None
        self.timed = "batches"


class Bench:
    """Runs workloads one after the other on one NATS and one Redis."""

    def __init__(
        self,
        settings: Settings,
        sizes: Sizes,
        console: Console,
        server_pids: Mapping[str, int] | None = None,
    ):
        self.base = settings
        self.sizes = sizes
        self.console = console
        self.server_pids = dict(server_pids or {})
        self.run_id = uuid.uuid4().hex[:6]
        self._log_dir = tempfile.TemporaryDirectory(prefix="triggers-bench-")
        self.log_dir = Path(self._log_dir.name)
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.redis: Redis | None = None

    async def __aenter__(self) -> Bench:
        self.nc = await nats.connect(self.base.nats_url, name="bench")
        self.js = self.nc.jetstream(timeout=30)
        self.redis = Redis.from_url(self.base.redis_url or "")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.nc is not None:
            await self.nc.drain()
        if self.redis is not None:
            await self.redis.aclose()
        self._log_dir.cleanup()

    # -- helpers --

    def say(self, workload: str, text: str) -> None:
        self.console.log(f"[bold]{workload}[/bold] {text}")

    def settings_for(self, slug: str, **changes: Any) -> Settings:
        """The workload's own streams, bucket and key prefix; decision records as the
        setting's default has them, unless `changes` says otherwise."""
        changes.setdefault("decisions_enabled", DECISIONS_DEFAULT)
        return dataclasses.replace(
            self.base.named_apart(f"bench-{self.run_id}-{slug}"),
            grpc_address="127.0.0.1:0",
            **changes,
        )

    @contextlib.asynccontextmanager
    async def streams(self, settings: Settings) -> AsyncIterator[None]:
        """The workload's streams and bucket, deleted afterwards with its Redis keys."""
        assert self.js is not None and self.redis is not None
        await ensure_streams(self.js, settings)
        try:
            yield
        finally:
            for stream in desired_streams(settings):
                with contextlib.suppress(NotFoundError):
                    await self.js.delete_stream(stream.name)
            batch = []
            async for key in self.redis.scan_iter(match=f"{settings.key_prefix}:*", count=5000):
                batch.append(key)
                if len(batch) >= 5000:
                    await self.redis.unlink(*batch)
                    batch = []
            if batch:
                await self.redis.unlink(*batch)

    async def write_automations(
        self, settings: Settings, documents: Iterable[dict[str, Any]], total: int, name: str
    ) -> float:
        """Write automations straight into the KV bucket; returns the seconds it took."""
        assert self.js is not None
        store = AutomationStore(self.js, settings)
        started = time.perf_counter()
        with self._bar(f"{name}: write automations", total) as advance:
            await store.put_many((parse_automation(d) for d in documents), on_progress=advance)
        return time.perf_counter() - started

    async def publish(
        self, settings: Settings, events: Iterable[dict[str, Any]], total: int, label: str
    ) -> int:
        """Publish events (awaiting every acknowledgement); returns the last stream sequence."""
        assert self.js is not None
        pending: list[asyncio.Future[Any]] = []
        last = 0
        with self._bar(label, total) as advance:
            for event in events:
                subject = event_subject(settings, event["event"])
                pending.append(await self.js.publish_async(subject, orjson.dumps(event)))
                if len(pending) >= PUBLISH_WINDOW:
                    last = max(last, *(a.seq for a in await asyncio.gather(*pending)))
                    advance(len(pending))
                    pending = []
            if pending:
                last = max(last, *(a.seq for a in await asyncio.gather(*pending)))
                advance(len(pending))
        return last

    @contextlib.contextmanager
    def _bar(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            task = progress.add_task(label, total=total)
            yield lambda n: progress.advance(task, n)

    async def ack_floor(self, settings: Settings, consumer: str) -> int:
        assert self.js is not None
        try:
            info = await self.js.consumer_info(settings.events_stream, consumer)
        except NotFoundError:
            return 0
        return info.ack_floor.stream_seq if info.ack_floor else 0

    async def caught_up(self, settings: Settings) -> None:
        """Wait until the service acked everything in its stream, the events its firings
        published back (state-change events) included, and nothing more is coming."""
        assert self.js is not None
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        settled = 0
        while settled < 3:
            if time.monotonic() > deadline:
                raise WorkerError("the service did not catch up with its events stream in time")
            info = await self.js.stream_info(settings.events_stream)
            floor = await self.ack_floor(settings, settings.consumer_name)
            settled = settled + 1 if floor >= info.state.last_seq else 0
            await asyncio.sleep(POLL_INTERVAL_S * 2)

    async def drain(
        self, settings: Settings, worker: Worker, consumer: str, first: int, last: int, label: str
    ) -> Drain:
        """Wait until the consumer acked `last`; measure from `first` (the end of the warm-up)
        to `last`, between the first samples of its ack floor at or past each."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        start: tuple[float, int, dict[str, Any], float | None] | None = None
        watch = _FailureWatch(worker)
        with self._bar(label, last - first) as advance:
            shown = first
            while time.monotonic() < deadline:
                floor = await self.ack_floor(settings, consumer)
                await watch.check(floor, label)
                now = time.perf_counter()
                if floor >= first and start is None:
                    start = (now, floor, await worker.stats(), self._servers_cpu())
                if floor > shown:
                    advance(floor - shown)
                    shown = floor
                if floor >= last and start is not None:
                    stats = await worker.stats()
                    t0, floor0, stats0, servers0 = start
                    servers1 = self._servers_cpu()
                    servers = {k: servers1[k] - servers0[k] for k in servers0.keys() & servers1}
                    drain = Drain(now - t0, floor - floor0, stats0, stats, servers,
                                  polled_events=floor - floor0)
                    drain.timed_by_batches(await worker.span(first, last))
                    return drain
                if worker.process.poll() is not None:
                    raise WorkerError(f"the {worker.mode} worker exited:\n{worker._log_tail()}")
                await asyncio.sleep(POLL_INTERVAL_S)
        raise WorkerError(f"{label}: the backlog did not drain within {DRAIN_TIMEOUT_S:g} s")

    def _servers_cpu(self) -> dict[str, float]:
        """CPU seconds so far of each embedded server, by name."""
        found = {name: _proc_cpu_s(pid) for name, pid in self.server_pids.items()}
        return {name: cpu for name, cpu in found.items() if cpu is not None}

    async def ceiling(
        self, settings: Settings, first: int, last: int, name: str, mode: str = "ceiling"
    ) -> Drain:
        assert self.nc is not None
        worker = Worker(self.nc, mode, settings, self.log_dir, f"{name}-{mode}")
        try:
            await worker.wait_ready()
            return await self.drain(settings, worker, "bench-ceiling", first, last,
                                    f"{name}: {mode}")
        finally:
            await worker.stop()
            assert self.js is not None
            with contextlib.suppress(NotFoundError):
                await self.js.delete_consumer(settings.events_stream, "bench-ceiling")

    async def latency(
        self,
        settings: Settings,
        worker: Worker,
        make_event: Callable[[int, int], dict[str, Any]],
        rate: float,
        name: str,
    ) -> tuple[list[float], float]:
        """Send events at `rate` for the configured time; returns the event-to-action
        latencies (ms) of the actions they triggered, and the rate achieved."""
        assert self.nc is not None and self.js is not None
        latencies: list[float] = []

        async def on_action(msg: Any) -> None:
            action = orjson.loads(msg.data)
            sent = ((action.get("triggering_event") or {}).get("payload") or {}).get("sent_ns")
            if sent is not None:
                latencies.append((time.time_ns() - sent) / 1e6)

        subscription = await self.nc.subscribe(
            f"{settings.actions_subject_prefix}.>", cb=on_action
        )
        with _no_collections():
            try:
                achieved = await self._send_for_latency(settings, make_event, rate, name)
            finally:
                await subscription.unsubscribe()
        return latencies, achieved

    async def _send_for_latency(
        self,
        settings: Settings,
        make_event: Callable[[int, int], dict[str, Any]],
        rate: float,
        name: str,
    ) -> float:
        """Send the latency events; return once the service acked them all and the actions
        had time to arrive; the rate achieved.

        They go out as core NATS publishes (the events stream stores them all the same),
        not as JetStream publishes that each wait for an acknowledgement: nats.py makes each
        of those a future, a timer and an inbox reply, and this process and NATS then took
        more of the two cores the service shares with them (~90 us of this process's CPU
        per event, and NATS twice its drain share): what is measured is the service, not
        the load generator's publishing (docs/performance.md, "Latency")."""
        assert self.nc is not None and self.js is not None
        duration_s = self.sizes.latency_s
        sent = 0
        started = time.monotonic()
        with self._bar(f"{name}: latency at {rate:,.0f}/s", int(rate * duration_s)) as advance:
            while (elapsed := time.monotonic() - started) < duration_s:
                due = int(elapsed * rate) - sent
                for _ in range(due):
                    event = make_event(sent, time.time_ns())
                    subject = event_subject(settings, event["event"])
                    await self.nc.publish(subject, orjson.dumps(event))
                    sent += 1
                advance(due)
                await asyncio.sleep(0.001)
        # the last one waits for its acknowledgement: the stream stores one connection's
        # messages in order, so every event sent before it is stored by then
        event = make_event(sent, time.time_ns())
        subject = event_subject(settings, event["event"])
        last = (await self.js.publish(subject, orjson.dumps(event))).seq
        sent += 1
        achieved = sent / (time.monotonic() - started)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while await self.ack_floor(settings, settings.consumer_name) < last:
            if time.monotonic() > deadline:
                raise WorkerError(f"{name}: latency events were not acked in time")
            await asyncio.sleep(POLL_INTERVAL_S)
        await asyncio.sleep(LATENCY_SETTLE_S)
        return achieved

    def _service_figures(self, figures: Figures, drain: Drain, ceiling: Drain | None) -> None:
        figures.events = drain.events
        figures.events_per_s = drain.rate
        figures.round_trips_per_event = drain.per_event("round_trips")
        cpu = drain.per_event("cpu_s")
        figures.cpu_us_per_event = None if cpu is None else cpu * 1e6
        figures.firings_per_event = drain.per_event("firings")
        if drain.polled_events:
            for name, cpu_s in drain.servers_cpu_s.items():
                setattr(figures, f"{name}_cpu_us_per_event", cpu_s / drain.polled_events * 1e6)
        if ceiling is not None:
            figures.ceiling_per_s = ceiling.rate
            cpu = ceiling.per_event("cpu_s")
            figures.ceiling_cpu_us_per_event = None if cpu is None else cpu * 1e6
        if figures.ceiling_per_s and drain.rate:
            figures.ratio_to_ceiling = drain.rate / figures.ceiling_per_s

    @staticmethod
    def _periodic_figures(figures: Figures, runs: list[dict[str, Any]]) -> None:
        durations = [r["duration_s"] for r in runs if r["duration_s"] > 0]
        if durations:
            figures.periodic_max_s = max(durations)
            figures.periodic_mean_s = sum(durations) / len(durations)

    @staticmethod
    def _latency_figures(figures: Figures, latencies: list[float], rate: float) -> None:
        figures.latency_rate_per_s = rate
        figures.latency_samples = len(latencies)
        if latencies:
            ordered = sorted(latencies)
            figures.latency_p50_ms = _percentile(ordered, 0.50)
            figures.latency_p99_ms = _percentile(ordered, 0.99)
            figures.latency_max_ms = ordered[-1]

    # -- workloads --

    async def backlog_workload(
        self,
        name: str,
        documents: Callable[[], Iterable[dict[str, Any]]],
        automations: int,
        warm_up: Callable[[], Iterable[dict[str, Any]]],
        warm_up_count: int,
        backlog: Callable[[], Iterable[dict[str, Any]]],
        latency_event: Callable[[int, int], dict[str, Any]] | None,
        latency_warm_up: Callable[[], list[dict[str, Any]]] | None = None,
        admin_loads: int = 0,
        decisions_enabled: bool = DECISIONS_DEFAULT,
        ceiling_of: Figures | None = None,
    ) -> Figures:
        """The shape shared by no-match, one-match and composite (see the module docstring).
        With `ceiling_of`, the ceilings are that workload's (the same backlog), not measured
        again."""
        assert self.nc is not None
        settings = self.settings_for(name, decisions_enabled=decisions_enabled)
        figures = Figures(workload=name, automations=automations,
                          decisions_enabled=decisions_enabled)
        async with self.streams(settings):
            self.say(name, f"writing {automations:,} automations to the KV bucket")
            figures.kv_write_s = await self.write_automations(
                settings, documents(), automations, name
            )
            first = await self.publish(settings, warm_up(), warm_up_count, f"{name}: warm-up")
            last = await self.publish(settings, backlog(), self.sizes.events, f"{name}: backlog")
            ceiling = None
            if ceiling_of is None:
                self.say(name, f"measuring the ceiling over {last - first:,} events")
                ceiling = await self.ceiling(settings, first, last, name)
                pull_ceiling = await self.ceiling(settings, first, last, name, "pull-ceiling")
                figures.pull_ceiling_per_s = pull_ceiling.rate
            else:
                figures.ceiling_from = ceiling_of.workload
                figures.ceiling_per_s = ceiling_of.ceiling_per_s
                figures.ceiling_cpu_us_per_event = ceiling_of.ceiling_cpu_us_per_event
                figures.pull_ceiling_per_s = ceiling_of.pull_ceiling_per_s
            self.say(name, "starting the service")
            worker = Worker(self.nc, "service", settings, self.log_dir, name)
            try:
                ready = await worker.wait_ready()
                figures.start_s = ready["start_s"]
                figures.rss_after_start_mb = ready["rss_mb"]
                self.say(name, f"started in {figures.start_s:.1f} s; draining the backlog")
                drain = await self.drain(settings, worker, settings.consumer_name, first, last,
                                         f"{name}: service")
                self._service_figures(figures, drain, ceiling)
                if latency_event is not None and drain.rate:
                    if latency_warm_up is not None:
                        events = latency_warm_up()
                        await self.publish(settings, events, len(events), f"{name}: warm-up")
                    await self.caught_up(settings)
                    latencies, achieved = await self.latency(
                        settings, worker, latency_event, drain.rate / 2, name
                    )
                    self._latency_figures(figures, latencies, achieved)
                if admin_loads:
                    figures.admin_api_loads_per_s = await self.admin_loads(
                        ready["admin_address"], admin_loads, automations
                    )
                final = await worker.stats()
                self._periodic_figures(figures, final["periodic"])
                figures.gc_collections = final["gc_counts"]
                figures.gc_max_pause_ms = [pause * 1e3 for pause in final["gc_max_s"]]
            finally:
                figures.peak_rss_mb = await worker.stop()
        return figures

    async def admin_loads(self, address: str, count: int, offset: int) -> float:
        """Load automations one by one through the admin API; returns loads per second."""
        async with AdminClient(address) as admin:
            started = time.perf_counter()
            for index in range(offset, offset + count):
                await admin.load(wl.no_match_automation(index))
            return count / (time.perf_counter() - started)

    async def no_match(self, automations: int, admin: bool) -> Figures:
        sizes = self.sizes
        now = wl.now()
        return await self.backlog_workload(
            f"no-match-{automations}",
            lambda: (wl.no_match_automation(i) for i in range(automations)),
            automations,
            lambda: (wl.no_match_event(i, now) for i in range(sizes.warm_up_events)),
            sizes.warm_up_events,
            lambda: (wl.no_match_event(i, now) for i in range(sizes.events)),
            None,
            admin_loads=sizes.admin_api_loads if admin else 0,
        )

    def _traffic(self) -> Traffic:
        return Traffic(self.sizes.one_match_automations, self.sizes.one_match_workers)

    async def one_match(
        self, decisions_enabled: bool = DECISIONS_DEFAULT, ceiling_of: Figures | None = None
    ) -> Figures:
        """One-match with decision records as the setting's default has them; with the
        other value, it is DECISIONS_PAIR: the same backlog, without the latency phase (the
        records' cost is the difference of rates and CPU time), with `ceiling_of`'s
        ceilings when given."""
        traffic = self._traffic()
        paired = decisions_enabled != DECISIONS_DEFAULT
        return await self._traffic_workload(
            DECISIONS_PAIR if paired else "one-match",
            lambda: (wl.one_match_automation(i) for i in range(traffic.automations)),
            traffic.automations,
            decisions_enabled=decisions_enabled,
            latency=not paired,
            ceiling_of=ceiling_of,
        )

    async def composite(self) -> Figures:
        traffic = self._traffic()
        parents = traffic.automations // 2
        return await self._traffic_workload(
            "composite", lambda: (wl.composite_automation(i) for i in range(parents)), parents
        )

    async def _traffic_workload(
        self,
        name: str,
        documents: Callable[[], Iterable[dict[str, Any]]],
        automations: int,
        decisions_enabled: bool = DECISIONS_DEFAULT,
        latency: bool = True,
        ceiling_of: Figures | None = None,
    ) -> Figures:
        traffic = self._traffic()
        warm_up = list(traffic.warm_up())
        now = wl.now()
        events = self.sizes.events
        # The latency phase has buckets of its own, warmed up just before it: those of the
        # backlog are a minute old by then (their `occurred`), and the periodic
        # sweep starts them over (SEMANTICS 9), which would leave them out of phase.
        fresh = dataclasses.replace(traffic, first_worker=traffic.workers)

        def latency_warm_up() -> list[dict[str, Any]]:
            at = wl.now()
            return [fresh.bucket_event(b, at) for b in fresh.warm_up(seed=11)]

        def latency_event(index: int, sent_ns: int) -> dict[str, Any]:
            return fresh.event(index, wl.now(), sent_ns)

        return await self.backlog_workload(
            name,
            documents,
            automations,
            lambda: (traffic.bucket_event(b, now) for b in warm_up),
            len(warm_up),
            lambda: (traffic.event(i, now) for i in range(events)),
            latency_event if latency else None,
            latency_warm_up if latency else None,
            decisions_enabled=decisions_enabled,
            ceiling_of=ceiling_of,
        )

    async def sla(self) -> Figures:
        """Open proactive buckets, a slice of them due per periodic tick (workloads.SlaPlan).

        A first service process opens the buckets (its rate is the workload's events/s);
        a second one, started on them, is measured: its periodic ticks find one slice due
        each. (A proactive trigger evaluated before its buckets existed is next evaluated
        `within` later, as in Prefect: a restarted replica evaluates it at once.)"""
        assert self.nc is not None and self.redis is not None
        sizes = self.sizes
        name = "sla"
        settings = self.settings_for(name, periodic_interval_s=sizes.sla_tick_s)
        plan = wl.SlaPlan(
            buckets=sizes.sla_buckets,
            due_per_tick=sizes.sla_due_per_tick,
            tick_s=sizes.sla_tick_s,
            lead_s=SLA_LEAD_S + sizes.sla_buckets / SLA_EXPECTED_OPEN_RATE,
            base=wl.now(),
        )
        figures = Figures(workload=name, automations=1, open_buckets=plan.buckets)
        async with self.streams(settings):
            figures.kv_write_s = await self.write_automations(
                settings, [wl.sla_automation()], 1, name
            )
            opener = Worker(self.nc, "service", settings, self.log_dir, f"{name}-open")
            try:
                await opener.wait_ready()
                self.say(name, f"opening {plan.buckets:,} proactive buckets")
                first = await self.ack_floor(settings, settings.consumer_name)
                last = await self.publish(
                    settings,
                    (plan.running_event(i) for i in range(plan.buckets)),
                    plan.buckets,
                    f"{name}: running events",
                )
                drain = await self.drain(settings, opener, settings.consumer_name, first, last,
                                         f"{name}: open buckets")
                self._service_figures(figures, drain, None)
                clock = await self.publish(settings, [plan.clock_event()], 1, f"{name}: clock")
                while await self.ack_floor(settings, settings.consumer_name) < clock:
                    await asyncio.sleep(POLL_INTERVAL_S)
            finally:
                await opener.stop()
            worker = Worker(self.nc, "service", settings, self.log_dir, name,
                            extra_args=["--count-bucket-reads"])
            try:
                ready = await worker.wait_ready()
                figures.start_s = ready["start_s"]
                # ticks that find only their own slice: from the first due slice, and not
                # the first tick of the process (it takes what came due while starting)
                first_due = plan.due_at(0).timestamp()
                measured_from = max(first_due, time.time() + plan.tick_s / 2)
                self.say(name, f"measuring {sizes.sla_ticks} periodic ticks")
                await asyncio.sleep(max(0.0, measured_from - time.time()))
                before = await self.redis.info("commandstats")
                await asyncio.sleep(sizes.sla_ticks * plan.tick_s + plan.tick_s / 2)
                after = await self.redis.info("commandstats")
                measured_until = time.time()
                stats = await worker.stats()
                # the runs that started and ended between the two samples
                runs = [
                    r for r in stats["periodic"]
                    if r["started"] >= measured_from and r["duration_s"] > 0
                    and r["started"] + r["duration_s"] <= measured_until
                ]
                self._tick_figures(figures, runs, before, after)
            finally:
                figures.peak_rss_mb = await worker.stop()
        return figures

    @staticmethod
    def _tick_figures(
        figures: Figures, runs: list[dict[str, Any]], before: dict[str, Any],
        after: dict[str, Any],
    ) -> None:
        figures.ticks = len(runs)
        if not runs:
            return
        durations = [r["duration_s"] for r in runs]
        figures.tick_max_s = max(durations)
        figures.tick_mean_s = sum(durations) / len(durations)
        figures.due_per_tick = sum(r["firings"] for r in runs) / len(runs)

        def calls(stats: dict[str, Any]) -> int:
            return int((stats.get("cmdstat_hget") or {}).get("calls", 0))

        # Every HGET Redis served meanwhile: the bucket reads, and the events clock's
        # (clock-1 reads it with two: each periodic and each proactive evaluation reads the
        # offset, and each batch of the events the firings publish back ticks it).
        figures.hgets_per_tick = (calls(after) - calls(before)) / len(runs)
        # The bucket reads alone: the HGETs of the proactive scripts (worker, with
        # --count-bucket-reads), counted around them in each run.
        reads = [r.get("bucket_reads") for r in runs]
        if all(r is not None for r in reads):
            figures.bucket_reads_per_tick = sum(reads) / len(runs)  # type: ignore[arg-type]


def evaluate_targets(figures: list[Figures], sizes: Sizes) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure it is judged on and whether it is met; and
    figures reported beside them without a limit (`limit` and `met` None)."""
    by_name = {f.workload: f for f in figures}
    targets: list[dict[str, Any]] = []

    def add(
        target: str, value: float | None, limit: float | None, at_least: bool, unit: str
    ) -> None:
        met = None if value is None or limit is None else (
            value >= limit if at_least else value <= limit
        )
        targets.append(
            {"target": target, "value": value, "limit": limit, "unit": unit, "met": met}
        )

    for f in figures:
        if f.workload.startswith("no-match-"):
            add(f"{f.workload}: ratio to the ceiling", f.ratio_to_ceiling, 0.6, True, "")
    smallest = by_name.get(f"no-match-{min(sizes.no_match_automations)}")
    largest = by_name.get(f"no-match-{max(sizes.no_match_automations)}")
    if smallest and largest and smallest is not largest:
        ratio = (
            largest.events_per_s / smallest.events_per_s
            if largest.events_per_s and smallest.events_per_s
            else None
        )
        add(f"{largest.workload} rate / {smallest.workload} rate", ratio, 0.9, True, "")
    one = by_name.get("one-match")
    if one:
        add("one-match: events/s", one.events_per_s, 15_000, True, "events/s")
        add("one-match: Redis round trips per event", one.round_trips_per_event, 0.1, False, "")
        add("one-match: p99 event-to-action at half rate", one.latency_p99_ms, 25, False, "ms")
    cost = decisions_cost(figures)
    if cost:
        add("one-match: decision records' CPU cost (on - off)", cost["cpu_us_per_event_cost"],
            None, False, "us/event")
        add("one-match: events/s with decision records on vs off",
            cost["events_per_s_change_pct"], None, True, "%")
    sla = by_name.get("sla")
    if sla:
        add(f"sla: slowest tick ({sla.due_per_tick or 0:,.0f} due among {sla.open_buckets:,})",
            sla.tick_max_s, 1.0, False, "s")
        if sla.due_per_tick:
            reads = None if sla.bucket_reads_per_tick is None else (
                sla.bucket_reads_per_tick / sla.due_per_tick
            )
            add("sla: HGETs per due bucket (reads only the due ones)", reads, 1.1, False, "")
    if largest:
        add(f"{largest.workload}: peak RSS", largest.peak_rss_mb, 600, False, "MB")
        add(f"{largest.workload}: start (load all automations)", largest.start_s, 20, False, "s")
    return targets


def machine_info(server_versions: dict[str, str]) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gb": memory_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        **server_versions,
    }


async def run_bench(
    settings: Settings,
    sizes: Sizes,
    console: Console,
    *,
    quick: bool,
    only: Iterable[str] = (),
    server_pids: Mapping[str, int] | None = None,
) -> Report:
    """Run every workload (or those `only` names: a workload, or a family such as `no-match`)
    and evaluate the targets."""
    chosen = tuple(only)

    def wanted(name: str) -> bool:
        return not chosen or any(name == c or name.startswith(f"{c}-") for c in chosen)

    async with Bench(settings, sizes, console, server_pids) as bench:
        assert bench.nc is not None and bench.redis is not None
        versions = {
            "nats_server": str(bench.nc.connected_server_version),
            "redis_server": (await bench.redis.info("server")).get("redis_version", ""),
        }
        report = Report(
            machine=machine_info(versions),
            settings={
                "fetch_batch": settings.fetch_batch,
                "max_ack_pending": settings.max_ack_pending,
                "traces_exporter": settings.traces_exporter,
                "decisions_default": DECISIONS_DEFAULT,
            },
            quick=quick,
        )
        largest = max(sizes.no_match_automations)
        for count in sizes.no_match_automations:
            if wanted(f"no-match-{count}"):
                report.figures.append(await bench.no_match(count, admin=count == largest))
        one = None
        if wanted("one-match"):
            one = await bench.one_match()
            report.figures.append(one)
        if wanted(DECISIONS_PAIR):
            report.figures.append(
                await bench.one_match(decisions_enabled=not DECISIONS_DEFAULT, ceiling_of=one)
            )
        if wanted("sla"):
            report.figures.append(await bench.sla())
        if wanted("composite"):
            report.figures.append(await bench.composite())
    report.decisions = decisions_cost(report.figures)
    report.targets = evaluate_targets(report.figures, sizes)
    return report


def decisions_cost(figures: list[Figures]) -> dict[str, Any] | None:
    """One-match with decision records on and off, and what the records cost: the change of
    the rate (percent, on against off) and the CPU time per event they add (on - off), the
    service's and the embedded servers'. None unless both ran."""
    pair = {f.decisions_enabled: f for f in figures if f.workload in ("one-match", DECISIONS_PAIR)}
    on, off = pair.get(True), pair.get(False)
    if on is None or off is None:
        return None
    keys = ("events_per_s", "cpu_us_per_event", "nats_cpu_us_per_event",
            "redis_cpu_us_per_event", "round_trips_per_event")

    def side(f: Figures) -> dict[str, Any]:
        return {"workload": f.workload, **{k: getattr(f, k) for k in keys}}

    def cost(key: str) -> float | None:
        a, b = getattr(on, key), getattr(off, key)
        return None if a is None or b is None else a - b

    return {
        "setting": "decisions_enabled (TRIGGERS_DECISIONS_ENABLED)",
        "default": DECISIONS_DEFAULT,
        "on": side(on),
        "off": side(off),
        "events_per_s_change_pct": (
            (on.events_per_s / off.events_per_s - 1) * 100
            if on.events_per_s and off.events_per_s
            else None
        ),
        "cpu_us_per_event_cost": cost("cpu_us_per_event"),
        "nats_cpu_us_per_event_cost": cost("nats_cpu_us_per_event"),
        "redis_cpu_us_per_event_cost": cost("redis_cpu_us_per_event"),
    }

