"""The event-name patterns of a trigger's `expect` and `after`, and their three matchers (2.7)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from svc.domain.matching import GlobMatcher, ValueMatcher, glob_matcher, value_matcher

# The index key of a trigger without `expect`: it must see every event (2.7, matcher 1).
CATCH_ALL = "*"


@dataclass(frozen=True)
class EventNamePatterns:
    """`expect` and `after` of an event trigger, with every matcher compiled once, on first
    use: a service loads many triggers, most of which rarely or never see a candidate event
    (docs/performance.md, memory and start)."""

    expect: frozenset[str] = frozenset()
    after: frozenset[str] = frozenset()
    index_keys: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expect, after = frozenset(self.expect), frozenset(self.after)
        # (`expect` itself when there is no `after`: no second copy of the same set)
        keys = (expect | after if after else expect) if expect else frozenset({CATCH_ALL})
        for name, value in (("expect", expect), ("after", after), ("index_keys", keys)):
            object.__setattr__(self, name, value)

    # Sorted, so that the alternation (and any debugging output) is deterministic.
    @functools.cached_property
    def _index_matchers(self) -> tuple[GlobMatcher, ...]:
        return tuple(glob_matcher(key) for key in sorted(self.index_keys))

    @functools.cached_property
    def _expect_matchers(self) -> tuple[ValueMatcher, ...]:
        return tuple(value_matcher(p) for p in sorted(self.expect))

    @functools.cached_property
    def _after_matchers(self) -> tuple[ValueMatcher, ...]:
        return tuple(value_matcher(p) for p in sorted(self.after))

    def index_hit(self, name: str) -> bool:
        """Matcher 1: the name full-glob-matches an index key (no negation)."""
        return any(matcher(name) for matcher in self._index_matchers)

    def covers(self, name: str) -> bool:
        """Matcher 2: Prefect's coverage regex, anchored at the start only."""
        return self._coverage(name)

    @functools.cached_property
    def _coverage(self) -> Callable[[str], bool]:
        # Compiled on first use: loading many triggers must not pay for regexes of triggers
        # that never see a candidate event.
        expect, after = self.expect, self.after
        if not expect:
            return _any_name
        patterns = expect | after
        if not any("*" in pattern for pattern in patterns):
            # Escaped literals matched at the start: a prefix test, no regex needed.
            prefixes = tuple(sorted(patterns))
            return lambda name: name.startswith(prefixes)
        regex = _coverage_regex(patterns)
        return lambda name: regex.match(name) is not None

    def expects(self, name: str) -> bool:
        """Matcher 3: no `expect` means every event is expected; else 2.4 rules, `!` honoured."""
        return not self._expect_matchers or any(m(name) for m in self._expect_matchers)

    def starts_after(self, name: str) -> bool:
        """Matcher 3: does the name match an `after` pattern (2.4 rules)?"""
        return any(matcher(name) for matcher in self._after_matchers)


# Prefect compiles the coverage regex without flags, so `.` (hence `*`, and the catch-all of
# a trigger without `expect`) does not match a newline; with `re.match` an alternative only
# has to match a prefix of the name.
_ANY_NAME = re.compile(".+")


def _any_name(name: str) -> bool:
    return _ANY_NAME.match(name) is not None


def _coverage_regex(patterns: frozenset[str]) -> re.Pattern[str]:
    alternatives = (
        ".+".join(re.escape(part) for part in pattern.split("*")) for pattern in sorted(patterns)
    )
    return re.compile("|".join(alternatives))


def name_is_interesting(patterns: EventNamePatterns, name: str) -> bool:
    """The brute-force definition of "this trigger may be interested in this name" (2.7)."""
    return patterns.index_hit(name) and patterns.covers(name)
