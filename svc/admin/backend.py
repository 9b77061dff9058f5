"""What the admin API needs from the service: a small store-and-state interface.

The service implements it over the automations KV bucket and the engine; the tests implement
it over a dict. Validation is not the backend's job: every automation it is given has passed
`parse_automation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from svc.domain.automations import Automation
from svc.domain.events import ReceivedEvent
from svc.explain import Explanation


@dataclass(frozen=True)
class BucketView:
    """One bucket of an event trigger, as the admin API shows it (SEMANTICS 4.1)."""

    # The values of the trigger's `for_each` labels, in sorted label order.
    key: tuple[str, ...]
    # The window: an event at time t is in it iff start <= t < end.
    start: datetime
    end: datetime
    count: int
    # The last event that touched the bucket, if any.
    last_event_id: str | None
    last_event_name: str | None
    # The debug breadcrumb of the last write (`increment_bucket[update]`...).
    last_operation: str


class AdminBackend(Protocol):
    """Storage and trigger state behind the admin API.

    Any method may raise a `LookupError` subclass (other than `KeyError` and `IndexError`,
    which stay internal errors) for an automation or trigger it does not know; the caller
    answers NOT_FOUND with its message. Any other exception is an INTERNAL error.
    """

    async def put(self, automation: Automation) -> None:
        """Store the automation, creating it or replacing the one with its id."""
        ...

    async def get(self, automation_id: UUID) -> Automation | None:
        """The stored automation with this id, or None."""
        ...

    async def list(self) -> list[Automation]:
        """Every stored automation, in any order."""
        ...

    async def delete(self, automation_id: UUID) -> bool:
        """Delete the automation and its trigger state; False if there was none."""
        ...

    async def reset_state(self, automation_id: UUID | None) -> None:
        """Delete the trigger state of one automation, or of every one when None."""
        ...

    async def trigger_buckets(self, automation_id: UUID, trigger_id: UUID) -> list[BucketView]:
        """The current buckets of one event trigger of the automation."""
        ...

    def lint(self, automation: Automation) -> list[str]:
        """Warnings about a valid automation (things that are rarely meant)."""
        ...

    async def explain(self, automation: Automation, event: ReceivedEvent) -> Explanation:
        """What evaluating `event` against the automation would do now, changing nothing."""
        ...
