"""Decision records: what each evaluation decided, kept in a bounded JetStream stream so that
"why did (or didn't) it fire?" can be answered after the fact (`python -m svc why`).

The engine collects one `Decision` per (event, interested trigger), per proactive firing and
per child firing applied to a composite; the service hands each batch's decisions to
`DecisionRecorder`, which publishes them grouped by automation, one message per automation
and batch, on `<decisions prefix>.<automation id>`, so a reader filters one automation by
subject. The stream's max age and max bytes (settings) bound it.

Publishing is core NATS (the stream captures the subject), without waiting for JetStream's
acknowledgement: a record is a diagnostic, never worth slowing intake down or failing it;
one lost in a crash or a NATS outage is lost.

A message is compact JSON with short keys:

    {"v": 1, "a": <automation id>, "w": <wall clock, us>, "r": [<record>, ...]}

and a record:

    t  trigger id                  d  decision: the steps, space-separated ("counted fired")
    p  path: "r" reactive (left out), "p" proactive (a window closed), "c" composite
    e  event id    n  event name    o  event occurred (us)          (reactive)
    k  bucketing key (left out when empty)
    b  bucket before, [start us, end us, count]; x  bucket after   (left out when none)
    c  the child trigger whose firing reached the composite       (composite)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from svc.bus.history import read_history
from svc.config import Settings
from svc.domain.firings import from_micros
from svc.engine.engine import BucketBrief, Decision

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Records per message: keeps a message far below NATS's default 1 MB payload limit.
RECORDS_PER_MESSAGE = 500
_PATHS = {"reactive": "r", "proactive": "p", "composite": "c"}
_PATH_NAMES = {short: name for name, short in _PATHS.items()}


def decisions_subject(settings: Settings, automation_id: UUID | str) -> str:
    return f"{settings.decisions_subject_prefix}.{automation_id}"


def encode_record(decision: Decision) -> dict[str, Any]:
    # ids stay UUIDs: orjson writes them as their canonical strings, faster than str() here
    record: dict[str, Any] = {"t": decision.trigger_id, "d": decision.steps}
    if decision.path != "reactive":
        record["p"] = _PATHS[decision.path]
    if decision.event_id is not None:
        record["e"] = decision.event_id
        record["n"] = decision.event_name
        record["o"] = decision.occurred_us
    if decision.key:
        record["k"] = list(decision.key)
    if decision.before is not None:
        record["b"] = list(decision.before)
    if decision.after is not None:
        record["x"] = list(decision.after)
    if decision.child_trigger_id is not None:
        record["c"] = str(decision.child_trigger_id)
    return record


def encode_messages(
    decisions: Sequence[Decision], wall_us: int
) -> list[tuple[str, bytes]]:
    """(automation id, message body) for a batch of decisions, grouped by automation."""
    by_automation: dict[UUID, list[dict[str, Any]]] = {}
    for decision in decisions:
        by_automation.setdefault(decision.automation_id, []).append(encode_record(decision))
    messages = []
    for automation_id, records in by_automation.items():
        text = str(automation_id)
        for start in range(0, len(records), RECORDS_PER_MESSAGE):
            body = {
                "v": FORMAT_VERSION,
                "a": text,
                "w": wall_us,
                "r": records[start : start + RECORDS_PER_MESSAGE],
            }
            messages.append((text, orjson.dumps(body)))
    return messages


class DecisionRecorder:
    """Publishes decision records; never raises, never waits for JetStream."""

    def __init__(self, nc: NATS, settings: Settings):
        self.nc = nc
        self.settings = settings
        self.published = 0  # messages handed to the connection
        self.failed = 0

    async def record(self, decisions: Sequence[Decision], wall_us: int) -> None:
        for automation_id, body in encode_messages(decisions, wall_us):
            try:
                await self.nc.publish(decisions_subject(self.settings, automation_id), body)
                self.published += 1
            except Exception:
                # a diagnostic must never fail intake; the log says records were lost
                self.failed += 1
                logger.exception("could not publish decision records; they are lost")


@dataclass(frozen=True)
class DecisionRecord:
    """One decision as `why` reads it back."""

    automation_id: str
    recorded: datetime  # the wall clock of the service when it decided
    trigger_id: str
    decision: str
    path: str  # reactive, proactive or composite
    event_id: str | None = None
    event_name: str | None = None
    occurred: datetime | None = None
    key: tuple[str, ...] = ()
    before: BucketBrief | None = None
    after: BucketBrief | None = None
    child_trigger_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "automation_id": self.automation_id,
            "recorded": self.recorded.isoformat(),
            "trigger_id": self.trigger_id,
            "decision": self.decision,
            "path": self.path,
            "event_id": self.event_id,
            "event_name": self.event_name,
            "occurred": None if self.occurred is None else self.occurred.isoformat(),
            "bucketing_key": list(self.key),
            "bucket_before": _brief_json(self.before),
            "bucket_after": _brief_json(self.after),
            "child_trigger_id": self.child_trigger_id,
        }


def _brief_json(brief: BucketBrief | None) -> dict[str, Any] | None:
    if brief is None:
        return None
    start, end, count = brief
    return {
        "start": from_micros(start).isoformat(),
        "end": from_micros(end).isoformat(),
        "count": count,
    }


def _brief(value: Any) -> BucketBrief | None:
    return None if value is None else (int(value[0]), int(value[1]), int(value[2]))


def decode_message(data: bytes) -> list[DecisionRecord]:
    """The records of one message (the format of the module docstring)."""
    body = orjson.loads(data)
    recorded = from_micros(int(body["w"]))
    records = []
    for r in body["r"]:
        occurred = r.get("o")
        records.append(
            DecisionRecord(
                automation_id=body["a"],
                recorded=recorded,
                trigger_id=r["t"],
                decision=r["d"],
                path=_PATH_NAMES.get(r.get("p", "r"), "reactive"),
                event_id=r.get("e"),
                event_name=r.get("n"),
                occurred=None if occurred is None else from_micros(int(occurred)),
                key=tuple(r.get("k", ())),
                before=_brief(r.get("b")),
                after=_brief(r.get("x")),
                child_trigger_id=r.get("c"),
            )
        )
    return records


async def read_decisions(
    js: JetStreamContext,
    settings: Settings,
    automation_id: UUID | str,
    *,
    since: datetime | None = None,
    event_id: str | None = None,
) -> AsyncIterator[DecisionRecord]:
    """The recorded decisions of one automation, oldest first (optionally of one event)."""
    subject = decisions_subject(settings, automation_id)
    async for message in read_history(js, settings.decisions_stream, subject, start=since):
        for record in decode_message(message.data):
            if event_id is None or record.event_id == event_id:
                yield record
