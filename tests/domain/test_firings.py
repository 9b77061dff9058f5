"""Firings, act() and its triggered actions and state-change events (SEMANTICS 3.6, 3.7, 7.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from svc.domain.automations import Automation, SequenceTrigger, TriggerState, parse_automation
from svc.domain.events import validate_event
from svc.domain.firings import (
    AUTOMATION_RESOLVED,
    AUTOMATION_TRIGGERED,
    Firing,
    act,
    idempotency_key,
    state_change_event,
    to_micros,
)

AUTOMATION_ID = "aaaaaaaa-0000-4000-8000-000000000001"
FIRING_ID = UUID("ffffffff-0000-4000-8000-000000000001")
OTHER_FIRING_ID = UUID("ffffffff-0000-4000-8000-000000000002")
TRIGGERED = datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=UTC)
RECEIVED = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)

TRIGGERING_EVENT = validate_event(
    {
        "occurred": "2026-01-01T11:59:59+00:00",
        "event": "prefect.flow-run.Failed",
        "resource": {"prefect.resource.id": "prefect.flow-run.1", "team": "data"},
        "id": "eeeeeeee-0000-4000-8000-000000000001",
    },
    received=TRIGGERED,
).to_json()

ACTIONS = [{"type": "send-notification", "body": "1"}, {"type": "pause-automation"}]
ON_TRIGGER = [{"type": "call-webhook"}]
ON_RESOLVE = [{"type": "cancel-flow-run"}]


def make_automation(trigger: dict[str, Any] | None = None, **fields: Any) -> Automation:
    return parse_automation(
        {
            "id": AUTOMATION_ID,
            "name": "When data flows fail",
            "trigger": trigger or {"posture": "Reactive", "for_each": ["team"]},
            "actions": ACTIONS,
            "actions_on_trigger": ON_TRIGGER,
            "actions_on_resolve": ON_RESOLVE,
            **fields,
        }
    )


def make_firing(automation: Automation, **fields: Any) -> Firing:
    values: dict[str, Any] = {
        "id": FIRING_ID,
        "trigger": automation.trigger,
        "triggered": TRIGGERED,
        "at_us": to_micros(TRIGGERED - timedelta(seconds=1)),
        "triggering_labels": {"team": "data"},
        "triggering_event": TRIGGERING_EVENT,
    }
    values.update(fields)
    return Firing(**values)


@pytest.fixture
def automation() -> Automation:
    return make_automation()


@pytest.fixture
def firing(automation: Automation) -> Firing:
    return make_firing(automation)


# -- 7.3 triggered actions --


def test_act_gives_one_triggered_action_per_action_in_order(
    automation: Automation, firing: Firing
) -> None:
    """SEMANTICS 7.3: `actions`, then `actions_on_trigger`; `actions_on_resolve` never runs
    for a Triggered firing."""
    out = act(automation, firing, RECEIVED)
    assert [a["action"] for a in out.actions] == [*ACTIONS, *ON_TRIGGER]
    assert [a["action_index"] for a in out.actions] == [0, 1, 2]


def test_actions_carry_the_firings_triggering_event(automation: Automation, firing: Firing) -> None:
    """SEMANTICS 3.7: for `actions`, the firing's triggering event."""
    out = act(automation, firing, RECEIVED)
    assert [a["triggering_event"] for a in out.actions[:2]] == [TRIGGERING_EVENT] * 2


def test_actions_on_trigger_carry_the_automation_triggered_event(
    automation: Automation, firing: Firing
) -> None:
    """SEMANTICS 3.7: for `actions_on_trigger`, the `prefect.automation.triggered` event."""
    out = act(automation, firing, RECEIVED)
    (triggered_event,) = out.events
    assert triggered_event["event"] == AUTOMATION_TRIGGERED
    assert out.actions[2]["triggering_event"] == triggered_event


def test_actions_without_a_triggering_event_carry_null(automation: Automation) -> None:
    """SEMANTICS 3.6: a proactive firing may have no triggering event."""
    out = act(automation, make_firing(automation, triggering_event=None), RECEIVED)
    assert out.actions[0]["triggering_event"] is None
    assert out.actions[2]["triggering_event"] == out.events[0]


def test_triggered_actions_carry_the_automation_firing_and_labels(
    automation: Automation, firing: Firing
) -> None:
    """SEMANTICS 3.7: automation, firing, `triggered` = firing.triggered, labels,
    automation_triggered_event_id."""
    out = act(automation, firing, RECEIVED)
    for action in out.actions:
        assert action["automation"] == automation.to_json()
        assert action["firing"] == firing.to_json()
        assert action["triggered"] == TRIGGERED.isoformat()
        assert action["triggering_labels"] == {"team": "data"}
        assert action["automation_triggered_event_id"] == out.events[0]["id"]


def test_an_automation_without_actions_still_publishes_its_event() -> None:
    """SEMANTICS 7.3: the state-change event goes out even with nothing to run."""
    automation = make_automation(actions=[], actions_on_trigger=[], actions_on_resolve=[])
    out = act(automation, make_firing(automation), RECEIVED)
    assert out.actions == ()
    assert [e["event"] for e in out.events] == [AUTOMATION_TRIGGERED]


def test_resolved_states_come_after_triggered_whatever_the_firings_order(
    automation: Automation,
) -> None:
    """SEMANTICS 7.3: Triggered then Resolved; actions ++ on_trigger ++ on_resolve."""
    states = (TriggerState.Resolved, TriggerState.Triggered)
    out = act(automation, make_firing(automation, trigger_states=states), RECEIVED)
    assert [e["event"] for e in out.events] == [AUTOMATION_TRIGGERED, AUTOMATION_RESOLVED]
    assert [a["action"] for a in out.actions] == [*ACTIONS, *ON_TRIGGER, *ON_RESOLVE]
    assert [a["action_index"] for a in out.actions] == [0, 1, 2, 3]
    assert out.actions[2]["triggering_event"] == out.events[0]
    assert out.actions[3]["triggering_event"] == out.events[1]


def test_a_resolved_only_firing_links_actions_to_the_resolved_event(
    automation: Automation,
) -> None:
    """SEMANTICS 3.7: automation_triggered_event_id is the `…resolved` event when only
    resolved; actions_on_trigger are skipped."""
    firing = make_firing(automation, trigger_states=(TriggerState.Resolved,))
    out = act(automation, firing, RECEIVED)
    (resolved,) = out.events
    assert resolved["event"] == AUTOMATION_RESOLVED
    assert [a["action"] for a in out.actions] == [*ACTIONS, *ON_RESOLVE]
    assert {a["automation_triggered_event_id"] for a in out.actions} == {resolved["id"]}


# -- 7.3 the state-change event --


def test_state_change_event_resource_names_the_automation_and_posture(
    automation: Automation, firing: Firing
) -> None:
    """SEMANTICS 7.3: id prefect.automation.<id>, name, and prefect.posture."""
    event = state_change_event(automation, firing, TriggerState.Triggered, RECEIVED)
    assert event["resource"] == {
        "prefect.resource.id": f"prefect.automation.{AUTOMATION_ID}",
        "prefect.resource.name": "When data flows fail",
        "prefect.posture": "Reactive",
    }


def test_state_change_event_posture_of_a_proactive_firing() -> None:
    automation = make_automation({"posture": "Proactive", "expect": ["x"]})
    event = state_change_event(
        automation, make_firing(automation), TriggerState.Triggered, RECEIVED
    )
    assert event["resource"]["prefect.posture"] == "Proactive"


@pytest.mark.parametrize("kind", ["compound", "sequence"])
def test_composite_state_change_event_has_no_posture(kind: str) -> None:
    """SEMANTICS 7.3: composite firings omit prefect.posture."""
    automation = make_automation(
        {"type": kind, "require": "any", "within": None, "triggers": [{"posture": "Reactive"}]}
    )
    firing = make_firing(automation, triggering_labels={})
    event = state_change_event(automation, firing, TriggerState.Triggered, RECEIVED)
    assert event["resource"] == {
        "prefect.resource.id": f"prefect.automation.{AUTOMATION_ID}",
        "prefect.resource.name": "When data flows fail",
    }


def test_state_change_event_relates_the_triggering_event(
    automation: Automation, firing: Firing
) -> None:
    """SEMANTICS 7.3: one related entry with role `triggering-event`."""
    event = state_change_event(automation, firing, TriggerState.Triggered, RECEIVED)
    assert event["related"] == [
        {
            "prefect.resource.id": f"prefect.event.{TRIGGERING_EVENT['id']}",
            "prefect.resource.role": "triggering-event",
        }
    ]


def test_state_change_event_without_triggering_event_has_no_related(
    automation: Automation,
) -> None:
    """SEMANTICS 7.3: the related entry exists only when there is a triggering event."""
    firing = make_firing(automation, triggering_event=None)
    event = state_change_event(automation, firing, TriggerState.Triggered, RECEIVED)
    assert event["related"] == []
    assert event["payload"] == {"triggering_labels": {"team": "data"}, "triggering_event": None}


def test_state_change_event_payload_and_times(automation: Automation, firing: Firing) -> None:
    """SEMANTICS 7.3: payload has the labels and the full event; occurred = triggered;
    received = now."""
    event = state_change_event(automation, firing, TriggerState.Triggered, RECEIVED)
    assert event["event"] == "prefect.automation.triggered"
    assert event["payload"] == {
        "triggering_labels": {"team": "data"},
        "triggering_event": TRIGGERING_EVENT,
    }
    assert event["occurred"] == TRIGGERED.isoformat()
    assert event["received"] == RECEIVED.isoformat()
    assert event["follows"] is None


def test_resolved_state_change_event_is_named_resolved(
    automation: Automation, firing: Firing
) -> None:
    event = state_change_event(automation, firing, TriggerState.Resolved, RECEIVED)
    assert event["event"] == "prefect.automation.resolved"


def test_state_change_event_is_a_valid_event(automation: Automation, firing: Firing) -> None:
    """SEMANTICS 7.3 step 2: it goes back onto the events topic, so it must decode."""
    event = act(automation, firing, RECEIVED).events[0]
    decoded = validate_event(event, received=RECEIVED)
    assert decoded.to_json() == event


# -- deterministic ids (Decision 3) and the idempotency key --


def test_the_same_firing_gives_the_same_ids(automation: Automation) -> None:
    """Decision 3: ids derive from the firing, so a re-publish has the same ids."""
    first = act(automation, make_firing(automation), RECEIVED)
    second = act(automation, make_firing(automation), RECEIVED + timedelta(seconds=5))
    assert [e["id"] for e in first.events] == [e["id"] for e in second.events]
    assert [a["id"] for a in first.actions] == [a["id"] for a in second.actions]


def test_ids_differ_by_action_index_state_and_firing(automation: Automation) -> None:
    """Decision 3: each triggered action and each state-change event has its own id."""
    states = (TriggerState.Triggered, TriggerState.Resolved)
    first = act(automation, make_firing(automation, trigger_states=states), RECEIVED)
    other = act(
        automation,
        make_firing(automation, id=OTHER_FIRING_ID, trigger_states=states),
        RECEIVED,
    )
    ids = [a["id"] for a in first.actions] + [e["id"] for e in first.events]
    assert len(set(ids)) == len(ids)
    other_ids = [a["id"] for a in other.actions] + [e["id"] for e in other.events]
    assert not set(ids) & set(other_ids)
    assert all(UUID(i) for i in ids)


def test_idempotency_key_format(automation: Automation, firing: Firing) -> None:
    """SEMANTICS 3.7: `automation <automation id>, action <index>, invocation <id>`."""
    action = act(automation, firing, RECEIVED).actions[1]
    assert idempotency_key(action) == (
        f"automation {AUTOMATION_ID}, action 1, invocation {action['id']}"
    )


# -- 3.6 the firing on the wire --


def test_firing_json(automation: Automation, firing: Firing) -> None:
    """SEMANTICS 3.6, 3.8: the full trigger, capitalised states, wall-clock `triggered`,
    triggering_value null; `at_us` stays internal."""
    assert firing.to_json() == {
        "id": str(FIRING_ID),
        "trigger": automation.trigger.to_json(),
        "trigger_states": ["Triggered"],
        "triggered": TRIGGERED.isoformat(),
        "triggering_labels": {"team": "data"},
        "triggering_firings": [],
        "triggering_event": TRIGGERING_EVENT,
        "triggering_value": None,
    }


def test_composite_firing_json_carries_children_and_child_firings() -> None:
    """SEMANTICS 3.6: a composite firing has the composite with its children and the
    child firings that caused it."""
    automation = make_automation(
        {"type": "sequence", "within": None, "triggers": [{"posture": "Reactive"}] * 2}
    )
    composite = automation.trigger
    assert isinstance(composite, SequenceTrigger)
    children = [
        make_firing(automation, id=FIRING_ID, trigger=composite.triggers[0]).to_json(),
        make_firing(automation, id=OTHER_FIRING_ID, trigger=composite.triggers[1]).to_json(),
    ]
    firing = make_firing(
        automation,
        id=UUID(int=7),
        triggering_labels={},
        triggering_firings=tuple(children),
    )
    document = firing.to_json()
    assert [t["id"] for t in document["trigger"]["triggers"]] == [
        str(t.id) for t in composite.triggers
    ]
    assert document["triggering_firings"] == children
    assert document["triggering_labels"] == {}
