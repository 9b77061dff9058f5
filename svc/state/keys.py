"""Every Redis key of the service, built in one place; each trigger's keys share `{<id>}`.

The hash tag makes every script touch one Redis Cluster slot. A trigger's keys also carry
its state generation (a digest of its automation's trigger tree), so a changed tree starts
from fresh state (SEMANTICS Decision 6) while the old generation is deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class TriggerKeys:
    """The keys of one EventTrigger's state, in the KEYS order of its scripts."""

    buckets: str
    ends: str
    satisfied: str
    seen: str
    outbox: str
    held: str
    heldat: str

    def as_list(self) -> list[str]:
        return [
            self.buckets,
            self.ends,
            self.satisfied,
            self.seen,
            self.outbox,
            self.held,
            self.heldat,
        ]

    def scratch(self, token: str) -> TriggerKeys:
        """Scratch copies of these keys for a dry run (explain): same hash tag, same slot."""
        return TriggerKeys(*(f"{key}:dry:{token}" for key in self.as_list()))


class KeysByTrigger(Mapping[UUID, TriggerKeys]):
    """The keys of some triggers of one generation, built when asked for rather than held:
    a service holds many triggers, and the keys of one take about a kilobyte."""

    __slots__ = ("_build", "_generation", "_ids")

    def __init__(self, keys: Keys, generation: str, trigger_ids: Iterable[UUID]):
        self._build = keys.trigger
        self._generation = generation
        self._ids = tuple(trigger_ids)

    def __getitem__(self, trigger_id: UUID) -> TriggerKeys:
        if trigger_id not in self._ids:
            raise KeyError(trigger_id)
        return self._build(trigger_id, self._generation)

    def __contains__(self, trigger_id: object) -> bool:
        return trigger_id in self._ids

    def __iter__(self) -> Iterator[UUID]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


@dataclass(frozen=True)
class CompositeKeys:
    """The keys of one composite trigger's state, in the KEYS order of composite-3."""

    children: str
    applied: str
    outbox: str

    def as_list(self) -> list[str]:
        return [self.children, self.applied, self.outbox]

    def scratch(self, token: str) -> CompositeKeys:
        """Scratch copies of these keys for a dry run (explain): same hash tag, same slot."""
        return CompositeKeys(*(f"{key}:dry:{token}" for key in self.as_list()))


@dataclass(frozen=True)
class Keys:
    """Key builders under one prefix, so several deployments can share a Redis."""

    prefix: str

    def trigger(self, trigger_id: UUID, generation: str) -> TriggerKeys:
        base = f"{self.prefix}:{{{trigger_id}}}:{generation}"
        return TriggerKeys(
            buckets=f"{base}:buckets",
            ends=f"{base}:ends",
            satisfied=f"{base}:satisfied",
            seen=f"{base}:seen",
            outbox=f"{base}:outbox",
            held=f"{base}:held",
            heldat=f"{base}:heldat",
        )

    def composite(self, trigger_id: UUID, generation: str) -> CompositeKeys:
        base = f"{self.prefix}:{{{trigger_id}}}:{generation}"
        return CompositeKeys(
            children=f"{base}:children", applied=f"{base}:applied", outbox=f"{base}:outbox"
        )

    # Causal ordering lives under one hash tag, like Prefect's Redis backend's `{scope}`:
    # a follower is parked and its leader released in scripts that touch the same slot.
    @property
    def _ordering(self) -> str:
        return f"{self.prefix}:{{ordering}}"

    def seen(self, event_id: UUID | str) -> str:
        return f"{self._ordering}:seen:{event_id}"

    def followers(self, leader_id: UUID | str) -> str:
        return f"{self._ordering}:followers:{leader_id}"

    @property
    def parked_events(self) -> str:
        return f"{self._ordering}:events"

    @property
    def waitlist(self) -> str:
        return f"{self._ordering}:waitlist"

    @property
    def clock(self) -> str:
        return f"{self.prefix}:{{clock}}"

    @property
    def periodic_lease(self) -> str:
        """String: the token of the replica that runs periodic and proactive evaluation."""
        return f"{self.prefix}:{{lease}}:periodic"

    @property
    def active(self) -> str:
        """Sorted set: automation id -> when one of its triggers' scripts last ran (touch-1);
        the automations whose state the periodic evaluation visits."""
        return f"{self.prefix}:{{automations}}:active"

    @property
    def generations(self) -> str:
        """Hash: automation id -> the generation its state was last loaded with."""
        return f"{self.prefix}:{{automations}}:generations"
