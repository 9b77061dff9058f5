"""Hypothesis strategies: valid automation documents, arbitrary JSON, random Automation
messages (valid or not)."""

from __future__ import annotations

import copy
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from hypothesis import strategies as st

from svc.admin.generated.triggers.admin.v1 import admin_pb2 as pb

# Protobuf strings must be valid UTF-8: no lone surrogates.
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
# Integers a Struct (a double) carries exactly.
exact_integers = st.integers(-(2**53), 2**53)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    exact_integers,
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(texts, children, max_size=3)
    ),
    max_leaves=8,
)
action_types = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
actions = st.builds(
    lambda kind, rest: {**rest, "type": kind},
    action_types,
    st.dictionaries(texts, json_values, max_size=3),
)

# -- valid documents --

patterns = st.one_of(texts, st.lists(texts, max_size=3))
specs = st.dictionaries(texts, patterns, max_size=3)
seconds = st.one_of(
    st.integers(0, 10**7),
    st.floats(0, 1e7, allow_nan=False, allow_infinity=False),
)


@st.composite
def event_triggers(draw: st.DrawFn) -> dict[str, Any]:
    trigger: dict[str, Any] = {"posture": draw(st.sampled_from(["Reactive", "Proactive"]))}
    if draw(st.booleans()):
        trigger["type"] = "event"
    if draw(st.booleans()):
        trigger["id"] = str(draw(st.uuids()))
    if draw(st.booleans()):
        trigger["match"] = draw(specs)
    related = draw(st.one_of(st.none(), specs, st.lists(specs, max_size=3)))
    if related is not None:
        trigger["match_related"] = related
    for name in ("after", "expect", "for_each"):
        if draw(st.booleans()):
            trigger[name] = draw(st.lists(texts, max_size=3))
    if draw(st.booleans()):
        trigger["threshold"] = draw(st.integers(-(2**63), 2**63 - 1))
    if draw(st.booleans()):
        within = draw(seconds)
        # Proactive windows are 0 (meaning 10 s) or at least 10 s (SEMANTICS 3.3).
        if trigger["posture"] == "Proactive" and 0 < within < 10:
            within += 10
        trigger["within"] = within
    return trigger


@st.composite
def composite_triggers(draw: st.DrawFn, children: st.SearchStrategy[dict]) -> dict[str, Any]:
    kind = draw(st.sampled_from(["compound", "sequence"]))
    members = draw(st.lists(children, min_size=1, max_size=3))
    trigger: dict[str, Any] = {
        "type": kind,
        "triggers": members,
        "within": draw(st.one_of(st.none(), seconds)),
    }
    if draw(st.booleans()):
        trigger["id"] = str(draw(st.uuids()))
    if kind == "compound":
        trigger["require"] = draw(
            st.one_of(st.sampled_from(["any", "all"]), st.integers(1, len(members)))
        )
    return trigger


triggers = st.recursive(event_triggers(), composite_triggers, max_leaves=5)


@st.composite
def automation_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents the domain accepts (nearly always: ids may repeat, loop guard may trip)."""
    doc: dict[str, Any] = {
        "id": str(draw(st.uuids())),
        "name": draw(texts),
        "trigger": draw(triggers),
        "actions": draw(st.lists(actions, max_size=2)),
    }
    if draw(st.booleans()):
        doc["description"] = draw(texts)
    if draw(st.booleans()):
        doc["enabled"] = draw(st.booleans())
    if draw(st.booleans()):
        doc["tags"] = draw(st.lists(texts, max_size=3))
    for name in ("actions_on_trigger", "actions_on_resolve"):
        if draw(st.booleans()):
            doc[name] = draw(st.lists(actions, max_size=2))
    if draw(st.booleans()):
        doc["owner_resource"] = draw(st.one_of(st.none(), texts))
    return doc


# -- mutations of valid documents --


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> Any:
    """A document with one value somewhere replaced, removed, or an unknown key added."""
    # A copy: sampled documents are shared between examples.
    doc = copy.deepcopy(draw(documents))
    parent: Any = None
    key: Any = None
    node = doc
    # Walk down a random path; stop at a leaf or when the draw says so.
    while isinstance(node, dict | list) and node and draw(st.booleans()):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, draw(st.sampled_from(keys))
        node = node[key]
    operation = draw(st.sampled_from(["replace", "remove", "add"]))
    if parent is None:
        return draw(json_values) if operation == "replace" else {**doc, "surprise": 1}
    if operation == "replace":
        parent[key] = draw(json_values)
    elif operation == "remove":
        del parent[key]
    elif isinstance(parent[key], dict):
        parent[key][draw(texts)] = draw(json_values)
    else:
        parent[key] = draw(json_values)
    return doc


# -- random messages --

int64s = st.integers(-(2**63), 2**63 - 1)
int32s = st.integers(-(2**31), 2**31 - 1)
ids = st.one_of(st.just(""), st.uuids().map(str), texts)
durations = st.one_of(
    st.builds(lambda s: duration_pb2.Duration(seconds=s), st.integers(-20, 10**6)),
    st.builds(lambda s, n: duration_pb2.Duration(seconds=s, nanos=n), int64s, int32s),
)
timestamps = st.builds(
    lambda s, n: timestamp_pb2.Timestamp(seconds=s, nanos=n),
    st.one_of(st.integers(0, 2**34), int64s),
    st.one_of(st.just(0), int32s),
)
pattern_messages = st.builds(
    lambda values, is_list: pb.Patterns(values=values, is_list=is_list),
    st.lists(texts, max_size=3),
    st.booleans(),
)
spec_messages = st.dictionaries(texts, pattern_messages, max_size=3).map(
    lambda labels: pb.ResourceSpecification(labels=labels)
)
postures = st.one_of(st.sampled_from(list(pb.Posture.values())), int32s)


@st.composite
def event_trigger_messages(draw: st.DrawFn) -> pb.Trigger:
    message = pb.EventTrigger(
        id=draw(ids),
        match=draw(spec_messages),
        match_related=draw(st.lists(spec_messages, max_size=2)),
        match_related_is_list=draw(st.booleans()),
        after=draw(st.lists(texts, max_size=2)),
        expect=draw(st.lists(texts, max_size=2)),
        for_each=draw(st.lists(texts, max_size=2)),
        posture=draw(postures),
    )
    if draw(st.booleans()):
        message.threshold = draw(int64s)
    if draw(st.booleans()):
        message.within.CopyFrom(draw(durations))
    return pb.Trigger(event=message)


@st.composite
def composite_trigger_messages(
    draw: st.DrawFn, children: st.SearchStrategy[pb.Trigger]
) -> pb.Trigger:
    members = draw(st.lists(children, max_size=3))
    within = draw(st.one_of(st.none(), durations))
    if draw(st.booleans()):
        message = pb.SequenceTrigger(id=draw(ids), triggers=members, within=within)
        return pb.Trigger(sequence=message)
    compound = pb.CompoundTrigger(id=draw(ids), triggers=members, within=within)
    require = draw(st.sampled_from(["none", "count", "quantifier"]))
    if require == "count":
        compound.require_count = draw(st.one_of(st.integers(-1, 4), int64s))
    elif require == "quantifier":
        compound.require_quantifier = draw(
            st.one_of(st.sampled_from(list(pb.RequireQuantifier.values())), int32s)
        )
    return pb.Trigger(compound=compound)


trigger_messages = st.recursive(
    st.one_of(st.just(pb.Trigger()), event_trigger_messages()),
    composite_trigger_messages,
    max_leaves=5,
)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


struct_actions = st.one_of(actions, st.dictionaries(texts, json_values, max_size=3)).map(_struct)


@st.composite
def automation_messages(draw: st.DrawFn) -> pb.Automation:
    """Automation messages with random values in every field, valid or not."""
    message = pb.Automation(
        id=draw(st.one_of(st.just(""), st.uuids().map(str), texts)),
        name=draw(texts),
        description=draw(texts),
        tags=draw(st.lists(texts, max_size=2)),
        actions=draw(st.lists(struct_actions, max_size=2)),
        actions_on_trigger=draw(st.lists(struct_actions, max_size=1)),
    )
    if draw(st.booleans()):
        message.enabled = draw(st.booleans())
    if draw(st.integers(0, 9)):
        message.trigger.CopyFrom(draw(trigger_messages))
    if draw(st.booleans()):
        message.owner_resource = draw(texts)
    for name in ("created", "updated"):
        if draw(st.booleans()):
            getattr(message, name).CopyFrom(draw(timestamps))
    return message
