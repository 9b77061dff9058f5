"""The conformance runner: scenario files (../shared/conformance/README.md) through the engine.

In-process: a fake clock, the real engine and a real Redis; what act() publishes is captured,
and the `prefect.automation.triggered` events go back into the engine after each step's own
message, as they come back on the bus in the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
import orjson
from nats.js.api import DeliverPolicy
from redis.asyncio import Redis

from svc.client import event_subject
from svc.config import Settings
from svc.domain import jsonio
from svc.domain.automations import Automation, parse_automation
from svc.domain.errors import InvalidAutomation
from svc.domain.firings import Act
from svc.engine import Engine, FakeClock
from svc.state.keys import Keys
from svc.state.store import RedisState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# The service runs periodic and proactive evaluation on this timer (SEMANTICS 1, 8, 9).
GRANULARITY_S = 5.0
LABELS = uuid.UUID("6f1d8e52-3c0a-4e55-9d0b-7b1f3a2c9e41")


class ScenarioError(ValueError):
    """A scenario file that does not follow the format."""


def label_uuid(label: str, namespace: UUID = LABELS) -> str:
    """Scenario ids are labels: a UUID is kept, any other label maps to one UUID, always
    the same within a namespace (the live runner takes a fresh one per scenario run, since
    the service remembers the events it has seen)."""
    try:
        return str(UUID(label))
    except ValueError:
        return str(uuid.uuid5(namespace, label))


@dataclass
class CapturingPublisher:
    """Collects what act() publishes; state-change events queue up for feedback."""

    actions: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[bytes] = field(default_factory=list)

    async def publish(self, automation: Automation, out: Act) -> None:
        self.feedback.extend(jsonio.dumps(event) for event in out.events)
        self.actions.extend(out.actions)


@dataclass
class StepFailure:
    step: int
    expected: list[dict[str, Any]]
    actual: list[dict[str, Any]]

    def describe(self) -> str:
        lines = [f"  step {self.step}: expected {len(self.expected)} action(s):"]
        lines += [f"    {json.dumps(e, sort_keys=True)}" for e in self.expected]
        lines.append(f"  published {len(self.actual)}:")
        lines += [f"    {summarize(a)}" for a in self.actual]
        return "\n".join(lines)


@dataclass
class ScenarioResult:
    name: str
    path: str
    failures: list[StepFailure]
    error: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failures and self.error is None


def summarize(action: dict[str, Any]) -> str:
    event = action.get("triggering_event")
    return (
        f"automation={action['automation']['id']} trigger={action['firing']['trigger']['type']}"
        f" labels={json.dumps(action['triggering_labels'], sort_keys=True)}"
        f" event={'null' if event is None else event['event'] + '#' + event['id'][-8:]}"
        f" action_index={action['action_index']} action={action['action']['type']}"
    )


# ---------------------------------------------------------------- matching of expectations


def contains(expected: Any, actual: Any) -> bool:
    """Recursive containment; a list matches as a set, each item in a distinct actual item."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and contains(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and _assign(expected, actual)
    if expected is None:
        return actual is None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return expected == actual


def _assign(expected: Sequence[Any], actual: Sequence[Any]) -> bool:
    """Is there a way to match each expected item to a distinct actual item? A bipartite
    matching by augmenting paths: polynomial, where naive backtracking over many alike
    entries is exponential."""
    candidates = [
        [j for j, item in enumerate(actual) if contains(wanted, item)] for wanted in expected
    ]
    owner: dict[int, int] = {}  # actual index -> expected index

    def augment(i: int, visited: set[int]) -> bool:
        for j in candidates[i]:
            if j in visited:
                continue
            visited.add(j)
            if j not in owner or augment(owner[j], visited):
                owner[j] = i
                return True
        return False

    return all(augment(i, set()) for i in range(len(expected)))


def _map_labels(entry: dict[str, Any], namespace: UUID) -> dict[str, Any]:
    entry = json.loads(json.dumps(entry))
    automation = entry.get("automation")
    if isinstance(automation, dict) and isinstance(automation.get("id"), str):
        automation["id"] = label_uuid(automation["id"])
    event = entry.get("triggering_event")
    if isinstance(event, dict) and isinstance(event.get("id"), str):
        event["id"] = label_uuid(event["id"], namespace)
    return entry


def expectations_met(
    expected: list[dict[str, Any]], actual: list[dict[str, Any]], namespace: UUID = LABELS
) -> bool:
    mapped = [_map_labels(e, namespace) for e in expected]
    return len(mapped) == len(actual) and _assign(mapped, actual)


# ---------------------------------------------------------------- running


class InProcess:
    """The engine in-process on a fake clock and a real Redis, driven as the service would
    drive it: messages in, timer ticks, admin operations; actions captured."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        t0: datetime = T0,
        publisher: CapturingPublisher | None = None,
    ):
        self.t0 = t0
        self.clock = FakeClock(t0)
        self.publisher = publisher or CapturingPublisher()
        self.definitions: dict[UUID, Automation] = {}
        self.state = RedisState(redis, Keys(prefix))
        self.engine = Engine(self.state, self.publisher, self.clock, source=self._source)

    async def _source(self) -> list[Automation]:
        return list(self.definitions.values())

    async def start(self, documents: Iterable[dict[str, Any]] = ()) -> None:
        """Load the automations, then one periodic and one proactive evaluation, as the
        service does when it starts."""
        await self.state.start()
        for document in documents:
            automation = _automation(document)
            self.definitions[automation.id] = automation
        await self.engine.reconcile(force=True)
        await self.tick()

    async def feed_back(self) -> None:
        """Deliver what act() published on the events subject back to the engine."""
        while self.publisher.feedback:
            await self.engine.handle_message(self.publisher.feedback.pop(0))

    async def publish(self, body: bytes) -> None:
        await self.engine.handle_message(body)
        await self.feed_back()

    async def publish_event(self, step: dict[str, Any]) -> None:
        """Publish an event given as a scenario step (`at`, labels for ids)."""
        await self.publish(orjson.dumps(scenario_event(step, self.clock.now(), self.t0)))

    async def tick(self) -> None:
        """What the service runs on its timer: periodic, then proactive evaluation."""
        await self.engine.periodic_evaluation()
        await self.feed_back()
        await self.engine.evaluate_proactive_triggers()
        await self.feed_back()

    async def advance(self, seconds: float) -> None:
        """Move the wall clock in steps of the granularity, ticking after each step."""
        remaining = float(seconds)
        while remaining > 1e-9:
            step = min(GRANULARITY_S, remaining)
            self.clock.advance(step)
            remaining -= step
            await self.tick()

    async def load(self, document: dict[str, Any]) -> Automation:
        automation = _automation(document)
        self.definitions[automation.id] = automation
        await self.engine.load(automation)
        return automation

    async def forget(self, label: str) -> None:
        automation_id = UUID(label_uuid(label))
        self.definitions.pop(automation_id, None)
        await self.engine.delete(automation_id)

    def take_actions(self) -> list[dict[str, Any]]:
        actions, self.publisher.actions = self.publisher.actions, []
        return actions


class ScenarioRunner:
    """Runs scenarios in-process against one Redis, each under its own key prefix."""

    def __init__(self, redis: Redis):
        self.redis = redis

    async def run_file(self, path: str | Path) -> ScenarioResult:
        path = Path(path)
        try:
            scenario = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return ScenarioResult(path.stem, str(path), [], error=f"cannot read: {exc}")
        name = scenario.get("name", path.stem)
        prefix = f"conformance-{uuid.uuid4().hex[:10]}"
        try:
            failures = await self.run(scenario, prefix)
        except (ScenarioError, InvalidAutomation) as exc:
            return ScenarioResult(name, str(path), [], error=str(exc))
        finally:
            await self._clean(prefix)
        return ScenarioResult(name, str(path), failures)

    async def _clean(self, prefix: str) -> None:
        keys = [k async for k in self.redis.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await self.redis.delete(*keys[start : start + 500])

    async def run(self, scenario: dict[str, Any], prefix: str) -> list[StepFailure]:
        harness = InProcess(self.redis, prefix)
        await harness.start(scenario.get("automations", []))
        failures: list[StepFailure] = []
        for number, step in enumerate(scenario.get("steps", [])):
            if "event" in step:
                await harness.publish_event(step["event"])
            elif "raw" in step:
                await harness.publish(step["raw"].encode())
            elif "advance" in step:
                await harness.advance(float(step["advance"]))
            elif "expect" in step:
                actual = harness.take_actions()
                if not expectations_met(step["expect"], actual):
                    failures.append(StepFailure(number, step["expect"], actual))
            elif "load" in step:
                # a refused document changes nothing, as the admin API refuses it
                with contextlib.suppress(InvalidAutomation):
                    await harness.load(step["load"])
            elif "forget" in step:
                await harness.forget(str(step["forget"]))
            elif "reset" in step:
                await harness.engine.reset()
            else:
                raise ScenarioError(f"step {number} has no known kind: {sorted(step)}")
        return failures


def _automation(document: dict[str, Any]) -> Automation:
    document = dict(document)
    if "id" in document:
        document["id"] = label_uuid(str(document["id"]))
    return parse_automation(document)


def scenario_event(
    step: dict[str, Any], wall: datetime, t0: datetime = T0, namespace: UUID = LABELS
) -> dict[str, Any]:
    """An event JSON from a scenario step: `at` and `received_at` relative to T0, labels
    for ids (a missing id gets a fresh one)."""
    event = {k: v for k, v in step.items() if k not in ("at", "received_at")}
    event["occurred"] = (t0 + timedelta(seconds=float(step.get("at", 0)))).isoformat()
    if "received_at" in step:
        event["received"] = (t0 + timedelta(seconds=float(step["received_at"]))).isoformat()
    else:
        event["received"] = wall.isoformat()
    event["id"] = label_uuid(step["id"], namespace) if "id" in step else str(uuid.uuid4())
    if step.get("follows") is not None:
        event["follows"] = label_uuid(step["follows"], namespace)
    return event


def expand(paths: Iterable[str]) -> list[Path]:
    """Files, or folders of `*.json` scenarios (a folder's `generated/` included)."""
    found: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.json"))
        else:
            found.append(p)
    return found


def report(result: ScenarioResult, *, quiet: bool) -> bool:
    """Print `PASS name`, or `FAIL name` with what differed; return whether it passed."""
    if result.passed:
        if not quiet:
            print(f"PASS {result.name}")
        return True
    print(f"FAIL {result.name} ({result.path})")
    if result.error:
        print(f"  {result.error}")
    for failure in result.failures:
        print(failure.describe())
    return False


async def run_files(redis_url: str, paths: Iterable[str], *, quiet: bool = False) -> int:
    """Run scenario files, print `PASS name` / `FAIL name` with what differed; return the
    exit status (1 if any failed)."""
    files = expand(paths)
    client = Redis.from_url(redis_url)
    runner = ScenarioRunner(client)
    failed = 0
    try:
        for path in files:
            result = await runner.run_file(path)
            failed += not report(result, quiet=quiet)
    finally:
        await client.aclose()
    print(f"{len(files) - failed} passed, {failed} failed")
    return 1 if failed else 0


# ---------------------------------------------------------------- live, against the service


class LiveRunner:
    """Runs scenarios end to end against a running service: automations through the admin
    API, events over NATS, triggered actions read back from the ACTIONS stream. Time is
    real: T0 is the moment a scenario starts and `advance` sleeps."""

    def __init__(self, settings: Settings, *, settle_timeout_s: float = 20.0):
        self.settings = settings
        self.settle_timeout_s = settle_timeout_s

    async def __aenter__(self) -> LiveRunner:
        from svc.client import AdminClient

        self.nc = await nats.connect(self.settings.nats_url, name="triggers-conformance")
        self.js = self.nc.jetstream()
        self.admin = AdminClient.from_settings(self.settings)
        await self.admin.wait_ready(self.settle_timeout_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.channel.close()
        await self.nc.drain()

    async def run_file(self, path: str | Path) -> ScenarioResult | None:
        """The result, or None for a scenario marked `"live": false`."""
        path = Path(path)
        try:
            scenario = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return ScenarioResult(path.stem, str(path), [], error=f"cannot read: {exc}")
        if scenario.get("live", True) is False:
            return None
        name = scenario.get("name", path.stem)
        try:
            failures = await self.run(scenario)
        except ScenarioError as exc:
            return ScenarioResult(name, str(path), [], error=str(exc))
        return ScenarioResult(name, str(path), failures)

    async def run(self, scenario: dict[str, Any]) -> list[StepFailure]:
        documents = [_with_label_ids(d) for d in scenario.get("automations", [])]
        ids = {str(d["id"]) for d in documents}
        for step in scenario.get("steps", []):
            if "load" in step:
                ids.add(label_uuid(str(step["load"].get("id"))))
        await self._delete(ids)
        published: list[dict[str, Any]] = []

        async def collect(msg: Any) -> None:
            action = orjson.loads(msg.data)
            if action.get("automation", {}).get("id") in ids:
                published.append(action)

        sub = await self.js.subscribe(
            f"{self.settings.actions_subject_prefix}.>",
            stream=self.settings.actions_stream,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            cb=collect,
        )
        try:
            t0 = datetime.now(UTC)
            for document in documents:
                await self.admin.load(document)
            return await self._steps(scenario.get("steps", []), t0, uuid.uuid4(), published)
        finally:
            await sub.unsubscribe()
            await self._delete(ids)

    async def _steps(
        self,
        steps: list[dict[str, Any]],
        t0: datetime,
        namespace: UUID,
        published: list[dict[str, Any]],
    ) -> list[StepFailure]:
        import grpc

        failures: list[StepFailure] = []
        for number, step in enumerate(steps):
            if "event" in step:
                event = scenario_event(step["event"], datetime.now(UTC), t0, namespace)
                subject = event_subject(self.settings, str(event.get("event", "")))
                await self.js.publish(subject, orjson.dumps(event))
            elif "raw" in step:
                await self.js.publish(
                    f"{self.settings.events_subject_prefix}.raw", step["raw"].encode()
                )
            elif "advance" in step:
                await asyncio.sleep(float(step["advance"]))
            elif "expect" in step:
                actual = await self._settle(step["expect"], published, namespace)
                published.clear()
                if not expectations_met(step["expect"], actual, namespace):
                    failures.append(StepFailure(number, step["expect"], actual))
            elif "load" in step:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await self.admin.load(_with_label_ids(step["load"]))
            elif "forget" in step:
                await self._delete({label_uuid(str(step["forget"]))})
            elif "reset" in step:
                # the admin API's reset deletes trigger state; Prefect's reset() only unloads
                # automations until the next reconcile, which a running service never needs
                await self.admin.reset_state(None)
            else:
                raise ScenarioError(f"step {number} has no known kind: {sorted(step)}")
        return failures

    async def _settle(
        self, expected: list[dict[str, Any]], published: list[dict[str, Any]], namespace: UUID
    ) -> list[dict[str, Any]]:
        """Wait until the consumer has nothing pending or unacknowledged, then, while the
        expectation is not met (proactive firings come on the service's timer), up to the
        settle timeout for more actions."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_timeout_s
        while loop.time() < deadline:
            info = await self.js.consumer_info(
                self.settings.events_stream, self.settings.consumer_name
            )
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.02)
        while loop.time() < deadline and not expectations_met(
            expected, list(published), namespace
        ):
            if len(published) > len(expected):
                break
            await asyncio.sleep(0.05)
        return list(published)

    async def _delete(self, ids: Iterable[str]) -> None:
        import grpc

        for automation_id in ids:
            try:
                await self.admin.delete(automation_id)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise


def _with_label_ids(document: dict[str, Any]) -> dict[str, Any]:
    document = dict(document)
    if "id" in document:
        document["id"] = label_uuid(str(document["id"]))
    return document


async def run_files_live(settings: Settings, paths: Iterable[str], *, quiet: bool = False) -> int:
    """The live counterpart of run_files: scenarios marked `"live": false` are skipped."""
    files = expand(paths)
    failed = skipped = 0
    async with LiveRunner(settings) as runner:
        for path in files:
            result = await runner.run_file(path)
            if result is None:
                skipped += 1
                if not quiet:
                    print(f"SKIP {path} (not live)")
                continue
            failed += not report(result, quiet=quiet)
    print(f"{len(files) - failed - skipped} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0
