"""Firings, triggered actions and the automation state-change event (SEMANTICS 3.6-3.8, 7.3).

Ids are derived from what caused them (Decision 3), so building the same firing twice gives
the same ids and a re-publish is dropped by JetStream's duplicate window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

from svc.domain.automations import Automation, EventTrigger, Trigger, TriggerState
from svc.domain.events import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE
from svc.domain.events import to_micros as to_micros  # re-exported: defined in events

AUTOMATION_TRIGGERED = "prefect.automation.triggered"
AUTOMATION_RESOLVED = "prefect.automation.resolved"


def from_micros(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)




@dataclass(frozen=True)
class Firing:
    """One firing of a trigger. `at_us` is its event time (Decision 1), not on the wire."""

    id: UUID
    trigger: Trigger
    triggered: datetime
    at_us: int
    triggering_labels: dict[str, str] = field(default_factory=dict)
    triggering_event: dict[str, Any] | None = None
    triggering_firings: tuple[dict[str, Any], ...] = ()
    trigger_states: tuple[TriggerState, ...] = (TriggerState.Triggered,)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "trigger": self.trigger.to_json(),
            "trigger_states": [str(state) for state in self.trigger_states],
            "triggered": self.triggered.isoformat(),
            "triggering_labels": dict(self.triggering_labels),
            "triggering_firings": list(self.triggering_firings),
            "triggering_event": self.triggering_event,
            "triggering_value": None,
        }


@dataclass(frozen=True)
class Act:
    """What act() publishes for one top-level firing: state-change events, then actions."""

    events: tuple[dict[str, Any], ...]
    actions: tuple[dict[str, Any], ...]


def state_change_event(
    automation: Automation, firing: Firing, state: TriggerState, received: datetime
) -> dict[str, Any]:
    """The `prefect.automation.triggered` (or `resolved`) event of SEMANTICS 7.3 step 1."""
    name = AUTOMATION_TRIGGERED if state == TriggerState.Triggered else AUTOMATION_RESOLVED
    resource = {
        RESOURCE_ID: f"prefect.automation.{automation.id}",
        RESOURCE_NAME: automation.name,
    }
    if isinstance(firing.trigger, EventTrigger):
        resource["prefect.posture"] = str(firing.trigger.posture)
    related = []
    if firing.triggering_event is not None:
        related.append(
            {
                RESOURCE_ID: f"prefect.event.{firing.triggering_event['id']}",
                RESOURCE_ROLE: "triggering-event",
            }
        )
    return {
        "occurred": firing.triggered.isoformat(),
        "event": name,
        "resource": resource,
        "related": related,
        "payload": {
            "triggering_labels": dict(firing.triggering_labels),
            "triggering_event": firing.triggering_event,
        },
        "id": str(uuid5(firing.id, name)),
        "follows": None,
        "received": received.isoformat(),
    }


def act(automation: Automation, firing: Firing, received: datetime) -> Act:
    """SEMANTICS 7.3: the state-change events and one triggered action per action, in order."""
    # Triggered before Resolved, whatever order the firing lists its states in.
    states = [state for state in TriggerState if state in firing.trigger_states]
    events = [state_change_event(automation, firing, s, received) for s in states]
    by_state = {event["event"]: event for event in events}
    triggered_event = by_state.get(AUTOMATION_TRIGGERED)
    resolved_event = by_state.get(AUTOMATION_RESOLVED)
    automation_json = automation.to_json()
    firing_json = firing.to_json()
    triggering_event_id = (triggered_event or resolved_event or {}).get("id")

    plan: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
        (action, firing.triggering_event) for action in automation.actions
    ]
    if triggered_event is not None:
        plan += [(action, triggered_event) for action in automation.actions_on_trigger]
    if resolved_event is not None:
        plan += [(action, resolved_event) for action in automation.actions_on_resolve]

    actions = tuple(
        {
            "automation": automation_json,
            "id": str(uuid5(firing.id, f"action:{index}")),
            "firing": firing_json,
            "triggered": firing.triggered.isoformat(),
            "triggering_labels": dict(firing.triggering_labels),
            "triggering_event": triggering_event,
            "action": action,
            "action_index": index,
            "automation_triggered_event_id": triggering_event_id,
        }
        for index, (action, triggering_event) in enumerate(plan)
    )
    return Act(events=tuple(events), actions=actions)


def idempotency_key(triggered_action: dict[str, Any]) -> str:
    """The key actions use to run each triggered action once (SEMANTICS 3.7)."""
    return (
        f"automation {triggered_action['automation']['id']}, "
        f"action {triggered_action['action_index']}, "
        f"invocation {triggered_action['id']}"
    )
