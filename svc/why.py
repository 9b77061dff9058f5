"""Explain after the fact (`python -m svc why`): an automation's recorded decisions, in words.

The records come from the decisions stream (svc/bus/decisions.py); the automation's definition,
when the admin API can give it, turns trigger ids into their places in the document.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson

from svc.bus.decisions import DecisionRecord
from svc.domain.automations import Automation, EventTrigger
from svc.domain.firings import from_micros
from svc.engine.engine import BucketBrief
from svc.explain import describe_steps, trigger_paths

WORDS = {
    "not_covered": "does not reach the trigger: its name is a candidate, its resources are not "
    "covered (match / match_related)",
}


def _time(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _short_time(us: int) -> str:
    return from_micros(us).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bucket(brief: BucketBrief | None, threshold: int | None) -> str:
    if brief is None:
        return "none"
    start, end, count = brief
    of = "" if threshold is None else f" of {threshold}"
    return f"[{_short_time(start)}, {_short_time(end)}) count {count}{of}"


def render_decisions(
    records: Sequence[DecisionRecord],
    automation: Automation | None = None,
    *,
    event_id: str | None = None,
) -> str:
    """Readable in a terminal: one block per event (or proactive window, or composite step),
    oldest first, each trigger's decision in words with its bucket before and after."""
    if not records:
        if event_id is not None:
            return (
                f"no decision recorded for event {event_id}: no trigger of this automation "
                "is interested in its name (such events are not recorded), or it was not "
                "processed in the period asked (or decision records are off)"
            )
        return "no decision recorded in the period asked (or decision records are off)"
    paths = {} if automation is None else {str(i): p for i, p in trigger_paths(automation.trigger)}
    thresholds = (
        {}
        if automation is None
        else {str(t.id): t.threshold for t in automation.all_triggers() if isinstance(t, EventTrigger)}
    )
    lines: list[str] = []
    heading = None
    for record in records:
        block = (record.recorded, record.event_id, record.path)
        if block != heading:
            heading = block
            lines.append(_heading(record))
        where = paths.get(record.trigger_id, f"trigger {record.trigger_id}")
        words = WORDS.get(record.decision) or describe_steps(record.decision)
        if record.path == "composite":
            child = paths.get(record.child_trigger_id or "", record.child_trigger_id)
            words = f"a firing of {child}: {words}"
        lines.append(f"  {where}  [{record.decision}]  {words}")
        threshold = thresholds.get(record.trigger_id)
        if record.path == "proactive" and record.before is not None:
            lines.append(
                f"    bucket {orjson.dumps(list(record.key)).decode()}: "
                f"{_bucket(record.before, threshold)} closed below the threshold"
            )
        elif record.before is not None or record.after is not None:
            lines.append(
                f"    bucket {orjson.dumps(list(record.key)).decode()}: "
                f"{_bucket(record.before, threshold)} -> {_bucket(record.after, threshold)}"
            )
    return "\n".join(lines)


def _heading(record: DecisionRecord) -> str:
    when = _time(record.recorded)
    if record.path == "proactive":
        return f"{when}  proactive evaluation"
    if record.path == "composite":
        return f"{when}  composite"
    occurred = "" if record.occurred is None else f" (occurred {_time(record.occurred)})"
    return f"{when}  event {record.event_name} {record.event_id}{occurred}"
