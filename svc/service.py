"""The service: wires NATS, Redis, the engine, the admin API and telemetry together.

Thin on purpose, like Prefect's `services/triggers.py`: the behaviour lives in svc/engine,
the wire code in svc/bus and svc/admin.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from opentelemetry import trace
from redis.asyncio import Redis

from svc.admin.backend import BucketView
from svc.admin.security import AdminSecurity
from svc.admin.server import set_serving, start_admin_server
from svc.bus.automations import AutomationChange, AutomationStore
from svc.bus.consumer import EventConsumer, EventMessage, Handled
from svc.bus.decisions import DecisionRecorder
from svc.bus.publisher import JetStreamPublisher
from svc.bus.streams import ensure_streams
from svc.config import Settings
from svc.connections import connect_nats, nats_check, redis_client, until_reachable
from svc.domain.automations import Automation
from svc.domain.events import ReceivedEvent
from svc.domain.firings import Act, from_micros, to_micros
from svc.domain.lint import lint_automation
from svc.engine import Clock, Engine, EngineSettings, Outcome, Publisher, SystemClock
from svc.explain import Explanation, explain_event
from svc.health import DependencyMonitor
from svc.state.keys import Keys
from svc.state.lease import Lease
from svc.state.store import RedisState
from svc.telemetry import Instruments

logger = logging.getLogger(__name__)


class AutomationNotLoaded(LookupError):
    """The admin API asked about an automation this replica has not loaded."""


@dataclass
class ServiceBackend:
    """What the admin API needs from the service: the KV store for definitions (every
    replica follows it) and this replica's engine for state."""

    store: AutomationStore
    engine: Engine
    lock: asyncio.Lock

    async def put(self, automation: Automation) -> None:
        await self.store.put(automation)
        # apply it here at once, so a call right after this one sees it; the watcher
        # applies the same change again, which is harmless (an unchanged tree keeps state)
        async with self.lock:
            await self.engine.load(automation)

    async def get(self, automation_id: UUID) -> Automation | None:
        return await self.store.get(automation_id)

    async def list(self) -> list[Automation]:
        return await self.store.list()

    async def delete(self, automation_id: UUID) -> bool:
        existed = await self.store.delete(automation_id)
        async with self.lock:
            await self.engine.delete(automation_id)
        return existed

    async def reset_state(self, automation_id: UUID | None) -> None:
        async with self.lock:
            if automation_id is not None and automation_id not in self.engine.automations:
                raise AutomationNotLoaded(f"automation {automation_id} is not loaded")
            await self.engine.reset_state(automation_id)

    async def trigger_buckets(self, automation_id: UUID, trigger_id: UUID) -> list[BucketView]:
        loaded = self.engine.automations.get(automation_id)
        if loaded is None or trigger_id not in loaded.event_keys:
            raise AutomationNotLoaded(
                f"automation {automation_id} has no loaded event trigger {trigger_id}"
            )
        records = await self.engine.buckets(automation_id, trigger_id)
        return [
            BucketView(
                key=r.key,
                start=from_micros(r.start_us),
                end=from_micros(r.end_us),
                count=r.count,
                last_event_id=None if r.last_event is None else str(r.last_event.get("id")),
                last_event_name=None if r.last_event is None else r.last_event.get("event"),
                last_operation=r.last_operation,
            )
            for r in records
        ]

    def lint(self, automation: Automation) -> list[str]:
        return lint_automation(automation)

    async def explain(self, automation: Automation, event: ReceivedEvent) -> Explanation:
        # no lock: explain only reads (svc/explain.py), each trigger in one transaction
        return await explain_event(self.engine, automation, event)


@dataclass
class CountingPublisher:
    """Counts each top-level firing act() published (`triggers.firings`): the engine calls
    its publisher once per firing acted upon, and only a publish that returned counts."""

    publisher: Publisher
    instruments: Instruments

    async def publish(self, automation: Automation, out: Act) -> None:
        await self.publisher.publish(automation, out)
        self.instruments.firings.add(1)


@dataclass
class Service:
    """One replica of the triggers service."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    instruments: Instruments | None = None
    # None: the global tracer provider (svc run sets it up from the OTEL_* settings)
    tracer_provider: trace.TracerProvider | None = None

    nc: NATS | None = None
    js: JetStreamContext | None = None
    redis: Redis | None = None
    engine: Engine | None = None
    decisions: DecisionRecorder | None = None
    consumer: EventConsumer | None = None
    # held by one replica at a time: that one runs periodic and proactive evaluation
    lease: Lease | None = None
    # while Redis or NATS does not answer: intake paused, health NOT_SERVING
    dependencies: DependencyMonitor | None = None
    admin_address: str | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _grpc: object | None = None
    _health: object | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _loaded: asyncio.Event = field(default_factory=asyncio.Event)
    # the decision records being handed to the decisions stream, after those before them
    _recording: asyncio.Future[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        if settings.nats_url is None or settings.redis_url is None:
            raise ValueError("the service needs NATS_URL and REDIS_URL (svc run embeds both)")
        self.nc = await connect_nats(settings)
        self.js = self.nc.jetstream()
        await until_reachable(lambda: ensure_streams(self.js, settings), "NATS JetStream")
        self.redis = redis_client(settings)
        state = RedisState(self.redis, Keys(settings.key_prefix))
        await until_reachable(state.start, "Redis")
        self.lease = Lease(
            self.redis,
            state.keys.periodic_lease,
            state.scripts,
            ttl_ms=settings.lease_ttl_ms,
            renew_interval_ms=settings.lease_renew_interval_ms,
        )
        store = AutomationStore(self.js, settings)
        publisher: Publisher = JetStreamPublisher(self.js, settings)
        if self.instruments is not None:
            publisher = CountingPublisher(publisher, self.instruments)
        engine_settings = EngineSettings(
            expired_bucket_buffer=timedelta(seconds=settings.expired_bucket_buffer_s)
        )
        self.engine = Engine(
            state,
            publisher,
            self.clock,
            source=store.list,
            settings=engine_settings,
            tracer=trace.get_tracer("svc.engine", tracer_provider=self.tracer_provider),
        )
        if settings.decisions_enabled:
            self.engine.record_decisions = True
            self.decisions = DecisionRecorder(self.nc, settings)
        self.dependencies = DependencyMonitor(
            {
                "Redis": self.redis.ping,
                "NATS": lambda: nats_check(self.nc, self.js, settings.dependency_timeout_s),
            },
            interval_s=settings.dependency_check_interval_s,
            timeout_s=settings.dependency_timeout_s,
            on_change=self._serving,
        )
        self.consumer = EventConsumer(
            self.js,
            settings,
            self._handle,
            ready=self.dependencies.available,
            prepare=self._prepare,
        )
        # while Redis evaluates a batch, the next one is taken and decoded, and the next batch
        # is evaluated while the firings of the one before are published (docs/performance.md)
        self.engine.meanwhile = self.consumer.take_ahead
        self.engine.publish_in_background = True
        if self.instruments is not None:
            self.instruments.observe_lag(lambda: self.consumer.num_pending if self.consumer else 0)
        backend = ServiceBackend(store, self.engine, self._lock)
        self._grpc, self._health, self.admin_address = await start_admin_server(
            backend,
            settings.grpc_address,
            security=AdminSecurity.from_settings(settings),
            health_address=settings.health_address,
        )
        self._tasks.append(asyncio.create_task(self._watch(store), name="automation watcher"))
        # the watcher loads every stored automation first; evaluation waits for that
        await self._loaded.wait()
        self._tasks.append(asyncio.create_task(self._periodic(), name="periodic evaluation"))
        self._tasks.append(
            asyncio.create_task(self.lease.run(self._stopping), name="periodic lease")
        )
        # its first check, at once, lets the consumer fetch (or reports NOT_SERVING)
        self._tasks.append(
            asyncio.create_task(self.dependencies.run(self._stopping), name="dependency checks")
        )
        self._tasks.append(asyncio.create_task(self.consumer.run(), name="event consumer"))
        logger.info("triggers service started; admin API on %s", self.admin_address)

    async def _watch(self, store: AutomationStore) -> None:
        """Every replica follows the KV bucket: load on put, forget on delete (SEMANTICS 12).

        The initial values are loaded together, once all have arrived (Engine.load_many:
        one Redis round trip per thousand, not one each), before evaluation starts. The
        watch follows NATS reconnects by itself, resuming after the last change it gave."""
        initial: list[Automation] | None = []
        async for change in store.watch():
            if change is None:  # the end of the initial values
                if initial:
                    await self._load_initial(initial)
                initial = None
                self._loaded.set()
                continue
            if initial is not None and change.kind == "put" and change.automation is not None:
                initial.append(change.automation)
                continue
            try:
                async with self._lock:
                    # Never skipped for an outage: a replica that missed a change would ack
                    # that automation's events unevaluated for good (the crash harness found
                    # one doing so after a Redis restart). Retried under the lock instead, so
                    # no later event is evaluated before it is applied.
                    await until_reachable(
                        lambda c=change: self._apply(c), "Redis (applying an automation change)"
                    )
            except Exception:
                # one bad change must not stop the watcher (Prefect's listener keeps going)
                logger.exception("could not apply a change to automation %s", change.automation_id)

    async def _load_initial(self, automations: list[Automation]) -> None:
        try:
            async with self._lock:
                await until_reachable(
                    lambda: self.engine.load_many(automations), "Redis (loading automations)"
                )
        except Exception:
            # one bad automation must not keep the others unloaded: one by one, as changes
            logger.exception("could not load the stored automations together; one by one now")
            for automation in automations:
                try:
                    async with self._lock:
                        await self.engine.load(automation)
                except Exception:
                    logger.exception("could not load automation %s", automation.id)
        settle_heap()

    async def _apply(self, change: AutomationChange) -> None:
        if change.kind == "put" and change.automation is not None:
            await self.engine.load(change.automation)
        else:
            self.engine.forget(change.automation_id)

    def _prepare(self, messages: Sequence[EventMessage]) -> None:
        if self.engine is not None:
            self.engine.decode_ahead([m.body for m in messages])

    async def _handle(self, messages: Sequence[EventMessage]) -> list[str | None] | Handled:
        started = time.perf_counter()
        async with self._lock:
            try:
                results = await self.engine.handle_batch(
                    [m.body for m in messages], carriers=[m.headers for m in messages]
                )
            except BaseException:
                # the batch comes back; what it fired is still published (or stays in the
                # outbox for the periodic drain)
                started_firings = self.engine.take_batch_firings()
                if started_firings is not None:
                    started_firings.add_done_callback(_log_failure)
                raise
            firings = self.engine.take_batch_firings()
        self._record_decisions()
        if self.instruments is not None:
            self.instruments.evaluation_latency_s.record(time.perf_counter() - started)
            # one add per outcome and batch: an add costs microseconds, an event must not
            outcomes = Counter(result.outcome for result in results)
            for outcome, count in outcomes.items():
                self.instruments.events.add(count, {"outcome": str(outcome)})
            if outcomes[Outcome.dead_letter]:
                self.instruments.dead_lettered.add(outcomes[Outcome.dead_letter])
        reasons = [r.reason if r.outcome == Outcome.dead_letter else None for r in results]
        # the messages are acked once the firings they caused are published
        return reasons if firings is None else Handled(reasons, firings)

    async def _periodic(self) -> None:
        """Periodic and proactive evaluation on the timer (SEMANTICS 8, 9), on the one
        replica holding the lease (DESIGN "Scale"): only it drains outboxes, sweeps and runs
        proactive evaluation. It runs at once when it takes the lease. Errors are logged and
        the loop goes on."""
        while not self._stopping.is_set():
            self.lease.gained.clear()
            try:
                if self.lease.held and self.dependencies.available.is_set():
                    async with self._lock:
                        # the lease is checked again between the two: it may run out meanwhile
                        if self.lease.held:
                            await self.engine.periodic_evaluation()
                        if self.lease.held:
                            await self.engine.evaluate_proactive_triggers()
            except Exception:
                logger.exception("periodic evaluation failed; trying again next period")
            self._record_decisions()
            await self._next_round()

    def _record_decisions(self) -> None:
        """Hand what the engine decided since the last call to the decisions stream, in a
        task chained after the one before (so in order). Intake does not wait for it: it
        runs while the next batch waits for Redis (about 5 % of the service's time per
        event, docs/performance.md). Recording never fails; stop waits for it."""
        if self.engine is None or not self.engine.decisions:
            return
        decisions, self.engine.decisions = self.engine.decisions, []
        wall_us = to_micros(self.clock.now())
        before = self._recording

        async def record() -> None:
            if before is not None and not before.done():
                await asyncio.wait([before])
            if self.instruments is not None:
                steps = Counter(step for d in decisions for step in d.steps.split())
                for step, count in steps.items():
                    self.instruments.decisions.add(count, {"decision": step})
            if self.decisions is not None:
                await self.decisions.record(decisions, wall_us)

        self._recording = asyncio.ensure_future(record())
        self._recording.add_done_callback(_log_recording_failure)

    async def settle_decisions(self) -> None:
        """Wait until every decision record handed over so far is published."""
        if self._recording is not None and not self._recording.done():
            await asyncio.wait([self._recording])

    async def _next_round(self) -> None:
        """Wait one period, or less: until stop, or until this replica takes the lease."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._stopping, self.lease.gained)]
        try:
            await asyncio.wait(
                waiters, timeout=self.settings.periodic_interval_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _serving(self, available: bool) -> None:
        if self._health is not None:
            await set_serving(self._health, available)

    async def stop(self) -> None:
        """Graceful: stop fetching, finish and ack the batch in flight, then close."""
        self._stopping.set()
        await self._serving(False)  # load balancers stop sending calls first
        if self.consumer is not None:
            await self.consumer.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.settle_decisions()
        if self.lease is not None:
            # another replica takes periodic evaluation over now, not after the lease's TTL
            await self.lease.release()
        if self._grpc is not None:
            await self._grpc.stop(grace=2.0)
        if self.nc is not None:
            await self.nc.drain()
        if self.redis is not None:
            await self.redis.aclose()
        # what settle_heap froze is the collector's again: a process that runs services one
        # after another (tests, the crash harness) does not keep their cycles for good
        gc.unfreeze()


def settle_heap() -> None:
    """Collect once, then move every object alive now (the loaded automations, their index,
    the imported modules) out of the garbage collector's view: a full collection would
    otherwise walk them all, again and again, for nothing (one took 0.87 s with 100,000
    automations loaded, in the middle of a benchmark run; docs/performance.md). Automations
    loaded later are collected as usual. A frozen object that is dropped later is still freed
    by reference counting; only one caught in a reference cycle would stay."""
    gc.collect()
    gc.freeze()


def _log_recording_failure(future: asyncio.Future[None]) -> None:
    # DecisionRecorder.record logs and counts its own failures: this is for anything else
    if not future.cancelled() and (error := future.exception()) is not None:
        logger.error("recording decisions failed: %r", error)


def _log_failure(future: asyncio.Future[None]) -> None:
    """Log how the firings of a failed batch failed to publish (they stay in the outbox)."""
    if not future.cancelled() and (error := future.exception()) is not None:
        logger.warning("firings of a failed event batch were not all published: %r", error)
