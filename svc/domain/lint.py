"""Warnings (not errors) about an accepted automation: things that are valid but rarely meant."""

from __future__ import annotations

from uuid import UUID

from svc.domain.automations import Automation, EventTrigger, Posture
from svc.domain.events import EPOCH, RESOURCE_ID, RESOURCE_NAME, ReceivedEvent
from svc.domain.firings import AUTOMATION_TRIGGERED
from svc.domain.matching import glob_match, is_exact


def _own_triggered_event(automation: Automation) -> ReceivedEvent:
    """The `prefect.automation.triggered` event this automation publishes when it fires
    (SEMANTICS 7.3: the posture label only when the top-level trigger is an event trigger)."""
    resource = {
        RESOURCE_ID: f"prefect.automation.{automation.id}",
        RESOURCE_NAME: automation.name,
    }
    if isinstance(automation.trigger, EventTrigger):
        resource["prefect.posture"] = str(automation.trigger.posture)
    return ReceivedEvent(
        occurred=EPOCH,
        event=AUTOMATION_TRIGGERED,
        resource=resource,
        related=[
            {RESOURCE_ID: "prefect.event.00000000-0000-0000-0000-000000000000",
             "prefect.resource.role": "triggering-event"}
        ],
        id=UUID(int=0),
    )


def lint_automation(automation: Automation) -> list[str]:
    """What a reviewer would flag: a firing loop, a trigger that matches every event, and a
    proactive `after` trigger whose unrelated runs or states share one bucket."""
    warnings: list[str] = []
    own = _own_triggered_event(automation)
    for trigger in automation.event_triggers():
        where = f"trigger {trigger.id}"
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
        warnings += _after_covers_expect(trigger, where)
    return warnings


def _after_covers_expect(trigger: EventTrigger, where: str) -> list[str]:
    """A Proactive trigger whose `after` wildcard also matches an `expect` name: the event
    that should satisfy a window (a run's final state) also arms it, so the states of one run
    share one bucket and each satisfied window restarts and fires if nothing follows
    (SEMANTICS 6 step 6). `after X, expect X` (a heartbeat) is meant, and not flagged."""
    if trigger.posture != Posture.Proactive:
        return []
    return [
        f"{where} is Proactive and its `after` pattern {pattern!r} also matches the expected "
        f"{name!r}: that event re-arms the window it satisfies, so a fresh window starts "
        "and fires if nothing follows; list the `after` states explicitly"
        for name in sorted(trigger.expect)
        if name not in trigger.after and is_exact(name)
        for pattern in sorted(trigger.after)
        if not is_exact(pattern) and glob_match(pattern, name)
    ]
