"""Label-value globs, resource specifications and label lookups (SEMANTICS 2.3-2.6)."""

from __future__ import annotations

import fnmatch
import warnings

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from svc.domain.matching import (
    InvalidResourceSpecification,
    ResourceSpecification,
    covers_resources,
    find_resource_label,
    glob_match,
    literal_prefix,
    match_value,
)

# -- 2.4: one value against one pattern --


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        ("s3://*.csv", "s3://bucket/object.csv"),
        ("*.csv", "file.csv"),
        ("prefect.flow-run.*", "prefect.flow-run.abc"),
        ("foo*", "foo"),
        ("*", ""),
        ("a*z", "a/b.c/z"),
        ("fo?", "foo"),
        ("[fg]oo", "goo"),
        ("[!g]oo", "foo"),
        ("[a-c]", "b"),
        ("[]]", "]"),
        ("[", "["),
        ("a[b", "a[b"),
        ("", ""),
    ],
)
def test_glob_matches_the_whole_value(pattern: str, value: str) -> None:
    """SEMANTICS 2.4: `*` spans any run (empty, `.`, `/` included), `?` one char, classes."""
    assert match_value(pattern, value)


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        ("s3://*.csv", "s3://bucket/object.csv.gz"),
        ("foo", "Foo"),
        ("foo", "foobar"),
        ("foo", "xfoo"),
        ("fo?", "fo"),
        ("fo?", "fooo"),
        ("[!g]oo", "goo"),
        ("[c-a]", "b"),
        ("", "x"),
    ],
)
def test_glob_rejects(pattern: str, value: str) -> None:
    """SEMANTICS 2.4: case-sensitive, anchored at both ends."""
    assert not match_value(pattern, value)


def test_missing_value_never_matches_not_even_a_negated_pattern() -> None:
    """SEMANTICS 2.4 and quirk 16.3."""
    assert not match_value("*", None)
    assert not match_value("!anything", None)
    assert not match_value("!*", None)


def test_leading_bang_negates_the_positive_match() -> None:
    assert match_value("!foo", "bar")
    assert not match_value("!foo", "foo")
    assert not match_value("!*", "")
    # Only one `!` is stripped: the rest is an ordinary glob.
    assert match_value("!!foo", "foo")
    assert not match_value("!!foo", "!foo")


def test_literal_prefix_stops_at_the_first_metacharacter() -> None:
    assert literal_prefix("prefect.flow-run.*") == "prefect.flow-run."
    assert literal_prefix("a?b*") == "a"
    assert literal_prefix("ab[c]") == "ab"
    assert literal_prefix("*") == ""
    assert literal_prefix("exact") == "exact"


def test_pathological_pattern_is_fast() -> None:
    """Atomic groups keep many stars from backtracking on a long non-matching value."""
    assert not glob_match("*a*a*a*a*a*a*a*a*a*a*b", "a" * 5_000)


# -- 2.4 against Python's fnmatch.fnmatchcase, the independent reference --

GLOB_ALPHABET = "*?[]!.-/a b^\\z"


def fnmatch_reference(pattern: str, value: str) -> bool:
    with warnings.catch_warnings():
        # fnmatch builds regexes that Python warns about (`[[`, set operations).
        warnings.simplefilter("ignore")
        return fnmatch.fnmatchcase(value, pattern)


GLOBS = st.text(alphabet=GLOB_ALPHABET, max_size=10)
POSITIVE_GLOBS = GLOBS.filter(lambda pattern: not pattern.startswith("!"))
VALUES = st.text(alphabet=GLOB_ALPHABET, max_size=8)


@given(pattern=POSITIVE_GLOBS, value=VALUES)
@example(pattern="[b-a!]", value="z")  # fnmatch drops the empty range, then reads `[!]`
@example(pattern="[b-a!c]", value="z")
@example(pattern="[b-a!-z]", value="-")
@example(pattern="[b-a!-!]", value="-")
@example(pattern="[b-a!-!]", value="!")
@example(pattern="[z-a]", value="z")
@example(pattern="[!z-a]", value="q")
@example(pattern="[a--]", value="-")
@example(pattern="[!]", value="!")
@example(pattern="[!]]", value="a")
@example(pattern="[]-a]", value="^")
@example(pattern="[a-]", value="-")
@example(pattern="[^a]", value="^")
@example(pattern="[\\]", value="\\")
@example(pattern="a*b*a", value="aba")
def test_match_value_agrees_with_fnmatchcase(pattern: str, value: str) -> None:
    assert match_value(pattern, value) == fnmatch_reference(pattern, value)


@given(pattern=GLOBS, value=VALUES)
@example(pattern="[b-a!]", value="z")
@example(pattern="*", value="")
@example(pattern="!a", value="!a")
def test_negated_match_value_agrees_with_fnmatchcase(pattern: str, value: str) -> None:
    assert match_value("!" + pattern, value) == (not fnmatch_reference(pattern, value))


@given(pattern=GLOBS, value=VALUES)
def test_every_match_starts_with_the_literal_prefix(pattern: str, value: str) -> None:
    """The index relies on this: a name matched by a glob starts with its literal prefix."""
    prefix = literal_prefix(pattern)
    for candidate in (value, prefix + value):
        if glob_match(pattern, candidate):
            assert candidate.startswith(prefix)


@given(pattern=GLOBS, value=VALUES)
def test_glob_match_agrees_with_fnmatchcase_even_with_a_leading_bang(
    pattern: str, value: str
) -> None:
    """`glob_match` is the positive rule alone: a leading `!` is an ordinary character."""
    assert glob_match(pattern, value) == fnmatch_reference(pattern, value)


# -- 2.5: resource specifications --


def spec(obj: dict) -> ResourceSpecification:
    return ResourceSpecification.from_json(obj)


def test_negation_inside_a_list_is_ored_with_the_other_values() -> None:
    """SEMANTICS 2.5 quirk: this-value / !that-value / other-value rejects only that-value."""
    s = spec({"some-label": ["this-value", "!that-value", "other-value"]})
    assert s.matches({"some-label": "this-value"})
    assert s.matches({"some-label": "other-value"})
    assert s.matches({"some-label": "anything else"})
    assert not s.matches({"some-label": "that-value"})


@pytest.mark.parametrize("value", ["yes", "woohoo!", "!nah", "is it? nah"])
def test_negated_prefix_glob_accepts_other_values(value: str) -> None:
    """SEMANTICS 2.5: `["!nah*"]` accepts values that do not start with `nah`."""
    assert spec({"hello": ["!nah*"]}).matches({"hello": value})


@pytest.mark.parametrize("value", ["nah", "nah, chief", "nah, pal"])
def test_negated_prefix_glob_rejects_matching_values(value: str) -> None:
    assert not spec({"hello": ["!nah*"]}).matches({"hello": value})


def test_negated_pattern_rejects_a_missing_label() -> None:
    """SEMANTICS 2.5: a label absent from the resource fails, negation or not."""
    assert not spec({"hello": ["!nah*"]}).matches({"other": "yes"})


def test_two_negations_accept_every_present_value() -> None:
    s = spec({"x": ["!a", "!b"]})
    assert s.matches({"x": "a"})
    assert s.matches({"x": "b"})
    assert not s.matches({})


def test_labels_are_anded_and_values_ored() -> None:
    s = spec({"a": "1", "b": ["2", "3"]})
    assert s.matches({"a": "1", "b": "3", "c": "x"})
    assert not s.matches({"a": "1", "b": "4"})
    assert not s.matches({"b": "2"})


def test_empty_list_is_never_satisfied() -> None:
    assert not spec({"x": []}).matches({"x": ""})
    assert not spec({"x": []}).matches({"x": "anything"})


def test_empty_string_matches_only_an_empty_value() -> None:
    s = spec({"x": ""})
    assert s.matches({"x": ""})
    assert not s.matches({"x": "a"})
    assert not s.matches({})


def test_empty_spec_includes_even_an_empty_list() -> None:
    """SEMANTICS 2.5: `{}` is satisfied by anything, no resource at all included."""
    assert spec({}).includes([])
    assert spec({}).includes([{"prefect.resource.id": "a"}])
    assert spec({}).is_empty


def test_non_empty_spec_never_includes_an_empty_list() -> None:
    assert not spec({"x": "*"}).includes([])
    assert not spec({"x": "*"}).is_empty


def test_includes_when_any_resource_matches() -> None:
    s = spec({"prefect.resource.id": "b"})
    assert s.includes([{"prefect.resource.id": "a"}, {"prefect.resource.id": "b"}])
    assert not s.includes([{"prefect.resource.id": "a"}])


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({}, True),
        ({"prefect.resource.id": "prefect.flow-run.*"}, True),
        ({"prefect.resource.id": ["x", "prefect.flow-run.*"]}, True),
        ({"prefect.resource.id": "prefect.flow-run.123"}, False),
        ({"prefect.resource.id": "prefect.flow-run*"}, False),
        ({"prefect.resource.id": "prefect.flow-run.*", "other": "x"}, False),
        ({"prefect.resource.name": "prefect.flow-run.*"}, False),
    ],
)
def test_matches_every_resource_of_kind(obj: dict, expected: bool) -> None:
    """SEMANTICS 2.5, last bullet (used by the run-deployment loop guard, 3.1)."""
    assert spec(obj).matches_every_resource_of_kind("prefect.flow-run") is expected


def test_to_json_keeps_strings_lists_and_label_order() -> None:
    obj = {"b": "x", "a": ["y"], "c": []}
    s = spec(obj)
    assert s.to_json() == obj
    assert list(s.to_json()) == ["b", "a", "c"]
    assert isinstance(s.to_json()["b"], str)
    assert s.patterns("b") == ("x",)
    assert s.patterns("missing") == ()


def test_to_json_returns_a_copy() -> None:
    s = spec({"a": ["y"]})
    s.to_json()["a"].append("z")
    assert s.to_json() == {"a": ["y"]}


def test_specs_are_equal_by_json_form() -> None:
    assert spec({"a": "x", "b": ["y"]}) == spec({"b": ["y"], "a": "x"})
    assert hash(spec({"a": "x", "b": ["y"]})) == hash(spec({"b": ["y"], "a": "x"}))
    assert spec({"a": "x"}) != spec({"a": ["x"]})
    assert spec({"a": "x"}) != {"a": "x"}


@pytest.mark.parametrize(
    "obj",
    [
        ["not", "a", "mapping"],
        "a string",
        {1: "x"},
        {"a": 1},
        {"a": None},
        {"a": ["x", 2]},
        {"a": ("x",)},
        {"a": {"b": "c"}},
    ],
)
def test_from_json_rejects_malformed_input(obj: object) -> None:
    with pytest.raises(InvalidResourceSpecification):
        ResourceSpecification.from_json(obj)


def test_from_json_errors_are_type_and_value_errors_that_name_the_label() -> None:
    with pytest.raises(TypeError, match="'a'"):
        ResourceSpecification.from_json({"a": 1})
    with pytest.raises(ValueError, match="list of strings"):
        ResourceSpecification.from_json({"a": [1]})


LABELS = st.sampled_from(["a", "b", "c"])
PATTERNS = st.text(alphabet="ab*!?", max_size=3)
SPEC_VALUES = st.one_of(PATTERNS, st.lists(PATTERNS, max_size=3))
SPECS = st.dictionaries(LABELS, SPEC_VALUES, max_size=3)
RESOURCES = st.dictionaries(LABELS, st.text(alphabet="ab!", max_size=3), max_size=3)


@given(obj=SPECS)
def test_json_round_trip(obj: dict) -> None:
    s = spec(obj)
    assert s.to_json() == obj
    assert spec(s.to_json()) == s


@given(obj=SPECS, resource=RESOURCES)
def test_matches_is_and_across_labels_or_within_a_label(obj: dict, resource: dict) -> None:
    def patterns(value: str | list[str]) -> list[str]:
        return [value] if isinstance(value, str) else value

    expected = all(
        any(match_value(p, resource.get(label)) for p in patterns(value))
        for label, value in obj.items()
    )
    assert spec(obj).matches(resource) is expected


@given(obj=SPECS, resources=st.lists(RESOURCES, max_size=3))
def test_includes_is_empty_or_any(obj: dict, resources: list[dict]) -> None:
    s = spec(obj)
    assert s.includes(resources) is (not obj or any(s.matches(r) for r in resources))


# -- 2.3: label lookups --

PRIMARY = {"prefect.resource.id": "primary", "name": "prime"}


def related(role: str, **labels: str) -> dict[str, str]:
    return {"prefect.resource.id": f"{role}-id", "prefect.resource.role": role, **labels}


def test_plain_label_is_read_from_the_primary_resource() -> None:
    assert find_resource_label(PRIMARY, [related("flow", name="x")], "name") == "prime"
    assert find_resource_label(PRIMARY, [], "missing") is None


def test_related_label_reads_the_first_resource_in_the_role() -> None:
    rel = [related("tag", name="one"), related("flow", name="f"), related("tag", name="two")]
    assert find_resource_label(PRIMARY, rel, "related:tag:name") == "one"
    assert find_resource_label(PRIMARY, rel, "related:flow:name") == "f"


def test_related_label_stops_at_the_first_resource_in_the_role_even_without_the_label() -> None:
    """SEMANTICS 2.3: later resources of the same role are not consulted."""
    rel = [related("tag"), related("tag", name="two")]
    assert find_resource_label(PRIMARY, rel, "related:tag:name") is None


def test_roles_may_contain_colons() -> None:
    """SEMANTICS 2.3: the role is everything between the first and the last colon."""
    rel = [related("a:b:c", name="deep")]
    assert find_resource_label(PRIMARY, rel, "related:a:b:c:name") == "deep"


def test_related_label_without_that_role_falls_back_to_a_primary_label_of_that_name() -> None:
    """SEMANTICS 2.3: a primary label literally named `related:psychout:name`."""
    primary = {**PRIMARY, "related:psychout:name": "literal"}
    rel = [related("flow", name="f")]
    assert find_resource_label(primary, rel, "related:psychout:name") == "literal"
    assert find_resource_label(PRIMARY, rel, "related:psychout:name") is None


def test_other_directives_are_primary_labels() -> None:
    primary = {**PRIMARY, "prefect.resource.role:x": "r", "unrelated:flow:name": "u"}
    rel = [related("flow", name="f")]
    assert find_resource_label(primary, rel, "unrelated:flow:name") == "u"
    assert find_resource_label(primary, rel, "prefect.resource.role:x") == "r"


# -- 2.6: resource coverage --

MEALS = [
    {"prefect.resource.id": "lily", "prefect.resource.role": "meal", "genus": "Hemerocallis"},
    {"prefect.resource.id": "tulip", "prefect.resource.role": "meal", "genus": "Tulipa"},
    {"prefect.resource.id": "cup", "prefect.resource.role": "vessel", "genus": "Narcissus"},
]
CATERPILLAR = {"prefect.resource.id": "caterpillar"}


def meal(genus: str) -> ResourceSpecification:
    return spec({"prefect.resource.role": "meal", "genus": genus})


def test_related_spec_is_satisfied_by_one_resource_among_others() -> None:
    assert covers_resources(spec({}), [meal("Hemerocallis")], CATERPILLAR, MEALS)


def test_every_related_spec_must_be_satisfied() -> None:
    """SEMANTICS 2.6: Hemerocallis and Tulipa meals are both present; Narcissus is no meal."""
    assert covers_resources(spec({}), [meal("Hemerocallis"), meal("Tulipa")], CATERPILLAR, MEALS)
    assert not covers_resources(
        spec({}), [meal("Hemerocallis"), meal("Narcissus")], CATERPILLAR, MEALS
    )


def test_one_related_resource_may_satisfy_several_specs() -> None:
    specs = [meal("Hemerocallis"), spec({"prefect.resource.id": "lily"})]
    assert covers_resources(spec({}), specs, CATERPILLAR, MEALS[:1])


def test_match_looks_only_at_the_primary_resource() -> None:
    assert covers_resources(spec({"prefect.resource.id": "cater*"}), [], CATERPILLAR, MEALS)
    assert not covers_resources(spec({"prefect.resource.id": "lily"}), [], CATERPILLAR, MEALS)


def test_empty_related_spec_accepts_an_event_without_related_resources() -> None:
    assert covers_resources(spec({}), [spec({})], CATERPILLAR, [])
    assert not covers_resources(spec({}), [meal("Tulipa")], CATERPILLAR, [])
