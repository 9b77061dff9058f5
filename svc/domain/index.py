"""An index of loaded event triggers by the event names they can be interested in (2.7)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from svc.domain.matching import GlobMatcher, glob_matcher, is_exact, literal_prefix
from svc.domain.names import EventNamePatterns


class NamedEvent(Protocol):
    @property
    def event(self) -> str: ...


class IndexedTrigger(Protocol):
    @property
    def id(self) -> Any: ...

    @property
    def patterns(self) -> EventNamePatterns: ...

    def covers(self, event: Any) -> bool: ...


T = TypeVar("T", bound=IndexedTrigger)

# Up to this many triggers under one exact key are kept in a tuple, more in a set.
FEW_TRIGGERS = 8
# Event names whose candidates are remembered until the index changes (see `candidates`).
NAMES_REMEMBERED = 4096


@dataclass
class IndexStats:
    """Work done by lookups, so tests can check that it does not grow with the index."""

    lookups: int = 0
    patterns_tested: int = 0


class TriggerIndex(Generic[T]):
    """Loaded triggers by their index keys (`expect ∪ after`, or `*`).

    Exact keys are found with one dict lookup. Wildcard keys are grouped by their literal
    prefix (the text before the first metacharacter), so a name is only tested against the
    patterns whose prefix it starts with, each distinct pattern once, however many triggers
    share it. The catch-all `*` is simply the wildcard with the empty prefix. The candidates
    of each name looked up are remembered until the next change (up to NAMES_REMEMBERED
    names), so a name seen again costs one dict lookup.
    """

    def __init__(self) -> None:
        self.stats = IndexStats()
        self.version = 0
        # name -> its candidates, as the index stands: traffic repeats a few names over and
        # over, and a lookup costs more the more distinct wildcard prefixes are loaded
        self._remembered: dict[str, list[T]] = {}
        self.clear()

    def clear(self) -> None:
        """Forget every trigger (the stats keep counting)."""
        self._bump()
        self._triggers: dict[Hashable, T] = {}
        # Position of each trigger in the order of addition, to return candidates in it.
        self._added: dict[Hashable, int] = {}
        self._next_position = 0
        # The index keys each trigger was added under (to remove it under the same ones).
        self._keys: dict[Hashable, frozenset[str]] = {}
        # Exact key -> ids of the triggers under it: a tuple while they are few (most keys
        # have one, and a tuple of one takes a fifth of a set of one), a set beyond that.
        self._exact: dict[str, tuple[Hashable, ...] | set[Hashable]] = {}
        # Literal prefix -> wildcard key -> (its matcher, ids of the triggers under it).
        self._wildcards: dict[str, dict[str, _Pattern]] = {}
        # Prefix length -> how many distinct prefixes of that length are in use.
        self._prefix_lengths: dict[int, int] = {}

    def _bump(self) -> None:
        # Changes with every add, remove and clear: a lookup made at one version holds while
        # the version is the same (the engine looks up the next batch ahead of time).
        self.version += 1
        if self._remembered:
            self._remembered.clear()

    def __len__(self) -> int:
        return len(self._triggers)

    def __contains__(self, trigger_id: object) -> bool:
        return trigger_id in self._triggers

    def get(self, trigger_id: Hashable) -> T | None:
        return self._triggers.get(trigger_id)

    def add(self, trigger: T) -> None:
        """Index a trigger; one with the same id is replaced (and counts as added now)."""
        trigger_id = trigger.id
        self.remove(trigger_id)
        self._bump()
        keys = trigger.patterns.index_keys
        self._triggers[trigger_id] = trigger
        self._added[trigger_id] = self._next_position
        self._next_position += 1
        self._keys[trigger_id] = keys
        for key in keys:
            self._index(key, trigger_id)

    def remove(self, trigger_id: Hashable) -> None:
        """Forget a trigger; nothing happens if it is not indexed."""
        keys = self._keys.pop(trigger_id, None)
        if keys is None:
            return
        self._bump()
        del self._triggers[trigger_id]
        del self._added[trigger_id]
        for key in keys:
            self._unindex(key, trigger_id)

    def candidates(self, name: str) -> list[T]:
        """Every trigger with an index key that full-glob-matches `name`, in addition order.
        The list is shared by every lookup of the name until the index changes: read it,
        do not change it."""
        self.stats.lookups += 1
        remembered = self._remembered.get(name)
        if remembered is not None:
            return remembered
        found = self._look_up(name)
        if len(self._remembered) >= NAMES_REMEMBERED:
            self._remembered.clear()
        self._remembered[name] = found
        return found

    def _look_up(self, name: str) -> list[T]:
        found: set[Hashable] = set(self._exact.get(name, ()))
        # One dict probe per distinct prefix length: bounded by the length of the patterns,
        # not by how many triggers are loaded.
        for length in self._prefix_lengths:
            if length > len(name):
                continue
            group = self._wildcards.get(name[:length])
            if group is None:
                continue
            for pattern in group.values():
                self.stats.patterns_tested += 1
                if pattern.matcher(name):
                    found.update(pattern.trigger_ids)
        return [self._triggers[i] for i in sorted(found, key=self._added.__getitem__)]

    def interested(self, event: NamedEvent, candidates: list[T] | None = None) -> list[T]:
        """Candidates that cover the event: name coverage and resource coverage (2.7), both
        in the trigger's `covers`; `candidates`, when the caller has them already, are
        `candidates(event.event)`."""
        if candidates is None:
            candidates = self.candidates(event.event)
        return [trigger for trigger in candidates if trigger.covers(event)]

    def _index(self, key: str, trigger_id: Hashable) -> None:
        if is_exact(key):
            members = self._exact.get(key, ())
            if isinstance(members, set):
                members.add(trigger_id)
            elif trigger_id not in members:
                grown = (*members, trigger_id)
                self._exact[key] = set(grown) if len(grown) > FEW_TRIGGERS else grown
            return
        prefix = literal_prefix(key)
        group = self._wildcards.get(prefix)
        if group is None:
            group = self._wildcards[prefix] = {}
            self._prefix_lengths[len(prefix)] = self._prefix_lengths.get(len(prefix), 0) + 1
        pattern = group.get(key)
        if pattern is None:
            pattern = group[key] = _Pattern(glob_matcher(key))
        pattern.trigger_ids.add(trigger_id)

    def _unindex(self, key: str, trigger_id: Hashable) -> None:
        if is_exact(key):
            members = self._exact[key]
            if isinstance(members, set):
                members.discard(trigger_id)
            else:
                members = self._exact[key] = tuple(i for i in members if i != trigger_id)
            if not members:
                del self._exact[key]
            return
        prefix = literal_prefix(key)
        group = self._wildcards[prefix]
        pattern = group[key]
        pattern.trigger_ids.discard(trigger_id)
        if not pattern.trigger_ids:
            del group[key]
        if not group:
            del self._wildcards[prefix]
            remaining = self._prefix_lengths.pop(len(prefix)) - 1
            if remaining:
                self._prefix_lengths[len(prefix)] = remaining


@dataclass
class _Pattern:
    """A wildcard key, compiled once, and the triggers indexed under it."""

    matcher: GlobMatcher
    trigger_ids: set[Hashable] = field(default_factory=set)
