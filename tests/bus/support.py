"""Shared by the bus tests: a valid automation document."""

from __future__ import annotations

import uuid
from typing import Any


def automation_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": "tell me",
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": ["prefect.flow-run.Failed"],
            "threshold": 1,
        },
        "actions": [{"type": "send-notification"}],
    }
    return {**document, **overrides}
