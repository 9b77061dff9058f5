"""Why a trigger is or is not interested in an event, in words: the pure half of explain.

The engine asks yes-or-no questions (SEMANTICS 2.5-2.7: index hit, coverage, `expects`,
`starts_after`, resource coverage); explain asks the same questions through the same
matchers and also says which pattern answered, or which label failed and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from svc.domain.automations import EventTrigger
from svc.domain.events import ReceivedEvent
from svc.domain.matching import ResourceSpecification, glob_match, match_value
from svc.domain.names import CATCH_ALL, EventNamePatterns

# How many related resources a match_related failure describes one by one.
RELATED_DETAILS = 3


@dataclass(frozen=True)
class NameCheck:
    """How an event's name fares against a trigger's `expect` and `after` (SEMANTICS 2.7)."""

    # matchers 1 and 2: the trigger is a candidate for this name
    interested: bool
    # matcher 3: the name is expected (counts) / starts a window
    expected: bool
    starts_after: bool
    # the patterns that answered (None when none did; `expect` empty: every name is expected)
    expect_pattern: str | None
    after_pattern: str | None
    reason: str


@dataclass(frozen=True)
class ResourceCheck:
    """Whether a trigger's `match` and `match_related` cover an event (SEMANTICS 2.5, 2.6)."""

    covered: bool
    # one line per failure: which specification, which label, what it holds
    failures: tuple[str, ...] = ()


def check_name(patterns: EventNamePatterns, name: str) -> NameCheck:
    """The three matchers of 2.7 for one name, with the pattern that answered each."""
    expect_pattern = next((p for p in sorted(patterns.expect) if match_value(p, name)), None)
    after_pattern = next((p for p in sorted(patterns.after) if match_value(p, name)), None)
    interested = patterns.index_hit(name) and patterns.covers(name)
    expected, starts_after = patterns.expects(name), patterns.starts_after(name)
    return NameCheck(
        interested=interested,
        expected=expected,
        starts_after=starts_after,
        expect_pattern=expect_pattern,
        after_pattern=after_pattern,
        reason=_name_reason(patterns, name, interested, expect_pattern, after_pattern),
    )


def _name_reason(
    patterns: EventNamePatterns,
    name: str,
    interested: bool,
    expect_pattern: str | None,
    after_pattern: str | None,
) -> str:
    if not patterns.expect:
        if interested:
            return "`expect` is empty: every event is expected"
        return "`expect` is empty, but an empty name (or one starting with a newline) is never covered"
    if interested:
        matched = [f"expect {expect_pattern!r}"] if expect_pattern else []
        matched += [f"after {after_pattern!r}"] if after_pattern else []
        return "matches " + " and ".join(matched) if matched else "matches by name"
    every = sorted(patterns.expect | patterns.after)
    near = [p for p in every if _wildcard_needs_a_character(p, name)]
    if near:
        return (
            f"{name!r} matches no pattern: `*` must stand for at least one character, so "
            f"{near[0]!r} does not cover it"
        )
    odd = [p for p in every if p.startswith("!") or "?" in p or "[" in p]
    hint = (
        f" (in `expect`/`after`, `!`, `?` and `[` are literal characters: {odd[0]!r})"
        if odd
        else ""
    )
    return f"{name!r} matches none of {', '.join(repr(p) for p in every)}{hint}"


def _wildcard_needs_a_character(pattern: str, name: str) -> bool:
    """The glob accepts the name only because its `*` may be empty (coverage refuses that)."""
    return pattern != CATCH_ALL and glob_match(pattern, name) and not _covers_one(pattern, name)


def _covers_one(pattern: str, name: str) -> bool:
    return EventNamePatterns(expect=frozenset({pattern})).covers(name)


def check_resources(trigger: EventTrigger, event: ReceivedEvent) -> ResourceCheck:
    """`match` against the primary resource, each `match_related` against the related list."""
    failures = [f"match: {f}" for f in spec_failures(trigger.match, event.resource)]
    for position, spec in enumerate(trigger.related_specs):
        if spec.includes(event.related):
            continue
        where = f"match_related[{position}] {spec.to_json()}"
        if not event.related:
            failures.append(f"{where}: the event has no related resources")
            continue
        details = [
            f"{resource.get('prefect.resource.id', '?')}: {spec_failures(spec, resource)[0]}"
            for resource in event.related[:RELATED_DETAILS]
        ]
        more = len(event.related) - RELATED_DETAILS
        suffix = f"; and {more} more" if more > 0 else ""
        failures.append(
            f"{where}: none of the {len(event.related)} related resources matches ("
            + "; ".join(details)
            + suffix
            + ")"
        )
    return ResourceCheck(covered=not failures, failures=tuple(failures))


def spec_failures(spec: ResourceSpecification, labels: Mapping[str, str]) -> list[str]:
    """Each label of the spec that the resource does not satisfy, and why (2.4, 2.5)."""
    failures = []
    for label in spec.to_json():
        patterns = spec.patterns(label)
        value = labels.get(label)
        if value is None:
            failures.append(f"label {label!r} is missing (a missing label never matches)")
        elif not any(match_value(p, value) for p in patterns):
            failures.append(f"label {label!r} is {value!r}, which matches none of {_list(patterns)}")
    return failures


def _list(patterns: Sequence[str]) -> str:
    return "[]" if not patterns else "[" + ", ".join(repr(p) for p in patterns) + "]"
