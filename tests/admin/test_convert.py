"""Conversion between Automation messages and JSON documents: shapes only, both ways."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, example, given, settings

from svc.admin.convert import (
    MAX_ACTION_DEPTH,
    from_json_document,
    to_document,
)
from svc.admin.generated.triggers.admin.v1 import admin_pb2 as pb
from svc.domain.automations import parse_automation
from svc.domain.errors import InvalidAutomation
from tests.admin.documents import NESTED, SIMPLE, document
from tests.admin.strategies import automation_documents, automation_messages

AUTOMATION_ID = "7d6f3b1e-2c4a-4e8b-9f10-1a2b3c4d5e6f"


def parsed_json(doc: dict[str, Any]) -> dict[str, Any]:
    return parse_automation(doc).to_json()


def event(**fields: Any) -> dict[str, Any]:
    return {"type": "event", "posture": "Reactive", **fields}


def with_trigger(trigger: dict[str, Any]) -> dict[str, Any]:
    return document(SIMPLE, id=AUTOMATION_ID, trigger=trigger)


@given(automation_documents())
@example(document(NESTED, id=AUTOMATION_ID))
@example(with_trigger(event(match_related=[])))
@example(with_trigger(event(match_related={}, match={"a": [], "b": [""], "c": ""})))
@settings(max_examples=300, deadline=None)
def test_a_document_survives_the_message_and_back(doc: dict[str, Any]) -> None:
    try:
        expected = parsed_json(doc)
    except InvalidAutomation:
        assume(False)  # the rare repeated trigger id or tripped loop guard

    message = from_json_document(doc)

    assert parsed_json(to_document(message)) == expected
    # From the normalized document, conversion gives back the very same document.
    assert to_document(from_json_document(expected)) == expected


@pytest.mark.parametrize(
    ("value", "patterns"),
    [
        ("a*", pb.Patterns(values=["a*"])),
        (["a*"], pb.Patterns(values=["a*"], is_list=True)),
        ([], pb.Patterns(is_list=True)),
        (["a", "!b"], pb.Patterns(values=["a", "!b"], is_list=True)),
    ],
)
def test_a_label_keeps_its_string_or_list_spelling(value: Any, patterns: pb.Patterns) -> None:
    message = from_json_document(with_trigger(event(match={"label": value})))

    assert message.trigger.event.match.labels["label"] == patterns
    assert to_document(message)["trigger"]["match"] == {"label": value}


def test_several_patterns_are_a_list_whatever_the_flag_says() -> None:
    spec = pb.ResourceSpecification(labels={"label": pb.Patterns(values=["a", "b"])})
    message = pb.Automation(trigger=pb.Trigger(event=pb.EventTrigger(match=spec)))

    assert to_document(message)["trigger"]["match"] == {"label": ["a", "b"]}


@pytest.mark.parametrize(
    ("related", "specs", "is_list"),
    [
        ({}, [{}], False),
        ({"role": "flow"}, [{"role": "flow"}], False),
        ([], [], True),
        ([{"role": "flow"}], [{"role": "flow"}], True),
    ],
)
def test_match_related_keeps_its_object_or_list_spelling(
    related: Any, specs: list[dict[str, Any]], is_list: bool
) -> None:
    message = from_json_document(with_trigger(event(match_related=related)))

    trigger = message.trigger.event
    assert trigger.match_related_is_list is is_list
    assert [to_document_spec(spec) for spec in trigger.match_related] == specs
    assert to_document(message)["trigger"]["match_related"] == related


def to_document_spec(spec: pb.ResourceSpecification) -> dict[str, Any]:
    message = pb.Automation(trigger=pb.Trigger(event=pb.EventTrigger(match=spec)))
    return to_document(message)["trigger"]["match"]


def test_unset_fields_are_left_to_the_domain_defaults() -> None:
    message = pb.Automation(
        name="n", trigger=pb.Trigger(event=pb.EventTrigger(posture=pb.POSTURE_PROACTIVE))
    )

    doc = to_document(message)

    assert "enabled" not in doc and "id" not in doc
    assert "threshold" not in doc["trigger"] and "within" not in doc["trigger"]
    assert "match_related" not in doc["trigger"]
    automation = parse_automation({**doc, "id": AUTOMATION_ID})
    assert automation.enabled
    assert automation.trigger.threshold == 1
    assert automation.trigger.within.total_seconds() == 10  # the Proactive minimum


def test_composite_within_unset_is_null_and_require_maps_both_ways() -> None:
    doc = with_trigger(
        {"type": "compound", "require": "all", "within": None, "triggers": [event()]}
    )

    message = from_json_document(doc)

    compound = message.trigger.compound
    assert not compound.HasField("within")
    assert compound.require_quantifier == pb.REQUIRE_QUANTIFIER_ALL
    assert to_document(message)["trigger"]["within"] is None
    assert to_document(message)["trigger"]["require"] == "all"


def test_whole_numbers_in_actions_come_back_as_integers() -> None:
    doc = document(
        SIMPLE,
        id=AUTOMATION_ID,
        actions=[{"type": "t", "n": 3, "f": 2.5, "big": 2.0**60, "nested": [{"k": 1}]}],
    )

    action = to_document(from_json_document(doc))["actions"][0]

    assert action == {"type": "t", "n": 3, "f": 2.5, "big": 2.0**60, "nested": [{"k": 1}]}
    assert isinstance(action["n"], int) and isinstance(action["big"], float)


def test_a_threshold_beyond_int64_cannot_be_carried() -> None:
    with pytest.raises(InvalidAutomation) as info:
        from_json_document(with_trigger(event(threshold=2**63)))
    assert info.value.first_path == "trigger.threshold"


def test_actions_nested_too_deep_for_protobuf_cannot_be_carried() -> None:
    nested: Any = 1
    for _ in range(MAX_ACTION_DEPTH):
        nested = [nested]
    from_json_document(document(SIMPLE, actions=[{"type": "t", "deep": nested[0]}]))

    with pytest.raises(InvalidAutomation) as info:
        from_json_document(document(SIMPLE, actions=[{"type": "t"}, {"type": "t", "x": nested}]))
    assert info.value.first_path == "actions.1"


@given(automation_messages())
@settings(max_examples=300, deadline=None)
def test_any_message_maps_to_a_document_the_domain_judges(message: pb.Automation) -> None:
    """Conversion never refuses or crashes: the domain accepts the document or names the
    field it refuses."""
    doc = to_document(message)
    try:
        parse_automation(doc)
    except InvalidAutomation as exc:
        assert exc.errors
