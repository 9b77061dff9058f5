"""Warnings (not errors) about an accepted automation: things that are valid but rarely meant."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from svc.domain.automations import Automation, EventTrigger, Posture
from svc.domain.events import RESOURCE_ID, RESOURCE_NAME, ReceivedEvent
from svc.domain.firings import AUTOMATION_TRIGGERED

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _own_triggered_event(automation: Automation, trigger: EventTrigger) -> ReceivedEvent:
    """The `prefect.automation.triggered` event this automation publishes when it fires."""
    return ReceivedEvent(
        occurred=_EPOCH,
        event=AUTOMATION_TRIGGERED,
        resource={
            RESOURCE_ID: f"prefect.automation.{automation.id}",
            RESOURCE_NAME: automation.name,
            "prefect.posture": str(trigger.posture),
        },
        related=[
            {RESOURCE_ID: "prefect.event.00000000-0000-0000-0000-000000000000",
             "prefect.resource.role": "triggering-event"}
        ],
        id=UUID(int=0),
    )


def lint_automation(automation: Automation) -> list[str]:
    """What a reviewer would flag: a firing loop, a trigger that matches every event, and a
    proactive `after` trigger whose unrelated runs share one bucket."""
    warnings: list[str] = []
    for trigger in automation.event_triggers():
        where = f"trigger {trigger.id}"
        own = _own_triggered_event(automation, trigger)
        if trigger.patterns.index_hit(own.event) and trigger.covers(own) and trigger.expects(
            own.event
        ):
            warnings.append(
                f"{where} matches this automation's own {AUTOMATION_TRIGGERED} events: "
                "each firing can cause another (a firing loop); narrow `expect` or `match`"
            )
        if not trigger.expect and trigger.match.is_empty and all(
            spec.is_empty for spec in trigger.related_specs
        ):
            warnings.append(
                f"{where} matches every event (empty expect, match and match_related); "
                "every event on the bus will be evaluated against it"
            )
        if trigger.posture == Posture.Proactive and trigger.after and not trigger.for_each:
            warnings.append(
                f"{where} is Proactive with `after` but no `for_each`: every `after` event "
                "shares one bucket, so unrelated runs arm and satisfy each other; add "
                "`for_each` (for example prefect.resource.id)"
            )
    return warnings
