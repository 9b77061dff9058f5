"""Conversion between the admin API's protobuf messages and automation JSON documents.

The JSON document is the shape `parse_automation` takes (Prefect's REST shape plus `id`), so
validation stays in the domain: `to_document` only maps shapes and never refuses a message;
whatever it produces is judged by `parse_automation`, which names the offending field by its
document path. `from_json_document` maps a valid document (as `Automation.to_json()` gives)
back, so `to_document(from_json_document(doc))` parses to the same automation as `doc`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from pydantic import TypeAdapter, ValidationError

from svc.admin.backend import BucketView
from svc.admin.generated.triggers.admin.v1 import admin_pb2 as pb
from svc.domain.automations import Automation
from svc.domain.errors import InvalidAutomation
from svc.domain.firings import from_micros
from svc.explain import CompositeExplanation, Explanation, TriggerExplanation, render

# Protobuf's Struct holds every number as a double; whole numbers up to this size are exact
# doubles, so they are given back as JSON integers (larger ones stay floats).
LARGEST_EXACT_INTEGER = 2**53
# Protobuf decoders refuse messages nested deeper than 100 levels, and each level of JSON
# inside a Struct takes two (Struct, Value); deeper actions could be stored but not read back.
MAX_ACTION_DEPTH = 32
# The bounds of protobuf's int64, which carries `threshold` (the domain sets no bounds).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_POSTURES = {
    pb.POSTURE_REACTIVE: "Reactive",
    pb.POSTURE_PROACTIVE: "Proactive",
    pb.POSTURE_METRIC: "Metric",
}
_POSTURE_VALUES = {name: value for value, name in _POSTURES.items()}
_QUANTIFIERS = {pb.REQUIRE_QUANTIFIER_ANY: "any", pb.REQUIRE_QUANTIFIER_ALL: "all"}
_QUANTIFIER_VALUES = {name: value for value, name in _QUANTIFIERS.items()}

_timedelta = TypeAdapter(timedelta)


# -- message -> document --


def to_document(message: pb.Automation) -> dict[str, Any]:
    """The JSON document of an Automation message; fields left unset are left out, so the
    domain applies its defaults (and reports a missing required field by name)."""
    document: dict[str, Any] = {}
    if message.id:
        document["id"] = message.id
    document["name"] = message.name
    document["description"] = message.description
    if message.HasField("enabled"):
        document["enabled"] = message.enabled
    document["tags"] = list(message.tags)
    if message.HasField("trigger"):
        document["trigger"] = _trigger_document(message.trigger)
    document["actions"] = [_struct_document(action) for action in message.actions]
    document["actions_on_trigger"] = [
        _struct_document(action) for action in message.actions_on_trigger
    ]
    document["actions_on_resolve"] = [
        _struct_document(action) for action in message.actions_on_resolve
    ]
    if message.HasField("owner_resource"):
        document["owner_resource"] = message.owner_resource
    for name in ("created", "updated"):
        if message.HasField(name):
            document[name] = _timestamp_document(getattr(message, name))
    return document


def _trigger_document(message: pb.Trigger) -> dict[str, Any]:
    kind = message.WhichOneof("type")
    if kind == "event":
        return _event_trigger_document(message.event)
    if kind == "compound":
        document = _composite_document("compound", message.compound)
        require = message.compound.WhichOneof("require")
        if require == "require_count":
            document["require"] = message.compound.require_count
        elif require == "require_quantifier":
            # An unknown or unset quantifier leaves `require` out: "Field required".
            quantifier = _QUANTIFIERS.get(message.compound.require_quantifier)
            if quantifier is not None:
                document["require"] = quantifier
        return document
    if kind == "sequence":
        return _composite_document("sequence", message.sequence)
    # No kind set: a `type` the domain refuses, naming this trigger's path.
    return {"type": None}


def _event_trigger_document(message: pb.EventTrigger) -> dict[str, Any]:
    document: dict[str, Any] = {"type": "event"}
    if message.id:
        document["id"] = message.id
    document["match"] = _spec_document(message.match)
    related = [_spec_document(spec) for spec in message.match_related]
    if message.match_related_is_list or len(related) > 1:
        document["match_related"] = related
    elif related:
        document["match_related"] = related[0]
    document["after"] = list(message.after)
    document["expect"] = list(message.expect)
    document["for_each"] = list(message.for_each)
    if message.posture != pb.POSTURE_UNSPECIFIED:
        # An unknown enum number goes through as a number, which the domain refuses.
        document["posture"] = _POSTURES.get(message.posture, message.posture)
    if message.HasField("threshold"):
        document["threshold"] = message.threshold
    if message.HasField("within"):
        document["within"] = _duration_document(message.within)
    return document


def _composite_document(
    kind: str, message: pb.CompoundTrigger | pb.SequenceTrigger
) -> dict[str, Any]:
    document: dict[str, Any] = {"type": kind}
    if message.id:
        document["id"] = message.id
    document["triggers"] = [_trigger_document(child) for child in message.triggers]
    # The server requires the key; unset means no limit, which JSON writes as null.
    document["within"] = _duration_document(message.within) if message.HasField("within") else None
    return document


def _spec_document(message: pb.ResourceSpecification) -> dict[str, str | list[str]]:
    # Sorted, because protobuf maps have no order; matching does not depend on it.
    return {
        label: (
            patterns.values[0]
            if len(patterns.values) == 1 and not patterns.is_list
            else list(patterns.values)
        )
        for label, patterns in sorted(message.labels.items())
    }


def _duration_document(message: duration_pb2.Duration) -> float:
    # Float seconds, as Prefect writes durations (SEMANTICS 3.8).
    return message.seconds + message.nanos / 1e9


def _timestamp_document(message: timestamp_pb2.Timestamp) -> str | dict[str, int]:
    try:
        return message.ToDatetime(tzinfo=UTC).isoformat()
    except (ValueError, OverflowError):
        # Beyond the years 1-9999: passed on as it is, for the domain to refuse by name.
        return {"seconds": message.seconds, "nanos": message.nanos}


def _struct_document(message: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _value_document(value) for key, value in message.fields.items()}


def _value_document(message: struct_pb2.Value) -> Any:
    kind = message.WhichOneof("kind")
    if kind == "number_value":
        number = message.number_value
        if number.is_integer() and abs(number) <= LARGEST_EXACT_INTEGER:
            return int(number)
        return number
    if kind == "string_value":
        return message.string_value
    if kind == "bool_value":
        return message.bool_value
    if kind == "struct_value":
        return _struct_document(message.struct_value)
    if kind == "list_value":
        return [_value_document(item) for item in message.list_value.values]
    return None


# -- document -> message --


def from_json_document(document: Mapping[str, Any]) -> pb.Automation:
    """The Automation message of a valid automation document (numbers or duration strings
    for durations, a string or a list for each label's patterns, one object or a list for
    `match_related`); the shape of every value is kept, so the way back gives it again.

    Raises `InvalidAutomation`, naming the field, for a value the domain accepts but the
    message cannot carry (a `threshold` beyond int64) or a shape it does not know.
    """
    message = pb.Automation(
        name=document.get("name", ""),
        description=document.get("description", ""),
        tags=document.get("tags", []),
    )
    if document.get("id") is not None:
        message.id = str(document["id"])
    if "enabled" in document:
        message.enabled = document["enabled"]
    if document.get("trigger") is not None:
        message.trigger.CopyFrom(_trigger_message(document["trigger"], "trigger"))
    for name in ("actions", "actions_on_trigger", "actions_on_resolve"):
        for position, action in enumerate(document.get(name, [])):
            if _depth(action) > MAX_ACTION_DEPTH:
                raise InvalidAutomation.single(
                    f"{name}.{position}",
                    f"nested deeper than {MAX_ACTION_DEPTH} levels, more than the admin API "
                    "can carry; flatten it",
                )
            getattr(message, name).add().update(action)
    if document.get("owner_resource") is not None:
        message.owner_resource = document["owner_resource"]
    for name in ("created", "updated"):
        if document.get(name) is not None:
            getattr(message, name).CopyFrom(_timestamp_message(document[name]))
    return message


def _depth(value: Any) -> int:
    """How deeply JSON objects and arrays nest in `value` (a scalar is 0). Iterative: JSON
    may nest deeper than Python's recursion limit."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
    return deepest


def _trigger_message(document: Mapping[str, Any], path: str) -> pb.Trigger:
    kind = document.get("type", "event")
    if kind == "event":
        return pb.Trigger(event=_event_trigger_message(document, path))
    if kind == "compound":
        compound = pb.CompoundTrigger()
        _fill_composite(compound, document, path)
        require = document.get("require")
        if isinstance(require, str) and require in _QUANTIFIER_VALUES:
            compound.require_quantifier = _QUANTIFIER_VALUES[require]
        elif isinstance(require, int) and not isinstance(require, bool):
            compound.require_count = _int64(require, f"{path}.require")
        else:
            raise InvalidAutomation.single(f"{path}.require", "must be a number, 'any' or 'all'")
        return pb.Trigger(compound=compound)
    if kind == "sequence":
        sequence = pb.SequenceTrigger()
        _fill_composite(sequence, document, path)
        return pb.Trigger(sequence=sequence)
    raise InvalidAutomation.single(
        f"{path}.type", "`type` must be one of 'event', 'compound' or 'sequence'"
    )


def _int64(value: int, path: str) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidAutomation.single(
            path, f"{value} does not fit the admin API's 64-bit integer; use a smaller number"
        )
    return value


def _event_trigger_message(document: Mapping[str, Any], path: str) -> pb.EventTrigger:
    message = pb.EventTrigger(
        after=document.get("after", []),
        expect=document.get("expect", []),
        for_each=document.get("for_each", []),
    )
    if document.get("id") is not None:
        message.id = str(document["id"])
    if "match" in document:
        message.match.CopyFrom(_spec_message(document["match"]))
    related = document.get("match_related")
    if isinstance(related, list):
        message.match_related_is_list = True
        message.match_related.extend(_spec_message(spec) for spec in related)
    elif related is not None:
        message.match_related.append(_spec_message(related))
    if "posture" in document:
        posture = _POSTURE_VALUES.get(document["posture"])
        if posture is None:
            raise InvalidAutomation.single(f"{path}.posture", "must be Reactive or Proactive")
        message.posture = posture
    if "threshold" in document:
        message.threshold = _int64(document["threshold"], f"{path}.threshold")
    if document.get("within") is not None:
        message.within.CopyFrom(_duration_message(document["within"], f"{path}.within"))
    return message


def _fill_composite(
    message: pb.CompoundTrigger | pb.SequenceTrigger, document: Mapping[str, Any], path: str
) -> None:
    if document.get("id") is not None:
        message.id = str(document["id"])
    message.triggers.extend(
        _trigger_message(child, f"{path}.triggers.{position}")
        for position, child in enumerate(document.get("triggers", []))
    )
    if document.get("within") is not None:
        message.within.CopyFrom(_duration_message(document["within"], f"{path}.within"))


def _spec_message(document: Mapping[str, Any]) -> pb.ResourceSpecification:
    message = pb.ResourceSpecification()
    for label, value in document.items():
        patterns = message.labels[label]
        if isinstance(value, str):
            patterns.values.append(value)
        else:
            patterns.values.extend(value)
            patterns.is_list = True
    return message


def _duration_message(value: float | str | timedelta, path: str) -> duration_pb2.Duration:
    # Read as the domain reads it (seconds rounded to microseconds, ISO 8601, HH:MM:SS), so
    # both ways give the domain the same timedelta.
    if not isinstance(value, timedelta):
        try:
            value = _timedelta.validate_python(value)
        except ValidationError as exc:
            raise InvalidAutomation.from_pydantic(exc, prefix=path) from None
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def _timestamp_message(value: str | datetime) -> timestamp_pb2.Timestamp:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


# -- domain objects -> response messages --


def stored_automation(automation: Automation) -> pb.StoredAutomation:
    """A stored automation in both shapes: message and JSON document."""
    document = automation.to_json()
    return pb.StoredAutomation(
        automation=from_json_document(document),
        json=orjson.dumps(document).decode(),
    )


def bucket_message(bucket: BucketView) -> pb.Bucket:
    message = pb.Bucket(
        bucketing_key=bucket.key,
        count=bucket.count,
        last_event_id=bucket.last_event_id or "",
        last_event_name=bucket.last_event_name or "",
        last_operation=bucket.last_operation,
    )
    message.start.FromDatetime(bucket.start)
    message.end.FromDatetime(bucket.end)
    return message


# -- explain --


def explanation_message(explanation: Explanation) -> pb.ExplainEventResponse:
    """ExplainEvent's answer: the explanation's fields, and its text for a terminal."""
    return pb.ExplainEventResponse(
        intake=explanation.intake,
        intake_reason=explanation.intake_reason,
        loaded=explanation.loaded,
        triggers=[_trigger_explanation(t) for t in explanation.triggers],
        composites=[_composite_explanation(c) for c in explanation.composites],
        event_json=explanation.event.json_bytes.decode(),
        text=render(explanation),
    )


def _trigger_explanation(t: TriggerExplanation) -> pb.TriggerExplanation:
    message = pb.TriggerExplanation(
        trigger_id=str(t.trigger.id),
        path=t.path,
        interested=t.interested,
        name_reason=t.name.reason,
        expected=t.name.expected,
        starts_after=t.name.starts_after,
        expect_pattern=t.name.expect_pattern or "",
        after_pattern=t.name.after_pattern or "",
        resource_failures=list(t.resources.failures),
        bucketing_key=list(t.key),
        held_events=t.held_events,
        decision=t.decision,
        firing_ids=list(t.firing_ids),
    )
    if t.bucket is not None:
        b = t.bucket
        last = b.last_event or {}
        message.bucket.CopyFrom(
            bucket_message(
                BucketView(
                    key=b.key,
                    start=from_micros(b.start_us),
                    end=from_micros(b.end_us),
                    count=b.count,
                    last_event_id=last.get("id"),
                    last_event_name=last.get("event"),
                    last_operation=b.last_operation,
                )
            )
        )
    if t.bucket_after is not None:
        start, end, count = t.bucket_after
        message.bucket_after.CopyFrom(
            bucket_message(
                BucketView(
                    key=t.key,
                    start=from_micros(start),
                    end=from_micros(end),
                    count=count,
                    last_event_id=None,
                    last_event_name=None,
                    last_operation="",
                )
            )
        )
    return message


def _composite_explanation(c: CompositeExplanation) -> pb.CompositeExplanation:
    stored = []
    for child in c.stored:
        entry = pb.StoredChildFiring(
            trigger_id=str(child.trigger_id), path=child.path, firing_id=child.firing_id
        )
        entry.at.FromDatetime(child.at)
        stored.append(entry)
    return pb.CompositeExplanation(
        trigger_id=str(c.trigger.id),
        path=c.path,
        kind=c.trigger.type,
        expected_firings=c.trigger.num_expected_firings,
        stored=stored,
        missing=list(c.missing),
        decision=c.decision,
    )
