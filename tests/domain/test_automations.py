"""Automations and triggers: schema, defaults, validation and the trigger's questions (SEMANTICS 3)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from svc.domain.automations import (
    Automation,
    CompoundTrigger,
    EventTrigger,
    Posture,
    SequenceTrigger,
    parse_automation,
    parse_automation_json,
)
from svc.domain.errors import InvalidAutomation
from svc.domain.events import ReceivedEvent, validate_event
from tests.domain.strategies import any_json, json_scalars

AUTOMATION_ID = "aaaaaaaa-0000-4000-8000-000000000001"
OTHER_AUTOMATION_ID = "aaaaaaaa-0000-4000-8000-000000000002"
TRIGGER_ID = "bbbbbbbb-0000-4000-8000-000000000001"
CHILD_ID = "bbbbbbbb-0000-4000-8000-000000000002"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def reactive(**fields: Any) -> dict[str, Any]:
    return {"posture": "Reactive", **fields}


def proactive(**fields: Any) -> dict[str, Any]:
    return {"posture": "Proactive", **fields}


def compound(*children: dict[str, Any], require: Any = "all", **fields: Any) -> dict[str, Any]:
    return {
        "type": "compound",
        "require": require,
        "within": None,
        **fields,
        "triggers": list(children),
    }


def sequence(*children: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"type": "sequence", "within": None, **fields, "triggers": list(children)}


def automation_doc(trigger: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A minimal valid automation document; `fields` replace or add top-level fields."""
    doc: dict[str, Any] = {
        "id": AUTOMATION_ID,
        "name": "my automation",
        "trigger": reactive() if trigger is None else trigger,
        "actions": [{"type": "do-nothing"}],
    }
    doc.update(fields)
    return doc


def parse(trigger: dict[str, Any] | None = None, **fields: Any) -> Automation:
    return parse_automation(automation_doc(trigger, **fields))


def event_trigger(trigger: dict[str, Any]) -> EventTrigger:
    parsed = parse(trigger).trigger
    assert isinstance(parsed, EventTrigger)
    return parsed


def assert_refused(doc: Any, path: str, *fragments: str) -> InvalidAutomation:
    """The document is refused with an error at `path` whose message has every fragment."""
    with pytest.raises(InvalidAutomation) as caught:
        parse_automation(doc)
    error = caught.value
    by_path = {e.path: e.message for e in error.errors}
    assert path in by_path, error.errors
    for fragment in fragments:
        assert fragment in by_path[path], by_path[path]
    return error


def event(
    *, resource: dict[str, str] | None = None, related: list[dict[str, str]] | None = None
) -> ReceivedEvent:
    return validate_event(
        {
            "occurred": NOW.isoformat(),
            "event": "prefect.flow-run.Completed",
            "resource": {"prefect.resource.id": "prefect.flow-run.1", **(resource or {})},
            "related": related or [],
            "id": "cccccccc-0000-4000-8000-000000000001",
        },
        received=NOW,
    )


# -- 3.1 Automation --


def test_automation_defaults() -> None:
    """SEMANTICS 3.1: description "", enabled true, tags [], on_trigger/on_resolve []."""
    automation = parse()
    assert automation.id == UUID(AUTOMATION_ID)
    assert automation.name == "my automation"
    assert automation.description == ""
    assert automation.enabled is True
    assert automation.tags == []
    assert automation.actions == [{"type": "do-nothing"}]
    assert automation.actions_on_trigger == []
    assert automation.actions_on_resolve == []
    assert automation.owner_resource is None


@pytest.mark.parametrize("field", ["name", "trigger", "actions"])
def test_automation_required_fields(field: str) -> None:
    """SEMANTICS 3.1: `name`, `trigger` and `actions` are required."""
    doc = automation_doc()
    del doc[field]
    assert_refused(doc, field, "required")


def test_actions_may_be_empty() -> None:
    """SEMANTICS 3.1: `actions` is required but may be an empty list."""
    assert parse(actions=[]).actions == []


def test_unknown_top_level_fields_are_refused() -> None:
    """SEMANTICS 3.1: the create/update request models forbid unknown fields."""
    assert_refused(automation_doc(colour="blue"), "colour", "Extra inputs are not permitted")


def test_id_created_updated_and_owner_resource_are_accepted() -> None:
    """SEMANTICS 3.1: `id`, the DB timestamps and the create request's `owner_resource`."""
    automation = parse(
        created="2026-01-01T00:00:00",
        updated="2026-01-02T01:00:00+01:00",
        owner_resource="prefect.deployment.abc",
    )
    assert automation.created == datetime(2026, 1, 1, tzinfo=UTC)
    assert automation.updated == datetime(2026, 1, 2, tzinfo=UTC)
    assert automation.owner_resource == "prefect.deployment.abc"
    assert parse(owner_resource=None, created=None, updated=None).owner_resource is None


def test_id_must_be_a_uuid() -> None:
    """SEMANTICS 3.1: `id` is a UUID."""
    assert_refused(automation_doc(id="automation-1"), "id", "UUID")


def test_tags_are_strings() -> None:
    """SEMANTICS 3.1: `tags` is a list of strings."""
    assert parse(tags=["a", "b"]).tags == ["a", "b"]
    assert_refused(automation_doc(tags=["a", 1]), "tags.1", "string")


@pytest.mark.parametrize("field", ["actions", "actions_on_trigger", "actions_on_resolve"])
def test_action_type_is_required(field: str) -> None:
    """Every action needs a `type`: it names the subject `actions.<type>.<automation id>`."""
    doc = automation_doc(**{field: [{"type": "do-nothing"}, {"deployment_id": "x"}]})
    assert_refused(doc, f"{field}.1", "action 1 needs a `type`", "got None")


@pytest.mark.parametrize("kind", ["", "a.b", "a b", "a*", "a>", 5, None, ["x"]])
def test_action_type_must_be_subject_safe(kind: Any) -> None:
    """A type with '.', spaces, wildcards or a non-string would break the subject."""
    assert_refused(automation_doc(actions=[{"type": kind}]), "actions.0", "letters, digits")


@pytest.mark.parametrize("kind", ["run-deployment", "send_notification", "callWebhook2"])
def test_subject_safe_action_types_are_accepted(kind: str) -> None:
    assert parse(actions=[{"type": kind}]).actions[0]["type"] == kind


def test_action_must_be_an_object() -> None:
    """An action is an object with a `type`."""
    assert_refused(automation_doc(actions=["do-nothing"]), "actions.0", "dictionary")


def test_error_names_every_offending_field() -> None:
    """A document with several problems reports each one by its path."""
    doc = automation_doc(reactive(threshold="many", within=-1), name=None, colour=1)
    with pytest.raises(InvalidAutomation) as caught:
        parse_automation(doc)
    assert {e.path for e in caught.value.errors} >= {
        "name",
        "colour",
        "trigger.threshold",
        "trigger.within",
    }
    assert str(caught.value).startswith("invalid automation: ")


# -- 3.1 the run-deployment loop guard --

LOOP_EXPECTS = [
    "prefect.flow-run.Scheduled",
    "prefect.flow-run.Pending",
    "prefect.flow-run.Running",
    "prefect.flow-run.*",
]
INFERRED = {"type": "run-deployment", "source": "inferred"}
SELECTED = {"type": "run-deployment", "source": "selected", "deployment_id": "d"}
ANY_FLOW_RUN = {"prefect.resource.id": "prefect.flow-run.*"}
ONE_DEPLOYMENT = {
    "prefect.resource.id": "prefect.deployment.d1",
    "prefect.resource.role": "deployment",
}


@pytest.mark.parametrize("expect", LOOP_EXPECTS)
def test_loop_guard_refuses_an_inferred_deployment(expect: str) -> None:
    """SEMANTICS 3.1: an inferred deployment from these flow-run events always loops."""
    doc = automation_doc(reactive(expect=[expect]), actions=[INFERRED])
    assert_refused(doc, "actions.0", "inferred deployment", "infinite loop")


def test_loop_guard_refuses_an_inferred_deployment_whatever_the_filters() -> None:
    """SEMANTICS 3.1: `inferred` is refused even with narrow match and match_related."""
    trigger = reactive(
        expect=["prefect.flow-run.Running"],
        match={"prefect.resource.id": "prefect.flow-run.1"},
        match_related=ONE_DEPLOYMENT,
    )
    assert_refused(automation_doc(trigger, actions=[INFERRED]), "actions.0", "inferred")


def test_loop_guard_names_the_offending_action_position() -> None:
    """The error points at the run-deployment action, not at the whole automation."""
    doc = automation_doc(
        reactive(expect=["prefect.flow-run.Running"]),
        actions=[{"type": "do-nothing"}, SELECTED],
    )
    assert_refused(doc, "actions.1", "selected deployment", "infinite loop")


@pytest.mark.parametrize("expect", LOOP_EXPECTS)
@pytest.mark.parametrize("action", [SELECTED, {"type": "run-deployment", "deployment_id": "d"}])
def test_loop_guard_refuses_an_unfiltered_selected_deployment(
    expect: str, action: dict[str, Any]
) -> None:
    """SEMANTICS 3.1: default match and match_related ({}) match every flow run;
    `source` defaults to `selected`."""
    doc = automation_doc(reactive(expect=[expect, "other.event"]), actions=[action])
    assert_refused(doc, "actions.0", "selected deployment")


@pytest.mark.parametrize(
    ("match", "match_related"),
    [
        (ANY_FLOW_RUN, {}),
        ({}, ANY_FLOW_RUN),
        ({"prefect.resource.id": ["prefect.flow-run.1", "prefect.flow-run.*"]}, {}),
        ({}, [ONE_DEPLOYMENT, {}]),
        ({}, [ONE_DEPLOYMENT, ANY_FLOW_RUN]),
    ],
)
def test_loop_guard_refuses_selected_when_match_and_a_related_spec_match_every_flow_run(
    match: dict[str, Any], match_related: Any
) -> None:
    """SEMANTICS 3.1: `match` and *any* `match_related` spec match every flow run."""
    trigger = reactive(expect=["prefect.flow-run.*"], match=match, match_related=match_related)
    assert_refused(automation_doc(trigger, actions=[SELECTED]), "actions.0", "selected")


@pytest.mark.parametrize(
    ("match", "match_related"),
    [
        ({"prefect.resource.id": "prefect.flow-run.1"}, {}),
        ({"prefect.resource.id": "prefect.flow-run.*", "prefect.resource.name": "x"}, {}),
        ({"prefect.resource.name": "nightly-*"}, {}),
        ({}, ONE_DEPLOYMENT),
        ({}, [ONE_DEPLOYMENT]),
        # An empty list has no spec that matches every flow run (any() of nothing).
        ({}, []),
    ],
)
def test_loop_guard_accepts_selected_with_filtering_labels(
    match: dict[str, Any], match_related: Any
) -> None:
    """SEMANTICS 3.1: `selected` is refused only when both match every flow run."""
    trigger = reactive(expect=["prefect.flow-run.*"], match=match, match_related=match_related)
    assert parse(trigger, actions=[SELECTED]).actions == [SELECTED]


def test_loop_guard_skips_disabled_automations() -> None:
    """SEMANTICS 3.1: only enabled automations are checked."""
    trigger = reactive(expect=["prefect.flow-run.Running"])
    assert parse(trigger, enabled=False, actions=[INFERRED, SELECTED]).enabled is False


def test_loop_guard_skips_proactive_triggers() -> None:
    """SEMANTICS 3.1: only a Reactive top-level trigger is checked."""
    trigger = proactive(expect=["prefect.flow-run.Running"])
    assert parse(trigger, actions=[INFERRED, SELECTED]).actions == [INFERRED, SELECTED]


@pytest.mark.parametrize(
    "trigger",
    [
        compound(reactive(expect=["prefect.flow-run.Running"])),
        sequence(reactive(expect=["prefect.flow-run.Running"])),
    ],
)
def test_loop_guard_skips_composite_top_level_triggers(trigger: dict[str, Any]) -> None:
    """SEMANTICS 3.1: only an EventTrigger at the top is checked."""
    assert parse(trigger, actions=[INFERRED]).actions == [INFERRED]


@pytest.mark.parametrize(
    "expect",
    [
        [],  # empty expect (any event) has no pattern starting with prefect.flow-run.
        ["prefect.task-run.Running"],
        ["prefect.flow-run.Completed", "prefect.flow-run.Failed"],
        ["prefect.flow-run.R*"],
        ["prefect.flow-run"],
    ],
)
def test_loop_guard_skips_expects_outside_the_listed_flow_run_events(expect: list[str]) -> None:
    """SEMANTICS 3.1: only the exact patterns Scheduled, Pending, Running and `*` count."""
    assert parse(reactive(expect=expect), actions=[INFERRED]).actions == [INFERRED]


@pytest.mark.parametrize("field", ["actions_on_trigger", "actions_on_resolve"])
def test_loop_guard_checks_only_actions(field: str) -> None:
    """SEMANTICS 3.1: run-deployment in the other two lists is not checked."""
    trigger = reactive(expect=["prefect.flow-run.Running"])
    assert getattr(parse(trigger, **{field: [INFERRED]}), field) == [INFERRED]


# -- 3.2 / 3.4 trigger types --


def test_missing_type_means_event() -> None:
    """SEMANTICS 3.3: `type` defaults to "event"."""
    assert event_trigger(reactive()).type == "event"
    assert event_trigger(reactive(type="event")).type == "event"


@pytest.mark.parametrize("kind", ["metric", "bogus", "", None, 3])
def test_unknown_trigger_type_is_refused(kind: Any) -> None:
    """SEMANTICS 3.2: the server accepts `event`, `compound` and `sequence` only."""
    assert_refused(automation_doc(reactive(type=kind)), "trigger", "`type` must be one of")


def test_unknown_nested_trigger_type_is_refused_at_its_position() -> None:
    doc = automation_doc(compound(reactive(), {"type": "metric", "posture": "Metric"}))
    assert_refused(doc, "trigger.triggers.1", "`type`", "'event', 'compound' or 'sequence'")


@pytest.mark.parametrize("trigger", ["event", [], 5])
def test_trigger_must_be_an_object(trigger: Any) -> None:
    with pytest.raises(InvalidAutomation) as caught:
        parse_automation(automation_doc(trigger=None) | {"trigger": trigger})
    assert caught.value.errors[0].path == "trigger"


# -- 3.3 EventTrigger --


def test_event_trigger_defaults() -> None:
    """SEMANTICS 3.3: match {}, match_related {}, after/expect/for_each empty, threshold 1,
    within 0."""
    trigger = event_trigger(reactive())
    assert trigger.match.to_json() == {}
    assert not isinstance(trigger.match_related, list)
    assert trigger.match_related.to_json() == {}
    assert trigger.after == frozenset()
    assert trigger.expect == frozenset()
    assert trigger.for_each == frozenset()
    assert trigger.posture == Posture.Reactive
    assert trigger.threshold == 1
    assert trigger.within == timedelta(0)


def test_match_and_match_related_objects_are_coerced() -> None:
    """SEMANTICS 3.3: a plain object is coerced to a spec; match_related may be a list."""
    trigger = event_trigger(
        reactive(
            match={"prefect.resource.id": ["a.*", "b.*"]},
            match_related=[{"prefect.resource.role": "flow"}, {}],
        )
    )
    assert trigger.match.patterns("prefect.resource.id") == ("a.*", "b.*")
    assert isinstance(trigger.match_related, list)
    assert [spec.to_json() for spec in trigger.related_specs] == [
        {"prefect.resource.role": "flow"},
        {},
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("match", []),
        ("match", {"label": 5}),
        ("match_related", "flow"),
    ],
)
def test_malformed_resource_specs_are_refused(field: str, value: Any) -> None:
    """SEMANTICS 2.5: a spec maps labels to a string or a list of strings."""
    assert_refused(automation_doc(reactive(**{field: value})), f"trigger.{field}")


def test_malformed_match_related_list_entry_is_refused_at_its_position() -> None:
    doc = automation_doc(reactive(match_related=[{}, {"label": [1]}]))
    assert_refused(doc, "trigger.match_related.1", "'label' must map to a string")


def test_after_expect_and_for_each_are_sets() -> None:
    """SEMANTICS 3.3: these are sets of strings; duplicates collapse."""
    trigger = event_trigger(reactive(after=["a", "a"], expect=["b", "c"], for_each=["x", "x", "y"]))
    assert trigger.after == {"a"}
    assert trigger.expect == {"b", "c"}
    assert trigger.for_each == {"x", "y"}


def test_posture_is_required() -> None:
    """SEMANTICS 3.3: `posture` has no default."""
    assert_refused(automation_doc({"expect": ["x"]}), "trigger.posture", "required")


def test_metric_posture_is_refused_with_a_clear_message() -> None:
    """SEMANTICS 3.2, 3.3: `Metric` exists as an enum value but is not accepted."""
    assert_refused(
        automation_doc({"posture": "Metric"}),
        "trigger.posture",
        "Metric posture is not supported",
        "Reactive or Proactive",
    )


@pytest.mark.parametrize("posture", ["reactive", "Sideways", None, 1])
def test_other_postures_are_refused(posture: Any) -> None:
    """SEMANTICS 3.5: postures are capitalised wire values."""
    assert_refused(automation_doc({"posture": posture}), "trigger.posture")


@pytest.mark.parametrize("trigger", [reactive(within=None), proactive(within=None)])
def test_explicit_null_within_is_refused(trigger: dict[str, Any]) -> None:
    """SEMANTICS 3.3: `within: null` -> "should be a valid timedelta"."""
    assert_refused(automation_doc(trigger), "trigger.within", "should be a valid timedelta")


@pytest.mark.parametrize(
    ("within", "expected"),
    [
        (0, timedelta(0)),
        (30, timedelta(seconds=30)),
        (1.5, timedelta(seconds=1.5)),
        ("PT1M", timedelta(minutes=1)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("01:02:03", timedelta(hours=1, minutes=2, seconds=3)),
        ("PT0.25S", timedelta(milliseconds=250)),
    ],
)
def test_within_accepts_seconds_and_duration_strings(within: Any, expected: timedelta) -> None:
    """SEMANTICS 3.3: a number is seconds; ISO 8601 and HH:MM:SS strings are accepted."""
    assert event_trigger(reactive(within=within)).within == expected


@pytest.mark.parametrize("within", [-1, -0.5, "-PT1M", "-00:00:05"])
def test_negative_within_is_refused(within: Any) -> None:
    """SEMANTICS 3.3: `within` >= 0."""
    assert_refused(automation_doc(reactive(within=within)), "trigger.within", "negative")


@pytest.mark.parametrize("within", ["soon", [], {}, "PT"])
def test_unparsable_within_is_refused(within: Any) -> None:
    assert_refused(automation_doc(reactive(within=within)), "trigger.within", "timedelta")


@pytest.mark.parametrize(
    "trigger", [proactive(), *(proactive(within=w) for w in (0, 0.0, "PT0S", "00:00:00"))]
)
def test_proactive_missing_or_zero_within_becomes_ten_seconds(trigger: dict[str, Any]) -> None:
    """SEMANTICS 3.3: Proactive with missing or zero `within` is silently set to 10 s."""
    assert event_trigger(trigger).within == timedelta(seconds=10)


@pytest.mark.parametrize("within", [0.001, 5, 9.999, "PT9S", "00:00:09"])
def test_proactive_within_under_ten_seconds_is_refused(within: Any) -> None:
    """SEMANTICS 3.3: Proactive with 0 < within < 10 s is an error."""
    assert_refused(
        automation_doc(proactive(within=within)),
        "trigger.within",
        "Proactive",
        "greater than or equal to 10 seconds",
    )


@pytest.mark.parametrize("within", [10, "PT10S", 3600])
def test_proactive_within_of_ten_seconds_or_more_is_kept(within: Any) -> None:
    trigger = event_trigger(proactive(within=within))
    assert trigger.within >= timedelta(seconds=10)


def test_reactive_within_has_no_minimum() -> None:
    """SEMANTICS 3.3: the 10 s minimum is for Proactive only."""
    assert event_trigger(reactive(within=0.5)).within == timedelta(milliseconds=500)
    assert event_trigger(reactive(within=0)).within == timedelta(0)


@pytest.mark.parametrize("threshold", [0, -5, 1, 10**6])
def test_threshold_is_unbounded(threshold: int) -> None:
    """SEMANTICS 3.3: no bounds: 0 and negatives are accepted."""
    assert event_trigger(reactive(threshold=threshold)).threshold == threshold
    assert event_trigger(proactive(threshold=threshold)).threshold == threshold


@pytest.mark.parametrize("threshold", [1.5, "many", None])
def test_threshold_must_be_an_integer(threshold: Any) -> None:
    assert_refused(automation_doc(reactive(threshold=threshold)), "trigger.threshold")


def test_immediate_is_reactive_with_zero_within() -> None:
    """SEMANTICS 3.3: immediate <=> Reactive and within == 0."""
    assert event_trigger(reactive()).immediate
    assert not event_trigger(reactive(within=1)).immediate
    assert not event_trigger(proactive()).immediate


def test_holds_events_is_proactive_with_after() -> None:
    """SEMANTICS 6.2: held `expect` events exist only for Proactive triggers with `after`."""
    assert event_trigger(proactive(after=["a"], expect=["b"])).holds_events
    assert not event_trigger(proactive(expect=["b"])).holds_events
    assert not event_trigger(reactive(after=["a"], expect=["b"])).holds_events


@pytest.mark.parametrize(
    ("threshold", "count", "meets"),
    [(3, 2, False), (3, 3, True), (3, 4, True), (0, 0, True), (-1, 0, True), (1, 0, False)],
)
def test_reactive_meets_threshold_at_or_above_it(threshold: int, count: int, meets: bool) -> None:
    """SEMANTICS 3.3: Reactive <=> count >= threshold."""
    assert event_trigger(reactive(threshold=threshold)).meets_threshold(count) is meets


@pytest.mark.parametrize(
    ("threshold", "count", "meets"),
    [(3, 2, True), (3, 3, False), (3, 4, False), (1, 0, True), (0, 0, False), (-1, 0, False)],
)
def test_proactive_meets_threshold_below_it(threshold: int, count: int, meets: bool) -> None:
    """SEMANTICS 3.3: Proactive <=> count < threshold."""
    assert event_trigger(proactive(threshold=threshold)).meets_threshold(count) is meets


def test_bucketing_key_follows_sorted_for_each_order() -> None:
    """SEMANTICS 3.3: the key lists resolved values in sorted label order."""
    trigger = event_trigger(reactive(for_each=["zeta", "alpha", "mid"]))
    key = trigger.bucketing_key(event(resource={"alpha": "A", "mid": "M", "zeta": "Z"}))
    assert key == ("A", "M", "Z")


def test_bucketing_key_uses_empty_string_for_missing_labels() -> None:
    """SEMANTICS 3.3: each missing value is replaced by ""."""
    trigger = event_trigger(reactive(for_each=["alpha", "beta"]))
    assert trigger.bucketing_key(event(resource={"beta": "B"})) == ("", "B")


def test_bucketing_key_without_for_each_is_empty() -> None:
    """SEMANTICS 3.3: empty for_each -> one global bucket per trigger."""
    assert event_trigger(reactive()).bucketing_key(event()) == ()


def test_bucketing_key_reads_related_role_labels() -> None:
    """SEMANTICS 2.3, 3.3: `related:<role>:<label>` is the first related resource in that
    role; with no resource in the role the whole string is a primary label."""
    trigger = event_trigger(
        reactive(for_each=["related:flow:prefect.resource.id", "related:tag:name"])
    )
    flows = [
        {"prefect.resource.id": "prefect.flow.1", "prefect.resource.role": "flow"},
        {"prefect.resource.id": "prefect.flow.2", "prefect.resource.role": "flow"},
    ]
    assert trigger.bucketing_key(event(related=flows)) == ("prefect.flow.1", "")
    primary = event(resource={"related:tag:name": "literal"}, related=flows)
    assert trigger.bucketing_key(primary) == ("prefect.flow.1", "literal")


def test_triggering_labels_map_sorted_for_each_labels_to_the_key() -> None:
    """SEMANTICS 3.3: missing labels map to ""."""
    trigger = event_trigger(reactive(for_each=["zeta", "alpha"]))
    key = trigger.bucketing_key(event(resource={"zeta": "Z"}))
    assert trigger.triggering_labels(key) == {"alpha": "", "zeta": "Z"}
    assert event_trigger(reactive()).triggering_labels(()) == {}


def test_covers_needs_a_matching_name_and_resources() -> None:
    """SEMANTICS 2.6, 2.7: name patterns (expect and after) and match/match_related."""
    trigger = event_trigger(
        reactive(expect=["prefect.flow-run.*"], match={"prefect.resource.id": "prefect.flow-run.1"})
    )
    assert trigger.covers(event())
    assert not trigger.covers(event(resource={"prefect.resource.id": "prefect.flow-run.2"}))
    assert trigger.expects("prefect.flow-run.Completed")
    assert not trigger.starts_after("prefect.flow-run.Completed")


# -- 3.4 composite triggers --


@pytest.mark.parametrize(
    ("require", "fragment"),
    [
        (0, "require must be at least 1"),
        (-1, "require must be at least 1"),
        (3, "require must be less than or equal to the number of triggers"),
    ],
)
def test_compound_require_bounds(require: int, fragment: str) -> None:
    """SEMANTICS 3.4: an integer `require` must be 1 <= require <= len(triggers)."""
    doc = automation_doc(compound(reactive(), reactive(), require=require))
    assert_refused(doc, "trigger.require", fragment)


def test_nested_compound_require_error_names_its_position() -> None:
    doc = automation_doc(sequence(compound(reactive(), require=0), reactive()))
    assert_refused(doc, "trigger.triggers.0.require", "require must be at least 1")


@pytest.mark.parametrize("require", [1, 2, "any", "all"])
def test_compound_require_within_bounds_is_accepted(require: Any) -> None:
    trigger = parse(compound(reactive(), reactive(), require=require)).trigger
    assert isinstance(trigger, CompoundTrigger)
    assert trigger.require == require


@pytest.mark.parametrize("require", ["some", None, 1.5])
def test_compound_require_must_be_an_int_any_or_all(require: Any) -> None:
    assert_refused(automation_doc(compound(reactive(), require=require)), "trigger.require")


def test_compound_require_is_required() -> None:
    doc = automation_doc({"type": "compound", "within": None, "triggers": [reactive()]})
    assert_refused(doc, "trigger.require", "required")


@pytest.mark.parametrize(
    "make", [lambda: compound(require="any"), lambda: compound(), lambda: sequence()]
)
def test_empty_composite_triggers_list_is_accepted(make: Any) -> None:
    """SEMANTICS 3.4: an empty `triggers` list is not rejected."""
    trigger = parse(make()).trigger
    assert isinstance(trigger, CompoundTrigger | SequenceTrigger)
    assert trigger.triggers == []


def test_empty_compound_with_integer_require_is_refused() -> None:
    """SEMANTICS 3.4: require 1 > len([]) = 0."""
    assert_refused(automation_doc(compound(require=1)), "trigger.require", "less than or equal")


@pytest.mark.parametrize("kind", ["compound", "sequence"])
def test_composite_within_key_is_required(kind: str) -> None:
    """SEMANTICS 3.4: on the server `within` has no default (the key must be present)."""
    doc = automation_doc({"type": kind, "require": "all", "triggers": [reactive()]})
    assert_refused(doc, "trigger.within", "required")


@pytest.mark.parametrize(
    ("within", "expected"),
    [
        (None, None),
        (60, timedelta(minutes=1)),
        ("PT1H", timedelta(hours=1)),
        (-5, timedelta(seconds=-5)),
    ],
)
def test_composite_within_may_be_null_and_has_no_bound(within: Any, expected: Any) -> None:
    """SEMANTICS 3.4: null allowed; no bound is checked."""
    for make in (compound, sequence):
        trigger = parse(make(reactive(), within=within)).trigger
        assert isinstance(trigger, CompoundTrigger | SequenceTrigger)
        assert trigger.within == expected


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        (compound(reactive(), reactive(), reactive(), require="any"), 1),
        (compound(reactive(), reactive(), reactive(), require="all"), 3),
        (compound(reactive(), reactive(), reactive(), require=2), 2),
        (compound(require="all"), 0),
        (sequence(reactive(), reactive()), 2),
    ],
)
def test_expected_firings(trigger: dict[str, Any], expected: int) -> None:
    """SEMANTICS 3.4: any -> 1, all -> number of children, int -> itself; sequence -> n."""
    composite = parse(trigger).trigger
    assert isinstance(composite, CompoundTrigger | SequenceTrigger)
    assert composite.num_expected_firings == expected


def test_nested_composites_flatten_depth_first() -> None:
    """SEMANTICS 3.2: all_triggers() = itself, then a depth-first flattening of children."""
    ids = [f"dddddddd-0000-4000-8000-00000000000{n}" for n in range(6)]
    doc = automation_doc(
        sequence(
            compound(reactive(id=ids[2]), proactive(id=ids[3]), id=ids[1], require="any"),
            sequence(reactive(id=ids[5]), id=ids[4]),
            id=ids[0],
        )
    )
    automation = parse_automation(doc)
    assert [str(t.id) for t in automation.all_triggers()] == ids
    assert [str(t.id) for t in automation.event_triggers()] == [ids[2], ids[3], ids[5]]
    outer = automation.trigger
    assert isinstance(outer, SequenceTrigger)
    assert [str(i) for i in outer.child_trigger_ids] == [ids[1], ids[4]]
    inner = automation.trigger_by_id(UUID(ids[1]))
    assert isinstance(inner, CompoundTrigger)
    assert automation.parent_of(UUID(ids[2])) is inner
    assert automation.parent_of(UUID(ids[5])) is automation.trigger_by_id(UUID(ids[4]))
    assert automation.parent_of(UUID(ids[0])) is None
    assert automation.trigger_by_id(UUID(AUTOMATION_ID)) is None


def test_nested_event_trigger_errors_name_their_position() -> None:
    doc = automation_doc(compound(reactive(), sequence(reactive(), proactive(within=1))))
    assert_refused(
        doc, "trigger.triggers.1.triggers.1.within", "greater than or equal to 10 seconds"
    )


# -- trigger ids (Decision 6) --


def test_given_trigger_ids_are_kept() -> None:
    """Decision 6: trigger ids given in the JSON are kept."""
    automation = parse(compound(reactive(id=CHILD_ID), id=TRIGGER_ID))
    assert [str(t.id) for t in automation.all_triggers()] == [TRIGGER_ID, CHILD_ID]


def test_missing_trigger_ids_are_assigned_deterministically() -> None:
    """Decision 6: missing ids derive from the automation id and the trigger's position,
    so parsing the same document twice gives the same ids."""
    doc = automation_doc(sequence(reactive(), compound(reactive(), reactive())))
    first = [t.id for t in parse_automation(doc).all_triggers()]
    second = [t.id for t in parse_automation(copy.deepcopy(doc)).all_triggers()]
    assert first == second
    assert all(isinstance(i, UUID) for i in first)
    assert len(set(first)) == len(first)
    other = [t.id for t in parse_automation({**doc, "id": OTHER_AUTOMATION_ID}).all_triggers()]
    assert not set(first) & set(other)


def test_assigned_trigger_ids_depend_on_position_not_content() -> None:
    """Decision 6: the same position gets the same id, whatever the trigger says."""
    one = parse(compound(reactive(expect=["a"]), reactive()))
    two = parse(compound(reactive(expect=["b"]), proactive()))
    assert [t.id for t in one.all_triggers()] == [t.id for t in two.all_triggers()]


def test_missing_ids_are_assigned_beside_given_ones() -> None:
    automation = parse(compound(reactive(id=CHILD_ID), reactive()))
    ids = [str(t.id) for t in automation.all_triggers()]
    assert ids[1] == CHILD_ID
    assert ids[0] != CHILD_ID and ids[2] not in (CHILD_ID, ids[0])


def test_parsing_does_not_change_the_callers_document() -> None:
    doc = automation_doc(compound(reactive()))
    before = copy.deepcopy(doc)
    parse_automation(doc)
    assert doc == before


def test_duplicate_trigger_ids_are_refused() -> None:
    """Runtime state is keyed by trigger id, so two triggers may not share one."""
    doc = automation_doc(compound(reactive(id=CHILD_ID), reactive(id=CHILD_ID)))
    assert_refused(doc, "trigger.triggers.1.id", CHILD_ID, "already used by trigger.triggers.0")


def test_composite_and_child_sharing_an_id_is_refused() -> None:
    doc = automation_doc(sequence(reactive(id=TRIGGER_ID), id=TRIGGER_ID))
    assert_refused(doc, "trigger.triggers.0.id", "already used by trigger")


def test_trigger_id_must_be_a_uuid() -> None:
    assert_refused(automation_doc(reactive(id="first")), "trigger.id", "UUID")


# -- trigger fingerprint (Decision 6) --


def fingerprint(trigger: dict[str, Any], **fields: Any) -> str:
    return parse(trigger, **fields).trigger_fingerprint()


BASE_TREE = compound(
    reactive(
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "flow"},
        after=["a"],
        expect=["b"],
        for_each=["prefect.resource.id"],
        threshold=2,
        within=30,
    ),
    sequence(reactive(expect=["c"]), proactive(expect=["d"])),
    require="any",
    within=60,
)


def test_fingerprint_is_unchanged_for_the_same_tree() -> None:
    """Decision 6: an unchanged trigger tree keeps its state."""
    automation = parse(copy.deepcopy(BASE_TREE))
    assert fingerprint(copy.deepcopy(BASE_TREE)) == automation.trigger_fingerprint()
    assert parse_automation(automation.to_json()).trigger_fingerprint() == (
        automation.trigger_fingerprint()
    )


def test_fingerprint_ignores_fields_outside_the_trigger() -> None:
    """Decision 6: only the trigger tree counts, not the name, actions or enabled."""
    assert fingerprint(copy.deepcopy(BASE_TREE)) == fingerprint(
        copy.deepcopy(BASE_TREE), name="renamed", enabled=False, actions=[], tags=["t"]
    )


def test_fingerprint_ignores_the_order_of_sets_and_spec_labels() -> None:
    """SEMANTICS 3.8: sets have no order; spec labels are an object."""
    one = reactive(expect=["a", "b"], match={"x": "1", "y": "2"})
    two = reactive(expect=["b", "a"], match={"y": "2", "x": "1"})
    assert fingerprint(one) == fingerprint(two)


CHANGES = {
    "match": lambda t: t["triggers"][0].update(match={"prefect.resource.id": "x"}),
    "match_related": lambda t: t["triggers"][0].update(
        match_related=[{"prefect.resource.role": "flow"}, {}]
    ),
    "after": lambda t: t["triggers"][0].update(after=["a", "z"]),
    "expect": lambda t: t["triggers"][0].update(expect=[]),
    "for_each": lambda t: t["triggers"][0].update(for_each=[]),
    "posture": lambda t: t["triggers"][0].update(posture="Proactive"),
    "threshold": lambda t: t["triggers"][0].update(threshold=3),
    "within": lambda t: t["triggers"][0].update(within=31),
    "id": lambda t: t["triggers"][0].update(id=CHILD_ID),
    "require": lambda t: t.update(require="all"),
    "composite within": lambda t: t.update(within=None),
    "nested child": lambda t: t["triggers"][1]["triggers"][1].update(threshold=0),
    "child order": lambda t: t["triggers"].reverse(),
    "composite type": lambda t: t.update(type="sequence"),
    "extra child": lambda t: t["triggers"].append(reactive()),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_fingerprint_changes_with_any_trigger_field(change: Any) -> None:
    """Decision 6: any field of any trigger changes the fingerprint."""
    changed = copy.deepcopy(BASE_TREE)
    change(changed)
    assert fingerprint(changed) != fingerprint(copy.deepcopy(BASE_TREE))


# -- 3.8 JSON conventions --


def test_to_json_follows_the_json_conventions() -> None:
    """SEMANTICS 3.8: durations as float seconds, sets as arrays, enums as strings,
    UUIDs as strings, datetimes ISO 8601 with offset."""
    automation = parse(
        compound(
            reactive(
                id=CHILD_ID, expect=["b", "a"], for_each=["y", "x"], within="PT1M30S", after=[]
            ),
            id=TRIGGER_ID,
            require=1,
            within="PT2M",
        ),
        created="2026-01-01T00:00:00",
    )
    assert automation.to_json() == {
        "id": AUTOMATION_ID,
        "name": "my automation",
        "description": "",
        "enabled": True,
        "tags": [],
        "trigger": {
            "type": "compound",
            "id": TRIGGER_ID,
            "triggers": [
                {
                    "type": "event",
                    "id": CHILD_ID,
                    "match": {},
                    "match_related": {},
                    "after": [],
                    "expect": ["a", "b"],
                    "for_each": ["x", "y"],
                    "posture": "Reactive",
                    "threshold": 1,
                    "within": 90.0,
                }
            ],
            "within": 120.0,
            "require": 1,
        },
        "actions": [{"type": "do-nothing"}],
        "actions_on_trigger": [],
        "actions_on_resolve": [],
        "created": "2026-01-01T00:00:00+00:00",
    }


def test_parse_automation_json_reads_bytes_and_text() -> None:
    body = orjson.dumps(automation_doc())
    assert parse_automation_json(body).to_json() == parse_automation_json(body.decode()).to_json()


@pytest.mark.parametrize("body", [b"", b"{", b"\xff", "not json"])
def test_parse_automation_json_refuses_invalid_json(body: bytes | str) -> None:
    with pytest.raises(InvalidAutomation) as caught:
        parse_automation_json(body)
    assert caught.value.errors[0].path == ""
    assert "not valid JSON" in caught.value.errors[0].message


@pytest.mark.parametrize("document", [None, [], "automation", 5])
def test_a_document_that_is_not_an_object_is_refused(document: Any) -> None:
    with pytest.raises(InvalidAutomation) as caught:
        parse_automation(document)
    assert caught.value.errors[0].path == ""


# -- property tests --

texts = st.text(max_size=12)
names = st.text(min_size=1, max_size=12)
patterns = st.lists(texts, max_size=3)
specs = st.dictionaries(texts, texts | st.lists(texts, max_size=3), max_size=3)
# Durations in whole milliseconds: float seconds carry them exactly.
durations = st.integers(min_value=0, max_value=10**9).map(lambda ms: ms / 1000)
ids = st.uuids().map(str)
actions = st.lists(
    st.fixed_dictionaries(
        {"type": st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)},
        optional={
            "payload": st.dictionaries(texts, texts | st.integers(-(2**63), 2**63 - 1), max_size=2)
        },
    ).filter(lambda a: a["type"] != "run-deployment"),
    max_size=3,
)


@st.composite
def event_triggers(draw: st.DrawFn) -> dict[str, Any]:
    posture = draw(st.sampled_from(["Reactive", "Proactive"]))
    trigger: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {"posture": st.just(posture)},
            optional={
                "type": st.just("event"),
                "match": specs,
                "match_related": specs | st.lists(specs, max_size=2),
                "after": patterns,
                "expect": patterns,
                "for_each": patterns,
                "threshold": st.integers(min_value=-3, max_value=100),
                "within": durations.filter(lambda s: posture == "Reactive" or s == 0 or s >= 10),
            },
        )
    )
    return trigger


def composites(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        triggers = draw(st.lists(children, max_size=3))
        within = draw(st.none() | durations)
        if draw(st.booleans()):
            return {"type": "sequence", "within": within, "triggers": triggers}
        bounded = st.integers(min_value=1, max_value=len(triggers)) if triggers else st.nothing()
        require = draw(st.sampled_from(["any", "all"]) | bounded)
        return {"type": "compound", "require": require, "within": within, "triggers": triggers}

    return build()


trigger_trees = st.recursive(event_triggers(), composites, max_leaves=8)


@st.composite
def automation_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(
        st.fixed_dictionaries(
            {"id": ids, "name": texts, "trigger": trigger_trees, "actions": actions},
            optional={
                "description": texts,
                "enabled": st.booleans(),
                "tags": st.lists(texts, max_size=3),
                "actions_on_trigger": actions,
                "actions_on_resolve": actions,
                "owner_resource": st.none() | texts,
                "created": st.datetimes(min_value=datetime(2000, 1, 1)).map(datetime.isoformat),
            },
        )
    )
    return doc


@given(automation_docs())
@example(automation_doc(compound(reactive(within=0.001), sequence(), require="any")))
def test_automation_json_round_trip(doc: dict[str, Any]) -> None:
    """SEMANTICS 3.8: `parse_automation(a.to_json())` serialises as `a` does, also after
    an orjson dumps/loads trip, and keeps the trigger ids and fingerprint."""
    automation = parse_automation(doc)
    document = automation.to_json()
    again = parse_automation(document)
    assert again.to_json() == document
    assert parse_automation_json(orjson.dumps(document)).to_json() == document
    assert orjson.loads(orjson.dumps(document)) == document
    assert again.trigger_fingerprint() == automation.trigger_fingerprint()
    assert [t.id for t in again.all_triggers()] == [t.id for t in automation.all_triggers()]


# Any JSON scalar, the automation vocabulary among them more often than chance would draw it.
json_values = any_json(
    json_scalars
    | st.sampled_from(
        [
            "any",
            "all",
            "Reactive",
            "Proactive",
            "Metric",
            "event",
            "compound",
            "sequence",
            "PT1M",
            "-PT1S",
            "00:00:05",
            "run-deployment",
            "inferred",
        ]
    )
)


def garbled(strategy: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    """Valid documents with one value somewhere replaced by a random JSON value."""

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        doc = draw(strategy)
        node: Any = doc
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
            key = draw(st.sampled_from(keys))
            if draw(st.booleans()):
                node[key] = draw(json_values)
                break
            node = node[key]
        return doc

    return build()


garbage_triggers = st.recursive(
    st.dictionaries(
        st.sampled_from(
            [
                "type",
                "posture",
                "within",
                "threshold",
                "match",
                "match_related",
                "after",
                "expect",
                "for_each",
                "require",
                "id",
            ]
        ),
        json_values,
    ),
    lambda inner: st.fixed_dictionaries(
        {"triggers": st.lists(inner, max_size=3)},
        optional={
            "type": st.sampled_from(["compound", "sequence"]) | json_values,
            "require": json_values,
            "within": json_values,
            "id": json_values | ids,
        },
    ),
    max_leaves=6,
)


@given(
    json_values
    | garbled(automation_docs())
    | st.fixed_dictionaries(
        {"id": ids | json_values, "name": texts, "trigger": garbage_triggers},
        optional={
            "actions": json_values | st.lists(json_values | actions, max_size=2),
            "enabled": json_values,
            "created": json_values,
        },
    )
)
@example({"id": AUTOMATION_ID, "name": "n", "trigger": {"posture": "Proactive", "within": 1e300}})
@example({"id": AUTOMATION_ID, "name": "n", "trigger": {"type": ["event"], "posture": "x"}})
def test_garbage_documents_raise_only_invalid_automation(doc: Any) -> None:
    """Bad documents are refused with InvalidAutomation (INVALID_ARGUMENT), never a
    TypeError, KeyError or other crash; each error has a message."""
    try:
        automation = parse_automation(doc)
    except InvalidAutomation as error:
        assert error.errors
        assert all(e.message for e in error.errors)
    else:
        assert parse_automation(automation.to_json()).to_json() == automation.to_json()


@given(st.binary(max_size=200))
def test_garbage_bytes_raise_only_invalid_automation(body: bytes) -> None:
    try:
        parse_automation_json(body)
    except InvalidAutomation as error:
        assert error.errors
