"""Automation documents in the shape Prefect's REST API takes, for the admin API tests."""

from __future__ import annotations

import copy
from typing import Any

# A compound trigger (require 2, no time limit) over an event trigger and a sequence of two
# event triggers, with both spellings of resource-specification values and of match_related.
NESTED: dict[str, Any] = {
    "name": "deployments that fail twice, or crash after a retry",
    "description": "nested compound and sequence triggers",
    "enabled": True,
    "tags": ["ops", "nightly"],
    "trigger": {
        "type": "compound",
        "require": 2,
        "within": None,
        "triggers": [
            {
                "type": "event",
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "match_related": {
                    "prefect.resource.role": "deployment",
                    "prefect.resource.id": ["prefect.deployment.a", "prefect.deployment.b"],
                },
                "expect": ["prefect.flow-run.Failed"],
                "for_each": ["prefect.resource.id"],
                "posture": "Reactive",
                "threshold": 2,
                "within": 3600,
            },
            {
                "type": "sequence",
                "within": 600.5,
                "triggers": [
                    {
                        "type": "event",
                        "match_related": [
                            {"prefect.resource.role": "flow"},
                            {"prefect.resource.role": ["tag"], "prefect.resource.id": ["!x"]},
                        ],
                        "expect": ["prefect.flow-run.AwaitingRetry"],
                        "posture": "Reactive",
                        "threshold": 1,
                        "within": 0,
                    },
                    {
                        "type": "event",
                        "after": ["prefect.flow-run.Running"],
                        "expect": ["prefect.flow-run.Completed"],
                        "posture": "Proactive",
                        "threshold": 1,
                        "within": "PT5M",
                    },
                ],
            },
        ],
    },
    "actions": [
        {"type": "send-notification", "block_document_id": "b1", "subject": "s", "body": "b"},
        {"type": "run-deployment", "source": "selected", "parameters": {"retries": 3}},
    ],
    "actions_on_trigger": [{"type": "do-nothing"}],
    "actions_on_resolve": [],
}

# An enabled reactive trigger on flow-run state changes that runs the inferred deployment:
# refused by the run-deployment loop guard (SEMANTICS 3.1) unless disabled.
LOOPING: dict[str, Any] = {
    "name": "reruns every flow run",
    "enabled": False,
    "trigger": {
        "type": "event",
        "expect": ["prefect.flow-run.Running"],
        "posture": "Reactive",
        "threshold": 1,
    },
    "actions": [{"type": "run-deployment", "source": "inferred"}],
}

SIMPLE: dict[str, Any] = {
    "name": "any failure",
    "trigger": {"type": "event", "expect": ["prefect.flow-run.Failed"], "posture": "Reactive"},
    "actions": [{"type": "do-nothing"}],
}


def document(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of `base` with top-level keys replaced (a value of None removes the key)."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result
