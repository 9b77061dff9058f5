"""The three event-name matchers of `expect` and `after` (SEMANTICS 2.7)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from svc.domain.names import EventNamePatterns, name_is_interesting


def patterns(expect: Iterable[str] = (), after: Iterable[str] = ()) -> EventNamePatterns:
    return EventNamePatterns(expect=frozenset(expect), after=frozenset(after))


def interesting(p: EventNamePatterns, name: str) -> bool:
    return name_is_interesting(p, name)


# -- the effective rules --


def test_wildcard_needs_at_least_one_character_after_a_dot() -> None:
    """SEMANTICS 2.7 / quirk 16.1: `foo.*` does not cover `foo.`."""
    p = patterns({"foo.*"})
    assert interesting(p, "foo.bar")
    assert p.index_hit("foo.")
    assert not p.covers("foo.")
    assert not interesting(p, "foo.")


def test_trailing_wildcard_does_not_cover_the_bare_prefix() -> None:
    """SEMANTICS 2.7: `foo*` does not cover `foo`."""
    p = patterns({"foo*"})
    assert not interesting(p, "foo")
    assert interesting(p, "foox")


def test_question_mark_covers_only_the_literal_name() -> None:
    """SEMANTICS 2.7 (derived): `foo?` is a glob for the index and a literal for coverage."""
    p = patterns({"foo?"})
    assert interesting(p, "foo?")
    assert p.index_hit("foox")
    assert not interesting(p, "foox")


def test_bracket_pattern_covers_nothing() -> None:
    """SEMANTICS 2.7 (derived): `foo[1]` matches `foo1` as a glob but only `foo[1]` literally."""
    p = patterns({"foo[1]"})
    assert not interesting(p, "foo1")
    assert not interesting(p, "foo[1]")
    assert not interesting(p, "foo")


def test_middle_wildcard() -> None:
    p = patterns({"prefect.flow-run.*.done"})
    assert interesting(p, "prefect.flow-run.x.done")
    assert interesting(p, "prefect.flow-run.a.b.done")
    assert not interesting(p, "prefect.flow-run..done")
    assert not interesting(p, "prefect.flow-run.x.done.later")


def test_leading_bang_is_literal_for_index_and_coverage() -> None:
    """SEMANTICS 2.7 (derived): `!foo` in `expect` only reaches an event named `!foo`."""
    p = patterns({"!foo"})
    assert interesting(p, "!foo")
    assert not interesting(p, "bar")
    # ...while `expects` applies the 2.4 negation.
    assert p.expects("bar")
    assert not p.expects("foo")


def test_prefix_anchoring_is_masked_by_the_index() -> None:
    """SEMANTICS 2.7: the coverage regex matches `foobar` for `foo`, the index does not."""
    p = patterns({"foo"})
    assert p.covers("foobar")
    assert not p.index_hit("foobar")
    assert not interesting(p, "foobar")


def test_a_prefix_alternative_lets_another_pattern_reach_its_bare_prefix() -> None:
    """Coverage ORs all patterns and matches a prefix: `foo` covers `foo.bar` for `foo.bar*`.

    `foo.bar*` alone does not cover `foo.bar` (its `*` needs a character), but the index hit
    comes from `foo.bar*` (a glob `*` may be empty) and the coverage from `foo`.
    """
    assert not interesting(patterns({"foo.bar*"}), "foo.bar")
    assert interesting(patterns({"foo"}, {"foo.bar*"}), "foo.bar")
    assert interesting(patterns({"foo.bar*", "foo"}), "foo.bar")


def test_each_star_needs_its_own_character() -> None:
    p = patterns({"foo**"})
    assert not interesting(p, "foox")
    assert interesting(p, "fooxy")


def test_regex_metacharacters_are_literal_for_coverage() -> None:
    p = patterns({"a.b+(c)"})
    assert interesting(p, "a.b+(c)")
    assert not interesting(p, "axbb(c)")


def test_coverage_wildcard_does_not_span_a_newline() -> None:
    """Prefect's coverage regex has no DOTALL: `*` and the catch-all stop at a newline."""
    assert not interesting(patterns({"a*"}), "a\nb")
    assert interesting(patterns({"a*"}), "ab\nc")
    assert not patterns().covers("\nname")
    assert patterns().covers("name\n")


# -- index keys (matcher 1) --


def test_index_keys_are_expect_and_after() -> None:
    assert patterns({"a"}, {"b.*"}).index_keys == {"a", "b.*"}


def test_no_expect_indexes_under_the_catch_all_even_with_after() -> None:
    """SEMANTICS 2.7: an empty `expect` means every event, including the `after` ones."""
    p = patterns(set(), {"started"})
    assert p.index_keys == {"*"}
    assert interesting(p, "anything")
    assert interesting(p, "started")
    assert not interesting(p, "")
    assert p.expects("started")
    assert p.starts_after("started")


def test_after_events_are_interesting_but_not_expected() -> None:
    p = patterns({"done"}, {"started"})
    assert interesting(p, "started")
    assert not p.expects("started")
    assert p.starts_after("started")
    assert p.expects("done")
    assert not p.starts_after("done")


# -- per-trigger tests (matcher 3) --


def test_expects_honours_globs_and_negation() -> None:
    p = patterns({"prefect.flow-run.*", "!other"})
    assert p.expects("prefect.flow-run.Completed")
    assert p.expects("anything-but-other")
    assert not p.expects("other")


def test_starts_after_is_false_without_after() -> None:
    assert not patterns({"a"}).starts_after("a")
    assert not patterns().starts_after("")


def test_equality_is_by_expect_and_after() -> None:
    assert patterns({"a"}, {"b"}) == patterns({"a"}, {"b"})
    assert hash(patterns({"a"}, {"b"})) == hash(patterns({"a"}, {"b"}))
    assert patterns({"a"}) != patterns({"b"})


# -- properties --

NAME_ALPHABET = "ab.*?[]1!\n"
NAMES = st.text(alphabet=NAME_ALPHABET, max_size=7)
PATTERN_SETS = st.frozensets(st.text(alphabet=NAME_ALPHABET, max_size=5), max_size=3)


def coverage_reference(expect: frozenset[str], after: frozenset[str], name: str) -> bool:
    """SEMANTICS 2.7 matcher 2, spelt out with Prefect's replace-based construction."""
    if not expect:
        return re.match(".+", name) is not None
    alternatives = [re.escape(p).replace("\\*", ".+") for p in expect | after]
    return re.match("|".join(alternatives), name) is not None


@given(expect=PATTERN_SETS, after=PATTERN_SETS, name=NAMES)
@example(expect=frozenset({"a\\*"}), after=frozenset(), name="a\\b")
def test_covers_agrees_with_the_coverage_regex(
    expect: frozenset[str], after: frozenset[str], name: str
) -> None:
    assert patterns(expect, after).covers(name) is coverage_reference(expect, after, name)


LITERALS = st.text(alphabet="ab.1", max_size=3)
STAR_PATTERNS = st.lists(LITERALS, min_size=1, max_size=4).map("*".join)


@given(pattern=STAR_PATTERNS, name=st.text(alphabet="ab.1", max_size=8))
@example(pattern="a*a", name="aa")
@example(pattern="a*b*c", name="abbc")
def test_one_pattern_must_match_completely_with_nonempty_wildcards(pattern: str, name: str) -> None:
    """SEMANTICS 2.7 "effective semantics": a single pattern behaves as a full match in which
    each `*` stands for one or more characters."""
    full = "".join(".+" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern))
    expected = re.fullmatch(full, name) is not None
    assert interesting(patterns({pattern}), name) is expected


@pytest.mark.parametrize("name", ["a", "foo.bar", "x*y"])
def test_empty_expect_is_interested_in_every_non_empty_name(name: str) -> None:
    assert interesting(patterns(), name)
