"""Explain now: one event against one automation's current state, without changing it.

For each event trigger it says whether the event reaches it (which name pattern matched or
why none did, which resource label failed), the bucketing key, the bucket as it stands, and
what evaluation would do; for each composite, the stored child firings, what is still missing
and what a child firing caused by this event would do there.

How it stays read-only and still gives the engine's answer: the decision comes from the very
script intake runs (reactive-7, with the arguments `Engine.reactive_call` builds), run on a
copy. Per trigger, one MULTI/EXEC transaction

  1. reads the live bucket and held-event count of the event's bucketing key,
  2. copies the slice of the trigger's state that reactive-7 reads for this event (that
     bucket, the event's per-trigger seen mark, the key's held events) into scratch keys
     beside the live ones (dry_copy-14; same `{trigger id}` hash tag, so one cluster slot),
  3. runs reactive-7 on the scratch keys, and
  4. deletes the scratch keys.

Redis runs a transaction as one unit, so no other client ever sees the scratch keys, and the
live keys are only read. A child firing decided that way is applied the same way to a copy
of its composite parent's stored child firings (dry_copy_composite-6, then composite-3), and
so on up the tree. Why not a `dry` flag in every script: it would put a second path (skip
each write, yet read back what was "written") into every state transition, where it could
drift from the real one; and why not a discarded transaction: Redis has no rollback, a
DISCARD runs nothing and answers nothing. Copying only what the script reads keeps the cost
independent of the trigger's other buckets and seen marks.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

from svc.domain import jsonio
from svc.domain.automations import (
    Automation,
    CompoundTrigger,
    EventTrigger,
    Posture,
    SequenceTrigger,
    Trigger,
    micros,
)
from svc.domain.events import ReceivedEvent
from svc.domain.explain import NameCheck, ResourceCheck, check_name, check_resources
from svc.domain.firings import Firing, from_micros, to_micros
from svc.engine.engine import (
    LOG_EVENT,
    SEEN_HORIZON,
    BucketBrief,
    Engine,
    LoadedAutomation,
    brief_bucket,
    composite_firing_from_record,
    firing_from_record,
    single_child_firing,
)
from svc.state.keys import CompositeKeys, TriggerKeys
from svc.state.store import BucketRecord, Call, Command, ScriptCall

Composite = CompoundTrigger | SequenceTrigger


@dataclass(frozen=True)
class TriggerExplanation:
    """One event trigger: does the event reach it, its bucket, and what evaluation would do."""

    trigger: EventTrigger
    path: str
    name: NameCheck
    resources: ResourceCheck
    key: tuple[str, ...]
    bucket: BucketRecord | None
    held_events: int
    # the steps of reactive-7 ('counted fired rolled_over', 'duplicate', ...), or
    # 'not_interested' / 'not_covered' when the event does not reach the trigger, or
    # 'not_evaluated' when the automation is not loaded (disabled)
    decision: str
    bucket_after: BucketBrief | None = None
    firing_ids: tuple[str, ...] = ()

    @property
    def interested(self) -> bool:
        return self.name.interested and self.resources.covered


@dataclass(frozen=True)
class StoredChild:
    """A child firing a composite holds, waiting for the others."""

    trigger_id: UUID
    path: str
    firing_id: str
    at: datetime  # the firing's event time (Decision 1)


@dataclass(frozen=True)
class CompositeExplanation:
    """One composite trigger: what it holds, what it lacks, what this event would do to it."""

    trigger: Composite
    path: str
    stored: tuple[StoredChild, ...]
    missing: tuple[str, ...]  # paths of the children with no stored firing
    # what the child firings this event causes would do here ('stored', 'fired', ...,
    # one per child firing), or '' when none reaches it
    decision: str = ""


@dataclass(frozen=True)
class Explanation:
    """Everything explain says about one event and one automation."""

    automation: Automation
    event: ReceivedEvent
    loaded: bool
    # what intake does with the event as a whole: evaluated, skipped, duplicate or parked
    intake: str
    intake_reason: str
    triggers: tuple[TriggerExplanation, ...] = ()
    composites: tuple[CompositeExplanation, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "automation": {"id": str(self.automation.id), "name": self.automation.name},
            "event": {
                "id": str(self.event.id),
                "event": self.event.event,
                "occurred": self.event.occurred.isoformat(),
            },
            "loaded": self.loaded,
            "intake": self.intake,
            "intake_reason": self.intake_reason,
            "triggers": [_trigger_json(t) for t in self.triggers],
            "composites": [_composite_json(c) for c in self.composites],
        }


# ---------------------------------------------------------------- explaining


async def explain_event(
    engine: Engine, automation: Automation, event: ReceivedEvent
) -> Explanation:
    """Explain `event` against `automation` as it stands in the engine's state; read-only.

    A loaded automation is explained as loaded (its trigger ids and state generation);
    one that is not (disabled, or without event triggers) is explained from its stored
    definition, with its state read but nothing evaluated."""
    now = engine.clock.now()
    now_us = to_micros(now)
    loaded = engine.automations.get(automation.id)
    if loaded is not None:
        automation = loaded.automation
    intake, reason = await _intake(engine, event, now, now_us)
    paths = dict(trigger_paths(automation.trigger))
    generation = automation.trigger_fingerprint()
    triggers: list[TriggerExplanation] = []
    fired: dict[UUID, list[Firing]] = {}
    for trigger in automation.event_triggers():
        keys = (
            loaded.event_keys[trigger.id]  # type: ignore[index]
            if loaded is not None
            else engine.state.keys.trigger(trigger.id, generation)  # type: ignore[arg-type]
        )
        explained, firings = await _explain_trigger(
            engine, loaded, keys, trigger, paths[trigger.id], event, now_us  # type: ignore[index]
        )
        triggers.append(explained)
        parent = automation.parent_of(trigger.id)  # type: ignore[arg-type]
        if parent is not None and firings:
            fired.setdefault(parent.id, []).extend(firings)  # type: ignore[arg-type]
    composites = await _explain_composites(
        engine, loaded, automation, generation, paths, fired, now_us
    )
    return Explanation(
        automation=automation,
        event=event,
        loaded=loaded is not None,
        intake=intake,
        intake_reason=reason,
        triggers=tuple(triggers),
        composites=composites,
    )


async def _intake(
    engine: Engine, event: ReceivedEvent, now: datetime, now_us: int
) -> tuple[str, str]:
    """What intake (SEMANTICS 5.1, 10.1) would do with the event before any trigger sees it."""
    if event.event == LOG_EVENT:
        return "skipped", f"{LOG_EVENT} events are never evaluated (SEMANTICS 5.1)"
    (seen,) = await engine.state.seen([event.id], now_us, micros(SEEN_HORIZON))
    if seen:
        return "duplicate", (
            f"event {event.id} was processed already; a redelivery of it is dropped"
        )
    if engine.must_wait_for_leader(event, now):
        (leader_seen,) = await engine.state.seen(
            [event.follows], now_us, micros(SEEN_HORIZON)  # type: ignore[list-item]
        )
        if not leader_seen:
            return "parked", (
                f"it follows event {event.follows}, not seen yet: it waits as a follower "
                "until its leader is processed, or 15 minutes after it was received; the "
                "decisions below are what its evaluation would do now"
            )
    return "evaluated", ""


async def _explain_trigger(
    engine: Engine,
    loaded: LoadedAutomation | None,
    keys: TriggerKeys,
    trigger: EventTrigger,
    path: str,
    event: ReceivedEvent,
    now_us: int,
) -> tuple[TriggerExplanation, list[Firing]]:
    name = check_name(trigger.patterns, event.event)
    resources = check_resources(trigger, event)
    key = trigger.bucketing_key(event)
    key_json = orjson.dumps(list(key))
    reads: list[Call] = [
        Command(("HGET", keys.buckets, key_json)),
        Command(("ZLEXCOUNT", keys.held, b"[" + key_json + b"\0", b"[" + key_json + b"\0\xff")),
    ]
    evaluate = loaded is not None and name.interested and resources.covered
    if evaluate:
        reads += _dry_reactive(engine, trigger, keys, event, key_json, now_us)
    results = await engine.state.call_atomically(reads)
    bucket = None if results[0] is None else BucketRecord.decode(key_json, results[0])
    explained = TriggerExplanation(
        trigger=trigger,
        path=path,
        name=name,
        resources=resources,
        key=key,
        bucket=bucket,
        held_events=int(results[1]),
        decision="not_evaluated",
    )
    if not evaluate:
        decision = (
            "not_interested"
            if not name.interested
            else "not_covered"
            if not resources.covered
            else "not_evaluated"
        )
        return dataclasses.replace(explained, decision=decision), []
    answer = results[3]  # after the two reads and the copy
    records = answer[3:]
    firings = [firing_from_record(trigger, raw) for raw in records]
    return (
        dataclasses.replace(
            explained,
            decision=answer[0].decode(),
            bucket_after=brief_bucket(answer[2]),
            firing_ids=tuple(str(f.id) for f in firings),
        ),
        firings,
    )


def _dry_reactive(
    engine: Engine,
    trigger: EventTrigger,
    keys: TriggerKeys,
    event: ReceivedEvent,
    key_json: bytes,
    now_us: int,
) -> list[Call]:
    """Copy, run reactive-7 on the copy, delete the copy (see the module docstring)."""
    scratch = keys.scratch(uuid.uuid4().hex)
    call = engine.reactive_call(trigger, event, now_us)
    copy = ScriptCall(
        engine.state.scripts.dry_copy, [*keys.as_list(), *scratch.as_list()],
        [key_json, str(event.id)],
    )
    return [
        copy,
        ScriptCall(call.script, scratch.as_list(), call.args),
        Command(("DEL", *scratch.as_list())),
    ]


async def _explain_composites(
    engine: Engine,
    loaded: LoadedAutomation | None,
    automation: Automation,
    generation: str,
    paths: dict[UUID, str],
    fired: dict[UUID, list[Firing]],
    now_us: int,
) -> tuple[CompositeExplanation, ...]:
    """Innermost composites first, so a composite that would fire reaches its parent."""
    composites = [t for t in automation.all_triggers() if isinstance(t, Composite)]
    explained: dict[UUID, CompositeExplanation] = {}
    for composite in reversed(composites):
        keys = (
            loaded.composite_keys[composite.id]  # type: ignore[index]
            if loaded is not None
            else engine.state.keys.composite(composite.id, generation)  # type: ignore[arg-type]
        )
        children = fired.get(composite.id, [])  # type: ignore[arg-type]
        stored_raw, decisions, firings = await _dry_composite(
            engine, loaded, composite, keys, children, now_us
        )
        stored = _stored_children(stored_raw, paths)
        present = {s.trigger_id for s in stored}
        explained[composite.id] = CompositeExplanation(  # type: ignore[index]
            trigger=composite,
            path=paths[composite.id],  # type: ignore[index]
            stored=stored,
            missing=tuple(
                paths[i] for i in composite.child_trigger_ids if i not in present
            ),
            decision=" ".join(decisions),
        )
        parent = automation.parent_of(composite.id)  # type: ignore[arg-type]
        if parent is not None and firings:
            fired.setdefault(parent.id, []).extend(firings)  # type: ignore[arg-type]
    return tuple(explained[c.id] for c in composites)  # type: ignore[index]


async def _dry_composite(
    engine: Engine,
    loaded: LoadedAutomation | None,
    composite: Composite,
    keys: CompositeKeys,
    children: list[Firing],
    now_us: int,
) -> tuple[dict[bytes, bytes], list[str], list[Firing]]:
    """The stored child firings, and what applying `children` would decide (in one
    transaction on a copy, as for event triggers); the composite firings that would result."""
    calls: list[Call] = [Command(("HGETALL", keys.children))]
    if loaded is None or not children:
        (stored,) = await engine.state.call_atomically(calls)
        return stored, [], []
    if composite.num_expected_firings == 1:
        # one child firing is enough: the engine fires the composite at once, nothing stored
        (stored,) = await engine.state.call_atomically(calls)
        firings = [single_child_firing(loaded, composite, c, now_us) for c in children]
        return stored, ["fired"] * len(children), firings
    scratch = keys.scratch(uuid.uuid4().hex)
    calls.append(
        ScriptCall(
            engine.state.scripts.dry_copy_composite,
            [*keys.as_list(), *scratch.as_list()],
            [str(c.id) for c in children],
        )
    )
    for child in children:
        call = engine.composite_call(loaded, composite, child, now_us)
        calls.append(ScriptCall(call.script, scratch.as_list(), call.args))
    calls.append(Command(("DEL", *scratch.as_list())))
    results = await engine.state.call_atomically(calls)
    answers = results[2 : 2 + len(children)]
    decisions = [a[0].decode() for a in answers]
    firings = [composite_firing_from_record(composite, a[1]) for a in answers if a[0] == b"fired"]
    return results[0], decisions, firings


def _stored_children(
    stored: dict[bytes, bytes], paths: dict[UUID, str]
) -> tuple[StoredChild, ...]:
    children = []
    for child_id, raw in stored.items():
        record = jsonio.loads(raw)  # the child firing's triggering event inside
        trigger_id = UUID(child_id.decode())
        children.append(
            StoredChild(
                trigger_id=trigger_id,
                path=paths.get(trigger_id, str(trigger_id)),
                firing_id=record["id"],
                at=from_micros(int(record["at"])),
            )
        )
    return tuple(sorted(children, key=lambda c: (c.at, c.path)))


def trigger_paths(trigger: Trigger, path: str = "trigger") -> Iterator[tuple[UUID, str]]:
    """Every trigger's id and its place in the document (`trigger.triggers.0`), in tree order."""
    yield trigger.id, path  # type: ignore[misc]
    if isinstance(trigger, Composite):
        for position, child in enumerate(trigger.triggers):
            yield from trigger_paths(child, f"{path}.triggers.{position}")


# ---------------------------------------------------------------- words


STEP_WORDS = {
    "armed": "arms the window",
    "counted": "counts the event",
    "too_early": "ignores it: it occurred before the window starts (late, or cooldown)",
    "fired": "FIRES",
    "window_closed": "finds the window over",
    "rolled_over": "starts the next window",
    "restarted": "restarts the window at this event",
    "disarmed": "disarms (the window is over)",
    "held": "holds the event for a window that opens later over it",
    "unchanged": "leaves the bucket as it is",
    "duplicate": "ignores it as a duplicate: this trigger evaluated the event already",
    "ignored": "does nothing: not expected, or no armed window to count it in",
    "stored": "stores the child firing; the composite is not complete yet",
    "expired": "drops the child firing: too old for the composite's `within`",
}


def describe_steps(decision: str) -> str:
    """A decision's steps in words, in order."""
    return ", then ".join(STEP_WORDS.get(step, step) for step in decision.split())


def describe_window(start: datetime, end: datetime, count: int, trigger: EventTrigger) -> str:
    if trigger.posture == Posture.Reactive:
        tally = f"count {count} of threshold {trigger.threshold}"
    else:
        tally = f"count {count}; fires at its end if under threshold {trigger.threshold}"
    return f"[{_time(start)}, {_time(end)}) {tally}"


def _time(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(value: timedelta | None) -> str:
    return "no limit" if value is None else f"{value.total_seconds():g} s"


def render(explanation: Explanation) -> str:
    """The explanation for a terminal: one block per trigger, then per composite."""
    e, a = explanation.event, explanation.automation
    lines = [
        f"event {e.event} {e.id} occurred {_time(e.occurred)}",
        f"automation {a.id} {a.name!r}"
        + ("" if explanation.loaded else " (not loaded: disabled or no event trigger; "
           "nothing is evaluated)"),
        f"intake: {explanation.intake}"
        + (f" ({explanation.intake_reason})" if explanation.intake_reason else ""),
    ]
    for t in explanation.triggers:
        lines += ["", *_render_trigger(t)]
    for c in explanation.composites:
        lines += ["", *_render_composite(c)]
    return "\n".join(lines)


def _render_trigger(t: TriggerExplanation) -> list[str]:
    trigger = t.trigger
    lines = [
        f"{t.path} (event trigger {trigger.id}): {trigger.posture}, threshold "
        f"{trigger.threshold} within {_seconds(trigger.within)}",
        f"  name: {t.name.reason}",
    ]
    if t.name.interested:
        role = [r for r, on in (("expected", t.name.expected), ("after", t.name.starts_after)) if on]
        lines[-1] += f" ({' and '.join(role) or 'neither expected nor after'})"
    if t.resources.covered:
        lines.append("  resources: covered")
    else:
        lines += [f"  resources: {failure}" for failure in t.resources.failures]
    lines.append(f"  bucketing key: {orjson.dumps(list(t.key)).decode()}")
    if t.bucket is None:
        lines.append("  bucket: none")
    else:
        b = t.bucket
        last = b.last_event or {}
        lines.append(
            "  bucket: "
            + describe_window(from_micros(b.start_us), from_micros(b.end_us), b.count, trigger)
            + f", last {b.last_operation}"
            + (f" by {last.get('event')} {last.get('id')}" if last else "")
        )
    if t.held_events:
        lines.append(f"  held events of this key: {t.held_events}")
    if t.decision in ("not_interested", "not_covered", "not_evaluated"):
        why = {
            "not_interested": "the event does not reach this trigger (name)",
            "not_covered": "the event does not reach this trigger (resources)",
            "not_evaluated": "not evaluated: the automation is not loaded",
        }[t.decision]
        lines.append(f"  would: nothing; {why}")
        return lines
    lines.append(f"  would: {describe_steps(t.decision)}  [{t.decision}]")
    after = t.bucket_after
    lines.append(
        "  bucket after: "
        + ("none" if after is None else describe_window(
            from_micros(after[0]), from_micros(after[1]), after[2], trigger))
    )
    for firing_id in t.firing_ids:
        lines.append(f"  firing: {firing_id}")
    return lines


def _render_composite(c: CompositeExplanation) -> list[str]:
    trigger = c.trigger
    lines = [
        f"{c.path} ({trigger.type} trigger {trigger.id}): needs "
        f"{trigger.num_expected_firings} of {len(trigger.triggers)} children within "
        f"{_seconds(trigger.within)}"
        + (", in order" if isinstance(trigger, SequenceTrigger) else ""),
    ]
    if not c.stored:
        lines.append("  stored child firings: none")
    for child in c.stored:
        lines.append(f"  stored: {child.path} fired at {_time(child.at)} ({child.firing_id})")
    if c.missing:
        lines.append(f"  missing: {', '.join(c.missing)}")
    if c.decision:
        lines.append(f"  would: {describe_steps(c.decision)}  [{c.decision}]")
    return lines


# ---------------------------------------------------------------- JSON


def _brief_json(brief: BucketBrief | None) -> dict[str, Any] | None:
    if brief is None:
        return None
    return {
        "start": from_micros(brief[0]).isoformat(),
        "end": from_micros(brief[1]).isoformat(),
        "count": brief[2],
    }


def _trigger_json(t: TriggerExplanation) -> dict[str, Any]:
    bucket = t.bucket
    return {
        "trigger_id": str(t.trigger.id),
        "path": t.path,
        "posture": str(t.trigger.posture),
        "threshold": t.trigger.threshold,
        "within": t.trigger.within.total_seconds(),
        "interested": t.interested,
        "name": {
            "interested": t.name.interested,
            "expected": t.name.expected,
            "starts_after": t.name.starts_after,
            "expect_pattern": t.name.expect_pattern,
            "after_pattern": t.name.after_pattern,
            "reason": t.name.reason,
        },
        "resource_failures": list(t.resources.failures),
        "bucketing_key": list(t.key),
        "bucket": None
        if bucket is None
        else {
            **_brief_json((bucket.start_us, bucket.end_us, bucket.count)),  # type: ignore[dict-item]
            "last_operation": bucket.last_operation,
            "last_event_id": (bucket.last_event or {}).get("id"),
        },
        "held_events": t.held_events,
        "decision": t.decision,
        "bucket_after": _brief_json(t.bucket_after),
        "firing_ids": list(t.firing_ids),
    }


def _composite_json(c: CompositeExplanation) -> dict[str, Any]:
    return {
        "trigger_id": str(c.trigger.id),
        "path": c.path,
        "kind": c.trigger.type,
        "expected_firings": c.trigger.num_expected_firings,
        "within": None if c.trigger.within is None else c.trigger.within.total_seconds(),
        "stored": [
            {
                "trigger_id": str(s.trigger_id),
                "path": s.path,
                "firing_id": s.firing_id,
                "at": s.at.isoformat(),
            }
            for s in c.stored
        ],
        "missing": list(c.missing),
        "decision": c.decision,
    }


__all__ = [
    "CompositeExplanation",
    "Explanation",
    "StoredChild",
    "TriggerExplanation",
    "describe_steps",
    "explain_event",
    "render",
    "trigger_paths",
]
