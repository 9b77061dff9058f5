"""A deterministic workload with known expected firings: automations of six kinds and the
events that drive them, all derived from a seed and a base time.

Each kind is built so that its firings do not depend on the order events are processed in,
nor on when periodic evaluation runs, as long as every event is processed well inside the
proactive window; so a run with crashes must publish exactly what a calm run publishes:

- immediate: reactive, threshold 1; each ping fires once (firing id from the event id).
- threshold: reactive, threshold 3 for each resource within an hour (after a firing the next
  window starts where that one ends: Prefect's cooldown, so one firing per resource); one
  resource gets 3 events (a lost count shows as a missing firing), the other 2 (a double
  count shows as an extra one). Which event completes the count depends on processing
  order, so these are compared by automation, labels and action, not by firing id.
- proactive: after `started`, expect `finished` within the window, for each resource; half
  the resources finish, the others fire once the window closes (id from the window).
- compound: all of two reactive children, one event each.
- sequence: two steps, published in the reverse of their event-time order (Decision 1).
- follower: reactive, after `opened` expect `used`; `used` follows `opened` and is published
  before it, so it fires only because causal ordering parks it until its leader is seen.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

KINDS = ("immediate", "threshold", "proactive", "compound", "sequence", "follower")
# Share of the automations of each kind (the rest, after rounding, are immediate).
SHARES = {"threshold": 0.2, "proactive": 0.2, "compound": 2 / 15, "sequence": 1 / 15,
          "follower": 1 / 15}
NAMESPACE = uuid.UUID("c7a3f1e2-55b4-4c1e-9d8a-2f6b0e4d7a91")
# How far an event's `occurred` may lag its publication (events arrive a little late).
MAX_LAG_S = 0.5
# Gap between a leader and its follower, and between two out-of-order steps.
STEP_S = 0.3
# A `finished` event comes this long after its `started`, well inside the window.
FINISH_AFTER_S = 1.0
# Windows of the reactive kinds: far longer than any run, so none closes during one.
LONG_WINDOW_S = 3600


@dataclass(frozen=True)
class PlannedEvent:
    """One event: when to publish it (seconds after the base) and its JSON body."""

    publish_at_s: float
    body: dict[str, Any]


@dataclass
class Workload:
    seed: int
    base: datetime
    proactive_within_s: float
    automations: list[dict[str, Any]] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # automation id -> kind
    events: list[PlannedEvent] = field(default_factory=list)  # in publication order

    @property
    def quiet_after_s(self) -> float:
        """Seconds after the base by which every proactive window has closed."""
        last = max((e.publish_at_s for e in self.events), default=0.0)
        return last + self.proactive_within_s

    def signature(self, action: dict[str, Any]) -> str:
        """What identifies a triggered action across runs (see the module docstring)."""
        automation_id = action["automation"]["id"]
        if self.kinds.get(automation_id) == "threshold":
            labels = json.dumps(action["triggering_labels"], sort_keys=True)
            return f"{automation_id}|{labels}|{action['action_index']}"
        return str(action["id"])

    def signatures(self, actions: Iterable[dict[str, Any]]) -> Counter[str]:
        return Counter(self.signature(a) for a in actions)


def build_workload(
    seed: int,
    base: datetime,
    *,
    automations: int = 300,
    duration_s: float = 30.0,
    proactive_within_s: float = 20.0,
) -> Workload:
    """The workload of `seed`: `automations` automations, events over `duration_s`."""
    builder = _Builder(random.Random(seed), seed, base, duration_s, proactive_within_s)
    counts = {kind: max(1, round(automations * share)) for kind, share in SHARES.items()}
    counts["immediate"] = max(1, automations - sum(counts.values()))
    for kind in KINDS:
        for i in range(counts[kind]):
            getattr(builder, kind)(i)
    builder.workload.events.sort(key=lambda e: e.publish_at_s)
    return builder.workload


def _event_trigger(
    expect: str, resource: str, *, posture: str = "Reactive", after: str | None = None,
    for_each: bool = False, threshold: int = 1, within: float = 0,
) -> dict[str, Any]:
    return {
        "type": "event",
        "posture": posture,
        "expect": [expect],
        "after": [after] if after else [],
        "for_each": ["prefect.resource.id"] if for_each else [],
        "match": {"prefect.resource.id": resource},
        "match_related": {},
        "threshold": threshold,
        "within": within,
    }


class _Builder:
    def __init__(
        self, rng: random.Random, seed: int, base: datetime, duration_s: float, within_s: float
    ):
        self.rng = rng
        self.ns = uuid.uuid5(NAMESPACE, str(seed))
        self.base = base
        self.duration_s = duration_s
        self.within_s = within_s
        self.workload = Workload(seed=seed, base=base, proactive_within_s=within_s)

    def _id(self, *parts: object) -> str:
        return str(uuid.uuid5(self.ns, ":".join(map(str, parts))))

    def _automation(self, kind: str, i: int, trigger: dict[str, Any]) -> None:
        automation_id = self._id("automation", kind, i)
        self.workload.automations.append(
            {
                "id": automation_id,
                "name": f"crash {kind} {i}",
                "enabled": True,
                "trigger": trigger,
                "actions": [{"type": "do-nothing"}],
            }
        )
        self.workload.kinds[automation_id] = kind

    def _event(
        self, key: tuple[object, ...], name: str, resource: str, occurred_s: float,
        publish_at_s: float | None = None, follows: str | None = None,
    ) -> str:
        event_id = self._id("event", *key)
        body = {
            "id": event_id,
            "occurred": (self.base + timedelta(seconds=occurred_s)).isoformat(),
            "event": name,
            "resource": {"prefect.resource.id": resource},
            "related": [],
            "payload": {},
        }
        if follows is not None:
            body["follows"] = follows
        when = occurred_s + self.rng.uniform(0, MAX_LAG_S) if publish_at_s is None else publish_at_s
        self.workload.events.append(PlannedEvent(when, body))
        return event_id

    def _moment(self, end_margin_s: float = 0.0) -> float:
        return self.rng.uniform(0, max(self.duration_s - end_margin_s, 0.1))

    def immediate(self, i: int) -> None:
        resource = f"crash.immediate.{i}"
        self._automation("immediate", i, _event_trigger("crash.ping", resource))
        for n in range(self.rng.randint(5, 15)):
            self._event(("immediate", i, n), "crash.ping", resource, self._moment())

    def threshold(self, i: int) -> None:
        self._automation(
            "threshold", i,
            _event_trigger("crash.tick", f"crash.threshold.{i}.*", for_each=True, threshold=3,
                           within=LONG_WINDOW_S),
        )
        for r, ticks in enumerate((3, 2)):
            for n in range(ticks):
                resource = f"crash.threshold.{i}.r{r}"
                self._event(("threshold", i, r, n), "crash.tick", resource, self._moment())

    def proactive(self, i: int) -> None:
        self._automation(
            "proactive", i,
            _event_trigger("crash.finished", f"crash.proactive.{i}.*", posture="Proactive",
                           after="crash.started", for_each=True, within=self.within_s),
        )
        for r in range(4):
            resource = f"crash.proactive.{i}.r{r}"
            started = self._moment(end_margin_s=FINISH_AFTER_S)
            self._event(("proactive", i, r, "started"), "crash.started", resource, started)
            if self.rng.random() < 0.5:
                finished = started + FINISH_AFTER_S
                self._event(("proactive", i, r, "finished"), "crash.finished", resource,
                            finished)

    def compound(self, i: int) -> None:
        resource = f"crash.compound.{i}"
        children = [_event_trigger(f"crash.part-{p}", resource) for p in "ab"]
        self._automation(
            "compound", i,
            {"type": "compound", "require": "all", "within": LONG_WINDOW_S, "triggers": children},
        )
        for p in "ab":
            self._event(("compound", i, p), f"crash.part-{p}", resource, self._moment())

    def sequence(self, i: int) -> None:
        resource = f"crash.sequence.{i}"
        steps = [_event_trigger(f"crash.step-{s}", resource) for s in (1, 2)]
        self._automation(
            "sequence", i, {"type": "sequence", "within": LONG_WINDOW_S, "triggers": steps}
        )
        t = self._moment(end_margin_s=2 * STEP_S)
        self._event(("sequence", i, 2), "crash.step-2", resource, t + STEP_S, t + STEP_S)
        self._event(("sequence", i, 1), "crash.step-1", resource, t, t + 2 * STEP_S)

    def follower(self, i: int) -> None:
        resource = f"crash.follower.{i}"
        self._automation(
            "follower", i,
            _event_trigger("crash.used", resource, after="crash.opened", within=LONG_WINDOW_S),
        )
        t = self._moment(end_margin_s=2 * STEP_S)
        leader = self._id("event", "follower", i, "opened")
        self._event(("follower", i, "used"), "crash.used", resource, t + STEP_S, t + STEP_S,
                    follows=leader)
        self._event(("follower", i, "opened"), "crash.opened", resource, t, t + 2 * STEP_S)
