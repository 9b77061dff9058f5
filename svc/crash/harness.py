"""The crash harness: a deterministic workload through several replicas of the service (each
`python -m svc run`, a process of its own) while replicas are SIGKILLed at random moments and
restarted, and Redis (append-only file on) and NATS are killed and restarted; then the
ACTIONS stream is compared, message by message, with what the in-process engine publishes for
the same workload (DESIGN "Delivery guarantees": a crash anywhere ends in the same published
actions as no crash).

Used by tests/reliability/test_crash.py and by `python -m svc crash-test` for longer runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from redis.asyncio import Redis

import svc
from svc.bus.automations import AutomationStore
from svc.bus.streams import ensure_streams
from svc.config import ENV_PREFIX, Settings, env_name
from svc.crash.options import CrashOptions
from svc.crash.oracle import expected_actions
from svc.crash.workload import Workload, build_workload
from svc.domain.automations import parse_automation
from svc.embedded import NatsServer, RedisServer, _die_with_parent_hook

logger = logging.getLogger(__name__)

REPO = Path(svc.__file__).resolve().parents[1]
# The line `svc run` prints once a replica's admin API listens (svc/cli.py).
READY_LINE = "Admin API (gRPC) "
# How long a replica may take to start; a started one prints its ready line in about 2 s.
REPLICA_START_TIMEOUT_S = 60.0
# How long a replica gets to stop after SIGTERM at the end of a run.
REPLICA_STOP_TIMEOUT_S = 30.0
# How often the settle phase looks at the consumer, the outboxes and the actions stream.
SETTLE_POLL_S = 0.5
# The actions stream must hold still this long before the run counts as settled.
STABLE_S = 3.0
# A recovery is measured from a server's restart to the next acked event, up to this.
RECOVERY_TIMEOUT_S = 60.0
# JetStream API calls of the harness itself, while servers restart under it.
JS_TIMEOUT_S = 5.0
# Differing actions listed in the figures' lines (all of them are in the JSON).
MAX_DIFFERENCES_SHOWN = 20


@dataclass
class Figures:
    """What a crash run did and found; `ok` when nothing was lost or published twice."""

    seed: int
    replicas: int
    automations: int
    events: int
    expected_actions: int = 0
    action_messages: int = 0
    distinct_action_ids: int = 0
    kills: int = 0
    replica_starts: int = 0
    redis_restarts: int = 0
    nats_restarts: int = 0
    replica_exits: int = 0  # replicas that ended without being killed or stopped: crashes
    lost: int = 0  # expected actions missing from the stream
    duplicated: int = 0  # messages beyond the first with the same action id
    unexpected: int = 0  # actions published that the calm run does not publish
    recoveries_s: list[float] = field(default_factory=list)  # server restart to next ack
    # what differs, one line per action (kind, automation, labels, triggering event), so a
    # failed run says where to look
    differences: list[str] = field(default_factory=list)
    settled: bool = False
    run_s: float = 0.0
    duplicate_window_s: float = 0.0
    log_dir: str = ""

    @property
    def ok(self) -> bool:
        return self.settled and not (
            self.lost or self.duplicated or self.unexpected or self.replica_exits
        )

    def lines(self) -> list[str]:
        longest = max(self.recoveries_s, default=0.0)
        return [
            f"seed {self.seed}: {self.events} events over {self.automations} automations, "
            f"{self.replicas} replicas, {self.run_s:.0f} s",
            f"faults: {self.kills} replica SIGKILLs ({self.replica_starts} replica starts, "
            f"{self.replica_exits} exits of their own), "
            f"{self.redis_restarts} Redis restarts, {self.nats_restarts} NATS restarts; "
            f"longest recovery {longest:.1f} s "
            f"(duplicate window {self.duplicate_window_s:.0f} s)",
            f"actions: expected {self.expected_actions}, messages {self.action_messages}, "
            f"distinct ids {self.distinct_action_ids}",
            f"lost {self.lost}, duplicated {self.duplicated}, unexpected {self.unexpected}"
            + ("" if self.settled else " (did NOT settle in time)"),
            *(f"  {line}" for line in self.differences[:MAX_DIFFERENCES_SHOWN]),
        ]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


def replica_settings(nats_url: str, redis_url: str, duplicate_window_s: float) -> Settings:
    """Settings of the replicas: short timers, so faults are noticed and recovered quickly."""
    return dataclasses.replace(
        Settings.from_env({}),
        nats_url=nats_url,
        redis_url=redis_url,
        key_prefix="crash",
        grpc_address="127.0.0.1:0",
        ack_wait_s=3.0,
        fetch_timeout_s=0.5,
        consumer_backoff_initial_s=0.1,
        consumer_backoff_max_s=1.0,
        periodic_interval_s=1.0,
        lease_ttl_ms=3000,
        lease_renew_interval_ms=1000,
        dependency_check_interval_s=0.2,
        dependency_timeout_s=1.0,
        actions_duplicate_window_s=duplicate_window_s,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """This environment without any setting of ours, plus `settings` as variables."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith((ENV_PREFIX, "OTEL_")) and k not in ("NATS_URL", "REDIS_URL")
    }
    ours = {
        env_name(f): str(getattr(settings, f.name))
        for f in dataclasses.fields(settings)
        if getattr(settings, f.name) is not None
    }
    return {**inherited, **ours}


class Replica:
    """One replica process (`python -m svc run`), restartable; a log file per start."""

    def __init__(self, index: int, env: dict[str, str], log_dir: Path):
        self.index = index
        self.env = env
        self.log_dir = log_dir
        self.starts = 0
        self.exits = 0  # ends of a process that was neither killed nor stopped
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _check_exit(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            self.exits += 1
            logger.warning("replica %d exited by itself (%s); see %s", self.index,
                           self.process.returncode, self.log_path)
        self.process = None

    def start(self) -> None:
        self._check_exit()
        self.starts += 1
        self.log_path = self.log_dir / f"replica-{self.index}-start-{self.starts}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "svc", "run"],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )

    async def ready(self) -> None:
        """Wait for the ready line of the current start."""
        deadline = time.monotonic() + REPLICA_START_TIMEOUT_S
        assert self.log_path is not None
        while READY_LINE not in self.log_path.read_text(errors="replace"):
            if not self.running:
                raise RuntimeError(f"replica {self.index} exited; see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica {self.index} did not start; see {self.log_path}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self.process is None:
            return
        if not self.running:
            self._check_exit()
            return
        self.process.kill()
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is None or not self.running:
            self._check_exit()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=REPLICA_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("replica %d ignored SIGTERM; killing it", self.index)
            self.kill()
        self.process = None


class CrashRun:
    """One run: servers, replicas, workload, faults, then the comparison."""

    def __init__(self, options: CrashOptions, say: Callable[[str], None] = print):
        self.options = options
        self.say = say
        self.rng = random.Random(options.seed)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if options.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="triggers-crash-")
            root = Path(self._tmp.name)
        else:
            root = Path(options.data_dir)
        self.root = root
        (root / "logs").mkdir(parents=True, exist_ok=True)
        self.nats = NatsServer(data_dir=root / "nats")
        # every write fsynced before Redis answers, so a SIGKILL loses nothing acknowledged
        self.redis = RedisServer(
            data_dir=root / "redis", appendonly=True, extra_args=("--appendfsync", "always")
        )
        # the whole run must fit in the window, so a firing re-published at its very end is
        # still recognised as one published at its start
        planned_s = options.duration_s + options.proactive_within_s + options.settle_timeout_s
        self.duplicate_window_s = max(600.0, 2 * planned_s)
        self.replicas: list[Replica] = []
        self.settings: Settings | None = None
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.client: Redis | None = None
        self.figures: Figures | None = None

    # ------------------------------------------------------------------ the run

    async def run(self) -> Figures:
        started = time.monotonic()
        try:
            self.nats.start()
            self.redis.start()
            settings = replica_settings(self.nats.url, self.redis.url, self.duplicate_window_s)
            self.settings = settings
            await self._connect()
            base = datetime.now(UTC) + timedelta(seconds=60)  # replaced once replicas are up
            workload = self._workload(base)
            await self._store_automations(workload)
            env = settings_env(settings)
            self.replicas = [
                Replica(i, env, self.root / "logs") for i in range(self.options.replicas)
            ]
            for replica in self.replicas:
                replica.start()
            await asyncio.gather(*(r.ready() for r in self.replicas))
            workload = self._workload(datetime.now(UTC) + timedelta(seconds=0.5))
            figures = Figures(
                seed=self.options.seed,
                replicas=self.options.replicas,
                automations=len(workload.automations),
                events=len(workload.events),
                duplicate_window_s=self.duplicate_window_s,
                log_dir=str(self.root / "logs"),
            )
            self.figures = figures
            self.say(
                f"crash run: {figures.events} events over {figures.automations} automations, "
                f"{self.options.replicas} replicas; logs in {figures.log_dir}"
            )
            await asyncio.gather(self._publish(workload), self._faults(workload, figures))
            figures.settled = await self._settle(workload)
            for replica in self.replicas:
                replica.stop()
            figures.replica_exits = sum(r.exits for r in self.replicas)
            actions = await self._read_actions()
            expected = await self._expected(workload)
            self._compare(workload, expected, actions, figures)
            figures.replica_starts = sum(r.starts for r in self.replicas)
            figures.run_s = time.monotonic() - started
            for line in figures.lines():
                self.say(line)
            return figures
        finally:
            await self._close()

    def _workload(self, base: datetime) -> Workload:
        o = self.options
        return build_workload(
            o.seed, base, automations=o.automations, duration_s=o.duration_s,
            proactive_within_s=o.proactive_within_s,
        )

    async def _connect(self) -> None:
        async def quiet(exc: Exception) -> None:
            """The harness's own connection sees the restarts it causes."""

        self.nc = await nats.connect(
            self.nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=quiet
        )
        self.js = self.nc.jetstream(timeout=JS_TIMEOUT_S)
        self.client = Redis.from_url(self.redis.url)

    async def _store_automations(self, workload: Workload) -> None:
        assert self.js is not None and self.settings is not None
        await ensure_streams(self.js, self.settings)
        store = AutomationStore(self.js, self.settings)
        for document in workload.automations:
            await store.put(parse_automation(document))

    async def _close(self) -> None:
        for replica in self.replicas:
            replica.kill()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        if self.client is not None:
            await self.client.aclose()
        self.nats.stop()
        self.redis.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------------ events

    async def _publish(self, workload: Workload) -> None:
        """Publish each event at its time (late while NATS is down), each exactly once in the
        stream: a retry after a lost acknowledgement carries the same `Nats-Msg-Id`."""
        assert self.js is not None and self.settings is not None
        loop = asyncio.get_running_loop()
        start = loop.time() + (workload.base - datetime.now(UTC)).total_seconds()
        prefix = self.settings.events_subject_prefix
        for planned in workload.events:
            await asyncio.sleep(max(0.0, start + planned.publish_at_s - loop.time()))
            body = planned.body
            subject = f"{prefix}.{body['event']}"
            data = orjson.dumps(body)
            while True:
                try:
                    await self.js.publish(subject, data, headers={"Nats-Msg-Id": body["id"]})
                    break
                except Exception as exc:  # NATS restarting: try again shortly
                    logger.debug("publish of %s failed (%r); retrying", body["id"], exc)
                    await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ faults

    async def _faults(self, workload: Workload, figures: Figures) -> None:
        """Kill replicas at random moments while events flow, and restart each server at
        evenly spread moments; every killed replica is restarted after a random pause."""
        o = self.options
        span_s = o.duration_s + o.proactive_within_s / 2
        plan: list[tuple[float, str]] = [(self.rng.uniform(1.0, span_s), "kill")
                                         for _ in range(o.kills)]
        servers = ["redis"] * o.redis_restarts + ["nats"] * o.nats_restarts
        self.rng.shuffle(servers)
        for i, server in enumerate(servers):
            plan.append((span_s * (i + 1) / (len(servers) + 1), server))
        plan.sort()
        loop = asyncio.get_running_loop()
        start = loop.time() + (workload.base - datetime.now(UTC)).total_seconds()
        restarts: list[asyncio.Task[Any]] = []
        for at_s, what in plan:
            await asyncio.sleep(max(0.0, start + at_s - loop.time()))
            if what == "kill":
                running = [r for r in self.replicas if r.running]
                if not running:
                    continue
                victim = self.rng.choice(running)
                victim.kill()
                figures.kills += 1
                self.say(f"  {at_s:5.1f} s: SIGKILL replica {victim.index}")
                restarts.append(asyncio.create_task(
                    self._restart_replica(victim, self.rng.uniform(0.2, 2.0))
                ))
            else:
                restarts.append(await self._restart_server(what, at_s, figures))
        await asyncio.gather(*restarts)

    async def _restart_replica(self, replica: Replica, pause_s: float) -> None:
        await asyncio.sleep(pause_s)
        replica.start()

    async def _restart_server(
        self, which: str, at_s: float, figures: Figures
    ) -> asyncio.Task[None]:
        """Kill a server, bring it back after the pause; returns the task that measures
        how long intake takes to recover."""
        server = self.redis if which == "redis" else self.nats
        acked = await self._acked()
        server.halt(signal.SIGKILL)
        self.say(f"  {at_s:5.1f} s: SIGKILL {which}, down for {self.options.server_down_s:g} s")
        await asyncio.sleep(self.options.server_down_s)
        resumed = time.monotonic()
        server.resume()
        if which == "redis":
            figures.redis_restarts += 1
        else:
            figures.nats_restarts += 1

        async def measure() -> None:
            if await self._next_ack(acked):
                figures.recoveries_s.append(round(time.monotonic() - resumed, 2))

        return asyncio.create_task(measure())

    async def _acked(self) -> int:
        info = await self._consumer_info()
        return 0 if info is None else info.ack_floor.stream_seq

    async def _next_ack(self, acked: int) -> bool:
        """Wait until the consumer acks past `acked` again (intake has recovered)."""
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while time.monotonic() < deadline:
            info = await self._consumer_info()
            if info is not None and (
                info.ack_floor.stream_seq > acked or (info.num_pending == 0 and
                                                      info.num_ack_pending == 0)
            ):
                return True
            await asyncio.sleep(0.05)
        return False

    async def _consumer_info(self) -> Any:
        assert self.js is not None and self.settings is not None
        try:
            return await self.js.consumer_info(
                self.settings.events_stream, self.settings.consumer_name, timeout=JS_TIMEOUT_S
            )
        except Exception:  # NATS restarting, or the consumer not yet created
            return None

    # ------------------------------------------------------------------ settling

    async def _settle(self, workload: Workload) -> bool:
        """Wait until every replica runs, every event is acked, every proactive window has
        closed, no firing waits in an outbox, no follower is parked, and the actions stream
        has held still for a while."""
        for replica in self.replicas:
            if not replica.running:
                replica.start()  # counts an exit of its own, if that is what it was
        quiet_at = workload.base + timedelta(seconds=workload.quiet_after_s + 2)
        deadline = time.monotonic() + self.options.settle_timeout_s
        last_count, still_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = await self._action_count()
            if count != last_count:
                last_count, still_since = count, time.monotonic()
            elif (
                datetime.now(UTC) >= quiet_at
                and time.monotonic() - still_since >= STABLE_S
                and await self._drained()
            ):
                return True
            await asyncio.sleep(SETTLE_POLL_S)
        return False

    async def _drained(self) -> bool:
        info = await self._consumer_info()
        if info is None or info.num_pending or info.num_ack_pending:
            return False
        assert self.client is not None and self.settings is not None
        prefix = self.settings.key_prefix
        try:
            async for key in self.client.scan_iter(match=f"{prefix}:*:outbox", count=1000):
                if await self.client.hlen(key):
                    return False
            return not await self.client.hlen(f"{prefix}:{{ordering}}:events")
        except Exception:  # Redis restarting
            return False

    async def _action_count(self) -> int:
        assert self.js is not None and self.settings is not None
        try:
            info = await self.js.stream_info(self.settings.actions_stream)
        except Exception:
            return -1
        return info.state.messages

    async def _read_actions(self) -> list[dict[str, Any]]:
        """Every message of the actions stream (each one, so duplicates count)."""
        assert self.js is not None and self.settings is not None
        stream = self.settings.actions_stream
        state = (await self.js.stream_info(stream)).state
        actions = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            with contextlib.suppress(NotFoundError):
                msg = await self.js.get_msg(stream, seq)
                actions.append(orjson.loads(msg.data or b"{}"))
        return actions

    # ------------------------------------------------------------------ comparing

    async def _expected(self, workload: Workload) -> list[dict[str, Any]]:
        """The calm run's actions, on a Redis of its own (no faults, no persistence)."""
        with RedisServer(data_dir=self.root / "oracle") as oracle_redis:
            client = Redis.from_url(oracle_redis.url)
            try:
                return await expected_actions(workload, client, "oracle")
            finally:
                await client.aclose()

    @staticmethod
    def _compare(
        workload: Workload,
        expected: list[dict[str, Any]],
        actions: list[dict[str, Any]],
        figures: Figures,
    ) -> None:
        ids = Counter(str(a["id"]) for a in actions)
        figures.expected_actions = len(expected)
        figures.action_messages = len(actions)
        figures.distinct_action_ids = len(ids)
        figures.duplicated = sum(n - 1 for n in ids.values())
        # each distinct action once: duplicates are counted above, not again here
        unique = list({str(a["id"]): a for a in actions}.values())
        want, got = workload.signatures(expected), workload.signatures(unique)
        figures.lost = sum((want - got).values())
        figures.unexpected = sum((got - want).values())
        by_signature = {workload.signature(a): a for a in [*unique, *expected]}
        for verdict, missing in (("lost", want - got), ("unexpected", got - want)):
            for signature, count in sorted(missing.items()):
                figures.differences.append(
                    f"{verdict} x{count}: {_describe(workload, by_signature[signature])}"
                )
        for action_id, count in sorted(ids.items()):
            if count > 1:
                action = next(a for a in actions if str(a["id"]) == action_id)
                figures.differences.append(
                    f"published {count} times: {_describe(workload, action)}"
                )


def _describe(workload: Workload, action: dict[str, Any]) -> str:
    event = action.get("triggering_event") or {}
    return (
        f"{workload.kinds.get(action['automation']['id'], '?')} automation "
        f"{action['automation'].get('name')!r} labels {action.get('triggering_labels')} "
        f"event {event.get('event')} {event.get('id')} action {action['id']}"
    )


async def run_crash_test(options: CrashOptions, say: Callable[[str], None] = print) -> Figures:
    return await CrashRun(options, say).run()
