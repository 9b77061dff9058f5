"""Label-value globs, resource specifications and label lookups (SEMANTICS 2.3-2.6)."""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RESOURCE_ROLE = "prefect.resource.role"
RESOURCE_ID = "prefect.resource.id"

# The characters that make a pattern a glob; a pattern without them matches only itself.
GLOB_METACHARACTERS = frozenset("*?[")

# Distinct patterns are few (they come from automations), names are many: keep every
# compiled pattern an installation is likely to have.
COMPILED_GLOBS_CACHE_SIZE = 65_536

GlobMatcher = Callable[[str], bool]
ValueMatcher = Callable[[str | None], bool]


# -- globs (2.4), with the edge rules of Python's fnmatch.fnmatchcase --


def is_exact(pattern: str) -> bool:
    """True if the pattern has no glob metacharacter, so it matches only itself."""
    return "*" not in pattern and "?" not in pattern and "[" not in pattern


def literal_prefix(pattern: str) -> str:
    """The text before the first metacharacter: every name the glob matches starts with it."""
    for position, char in enumerate(pattern):
        if char in GLOB_METACHARACTERS:
            return pattern[:position]
    return pattern


def _always(_value: str) -> bool:
    return True


@functools.lru_cache(maxsize=COMPILED_GLOBS_CACHE_SIZE)
def glob_matcher(pattern: str) -> GlobMatcher:
    """A predicate for the case-sensitive full glob match of `pattern` (no negation)."""
    if pattern == "*":
        return _always
    if is_exact(pattern):
        return functools.partial(operator.eq, pattern)
    head = pattern[:-1]
    if pattern.endswith("*") and is_exact(head):
        # The usual `prefect.flow-run.*` shape needs no regex.
        return lambda value: value.startswith(head)
    regex = re.compile(_glob_to_regex(pattern), re.DOTALL)
    return lambda value: regex.fullmatch(value) is not None


def glob_match(pattern: str, value: str) -> bool:
    """The positive rules of 2.4: `*`, `?`, `[...]` and `[!...]`, matched on the whole value."""
    return glob_matcher(pattern)(value)


@functools.lru_cache(maxsize=COMPILED_GLOBS_CACHE_SIZE)
def value_matcher(pattern: str) -> ValueMatcher:
    """A predicate equivalent to `match_value(pattern, value)`, for patterns used many times."""
    negated = pattern.startswith("!")
    positive = glob_matcher(pattern[1:] if negated else pattern)

    def matches(value: str | None) -> bool:
        # A missing value never matches, not even a negated pattern (2.4, quirk 16.3).
        if value is None:
            return False
        return positive(value) is not negated

    return matches


def match_value(pattern: str, value: str | None) -> bool:
    """SEMANTICS 2.4: one label value against one pattern; a leading `!` negates."""
    if value is None:
        return False
    if pattern.startswith("!"):
        return not glob_matcher(pattern[1:])(value)
    return glob_matcher(pattern)(value)


def _glob_to_regex(pattern: str) -> str:
    """A regex (for `fullmatch`, DOTALL) equivalent to `pattern` under fnmatchcase rules."""
    segments = _glob_segments(pattern)
    if len(segments) == 1:
        return segments[0]
    # Every piece between stars has a fixed width, so placing each middle segment at its
    # leftmost occurrence is always right; atomic groups forbid the backtracking that
    # would make patterns like `*a*a*a*b` slow on long values.
    first, *middle, last = segments
    return first + "".join(f"(?>.*?{segment})" for segment in middle) + ".*" + last


def _glob_segments(pattern: str) -> list[str]:
    """The regexes of the stretches of `pattern` between its runs of `*`."""
    segments: list[str] = []
    current: list[str] = []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        position += 1
        if char == "*":
            segments.append("".join(current))
            current = []
            # A run of stars means the same as one star.
            while pattern.startswith("*", position):
                position += 1
        elif char == "?":
            current.append(".")
        elif char == "[":
            piece, position = _bracket(pattern, position)
            current.append(piece)
        else:
            current.append(re.escape(char))
    segments.append("".join(current))
    return segments


def _bracket(pattern: str, after_bracket: int) -> tuple[str, int]:
    """The regex for the `[` just before `after_bracket`, and where parsing resumes."""
    negated = pattern.startswith("!", after_bracket)
    body_start = after_bracket + 1 if negated else after_bracket
    # A `]` right after `[` or `[!` belongs to the class; the class needs a later `]`.
    search_from = body_start + 1 if pattern.startswith("]", body_start) else body_start
    close = pattern.find("]", search_from)
    if close < 0:
        # An unclosed `[` is a literal character.
        return re.escape("["), after_bracket
    items = _class_items(pattern[body_start:close])
    kept = [item for item in items if not _is_empty_range(item)]
    if not negated and items and _is_empty_range(items[0]) and kept and kept[0][0] == "!":
        # fnmatch drops empty ranges before it looks for the negation mark, so `[b-a!x]`
        # reads as `[!x]`; reproduce it (a kept range `!-x` then reads as `-` and `x`).
        negated = True
        first = kept.pop(0)
        if len(first) == 3:
            kept[:0] = ["-", first[2]]
    if not kept:
        # An empty class never matches; its negation matches any character.
        return (".", close + 1) if negated else ("(?!)", close + 1)
    members = "".join(
        re.escape(item) if len(item) == 1 else f"{re.escape(item[0])}-{re.escape(item[2])}"
        for item in kept
    )
    return f"[{'^' if negated else ''}{members}]", close + 1


def _class_items(body: str) -> list[str]:
    """Class members: one character, or a range `x-y` (a `-` that is first or last is literal)."""
    items: list[str] = []
    position = 0
    while position < len(body):
        if position + 2 < len(body) and body[position + 1] == "-":
            items.append(body[position : position + 3])
            position += 3
        else:
            items.append(body[position])
            position += 1
    return items


def _is_empty_range(item: str) -> bool:
    return len(item) == 3 and item[0] > item[2]


# -- resource specifications (2.5) --


class InvalidResourceSpecification(TypeError, ValueError):
    """A resource specification that is not an object of label -> string or list of strings."""


@dataclass(frozen=True, eq=False)
class ResourceSpecification:
    """A `match` or `match_related` entry: label -> pattern or list of patterns (2.5).

    Build it with `from_json`; `to_json` gives back the same shape (a string stays a string).
    """

    # label -> pattern (str) or patterns (tuple, from a JSON list), in the given order
    _json: tuple[tuple[str, str | tuple[str, ...]], ...]

    @functools.cached_property
    def _matchers(self) -> tuple[tuple[str, tuple[ValueMatcher, ...]], ...]:
        # compiled on first use: most loaded specifications rarely see a candidate resource
        return tuple(
            (label, tuple(value_matcher(p) for p in _as_patterns(value)))
            for label, value in self._json
        )

    @classmethod
    def from_json(cls, obj: Any) -> ResourceSpecification:
        if not isinstance(obj, Mapping):
            raise InvalidResourceSpecification(
                f"a resource specification must be an object of label -> pattern(s), "
                f"got {type(obj).__name__}"
            )
        if not obj:
            return EMPTY_SPECIFICATION  # the default of every trigger's match and match_related
        entries: list[tuple[str, str | tuple[str, ...]]] = []
        for label, value in obj.items():
            entries.append((label, _checked_entry(label, value)))
        return cls(tuple(entries))

    def to_json(self) -> dict[str, str | list[str]]:
        return {
            label: value if isinstance(value, str) else list(value) for label, value in self._json
        }

    @property
    def is_empty(self) -> bool:
        return not self._json

    def patterns(self, label: str) -> tuple[str, ...]:
        """The patterns of `label` (a string is a one-element list); () if it is not in the spec."""
        for name, value in self._json:
            if name == label:
                return _as_patterns(value)
        return ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Every label of the spec is satisfied by at least one of its patterns (2.5)."""
        # Plain loops rather than any(): this runs for every candidate trigger of every event.
        for label, matchers in self._matchers:
            value = labels.get(label)
            if value is None:
                return False
            # Patterns of one label are OR-ed, negations included (quirk 16.2).
            for matcher in matchers:
                if matcher(value):
                    break
            else:
                return False
        return True

    def includes(self, resources: Sequence[Mapping[str, str]]) -> bool:
        """An empty spec includes anything, even no resource; otherwise one must match."""
        if not self._json:
            return True
        return any(self.matches(resource) for resource in resources)

    def matches_every_resource_of_kind(self, kind: str) -> bool:
        """Empty, or only `prefect.resource.id` with `<kind>.*` among its patterns (2.5)."""
        if self.is_empty:
            return True
        if len(self._json) != 1 or self._json[0][0] != RESOURCE_ID:
            return False
        return f"{kind}.*" in _as_patterns(self._json[0][1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResourceSpecification):
            return NotImplemented
        return dict(self._json) == dict(other._json)

    def __hash__(self) -> int:
        return hash(frozenset(self._json))

    def __repr__(self) -> str:
        return f"ResourceSpecification({self.to_json()!r})"


# Immutable, so shared by every specification that is empty.
EMPTY_SPECIFICATION = ResourceSpecification(())


def _checked_entry(label: object, value: object) -> str | tuple[str, ...]:
    if not isinstance(label, str):
        raise InvalidResourceSpecification(
            f"resource specification labels must be strings, got {label!r}"
        )
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InvalidResourceSpecification(
        f"resource specification label {label!r} must map to a string or a list of strings, "
        f"got {value!r}"
    )


def _as_patterns(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else value


# -- label lookups (2.3) and trigger resource coverage (2.6) --


def find_resource_label(
    resource: Mapping[str, str], related: Sequence[Mapping[str, str]], label: str
) -> str | None:
    """Resolve a `for_each` label: `related:<role>:<label>` or a label of the primary resource."""
    directive_part, colon, sub_label = label.rpartition(":")
    if colon:
        directive, _, role = directive_part.partition(":")
        if directive == "related":
            for candidate in related:
                if candidate.get(RESOURCE_ROLE) == role:
                    # Only the first resource in the role counts, even if it lacks the label.
                    return candidate.get(sub_label)
    # Includes `related:` labels whose role is absent: then the whole string is a label name.
    return resource.get(label)


def covers_resources(
    match: ResourceSpecification,
    match_related: Sequence[ResourceSpecification],
    resource: Mapping[str, str],
    related: Sequence[Mapping[str, str]],
) -> bool:
    """`match` includes the primary resource and every `match_related` spec the related list."""
    # `matches` is `includes` of the one primary resource, without a generator around it
    return match.matches(resource) and all(spec.includes(related) for spec in match_related)
