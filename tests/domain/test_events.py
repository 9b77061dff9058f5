"""Events and resources: decoding, validation and limits (SEMANTICS 2.1, 2.2, 3.8)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from svc.domain.errors import InvalidEvent
from svc.domain.events import (
    DEFAULT_LIMITS,
    EventDocument,
    EventLimits,
    ReceivedEvent,
    decode_event,
    validate_event,
)
from tests.domain.strategies import any_json

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EVENT_ID = "00000000-0000-4000-8000-000000000001"
LEADER_ID = "00000000-0000-4000-8000-000000000002"


def event_doc(**fields: Any) -> dict[str, Any]:
    """A minimal valid event document; `fields` replace or add top-level fields."""
    doc: dict[str, Any] = {
        "occurred": "2026-01-01T11:59:00+00:00",
        "event": "prefect.flow-run.Completed",
        "resource": {"prefect.resource.id": "prefect.flow-run.abc"},
        "id": EVENT_ID,
    }
    doc.update(fields)
    return doc


def decode(doc: Any, limits: EventLimits = DEFAULT_LIMITS) -> ReceivedEvent:
    return decode_event(orjson.dumps(doc), received=NOW, limits=limits)


def rejection(doc: Any, limits: EventLimits = DEFAULT_LIMITS) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        decode(doc, limits)
    return caught.value


def assert_rejected(doc: Any, path: str, *fragments: str, limits: EventLimits = DEFAULT_LIMITS):
    """The event is refused with an error at `path` whose message has every fragment."""
    error = rejection(doc, limits)
    paths = [e.path for e in error.errors]
    assert path in paths, error.errors
    message = next(e.message for e in error.errors if e.path == path)
    for fragment in fragments:
        assert fragment in message, message


def labels(count: int, **extra: str) -> dict[str, str]:
    """A resource of `count` labels, the id label included."""
    resource = {"prefect.resource.id": "prefect.flow-run.abc", **extra}
    for n in range(count - len(resource)):
        resource[f"label-{n}"] = "value"
    assert len(resource) == count
    return resource


def related(role: str = "flow", **extra: str) -> dict[str, str]:
    return {"prefect.resource.id": f"prefect.{role}.1", "prefect.resource.role": role, **extra}


# -- 2.1 resources --


def test_a_minimal_event_decodes_with_its_defaults() -> None:
    """SEMANTICS 2.2: `related` [], `payload` {}, `follows` null by default."""
    event = decode(event_doc())
    assert event.event == "prefect.flow-run.Completed"
    assert event.id == UUID(EVENT_ID)
    assert event.resource_id == "prefect.flow-run.abc"
    assert event.related == []
    assert event.payload == {}
    assert event.follows is None
    assert event.occurred == datetime(2026, 1, 1, 11, 59, tzinfo=UTC)


def test_resource_without_an_id_label_is_refused() -> None:
    """SEMANTICS 2.1: `prefect.resource.id` is required."""
    assert_rejected(
        event_doc(resource={"prefect.resource.name": "x"}), "resource", "prefect.resource.id"
    )


def test_resource_with_an_empty_id_label_is_refused() -> None:
    """SEMANTICS 2.1: `prefect.resource.id` must be non-empty."""
    assert_rejected(event_doc(resource={"prefect.resource.id": ""}), "resource", "non-empty")


@pytest.mark.parametrize("resource", [[], "prefect.flow-run.abc", None, 5])
def test_resource_must_be_an_object(resource: Any) -> None:
    """SEMANTICS 2.1: the root of a resource is an object."""
    assert_rejected(event_doc(resource=resource), "resource")


def test_label_values_may_not_be_null() -> None:
    """SEMANTICS 2.1: a resource is a flat map of string label -> string value."""
    doc = event_doc(resource={"prefect.resource.id": "x", "prefect.resource.name": None})
    assert_rejected(doc, "resource.prefect.resource.name", "string")


def test_label_values_must_be_strings() -> None:
    """SEMANTICS 2.1: values are strings; numbers are not coerced."""
    doc = event_doc(resource={"prefect.resource.id": "x", "count": 3})
    assert_rejected(doc, "resource.count", "string")


def test_related_resource_needs_a_role() -> None:
    """SEMANTICS 2.1: a related resource must carry `prefect.resource.role`."""
    doc = event_doc(related=[{"prefect.resource.id": "prefect.flow.1"}])
    assert_rejected(doc, "related.0", "prefect.resource.role")


def test_related_resource_needs_a_non_empty_role() -> None:
    """SEMANTICS 2.1: the role must be non-empty."""
    doc = event_doc(related=[related(), related(**{"prefect.resource.role": ""})])
    assert_rejected(doc, "related.1", "prefect.resource.role", "non-empty")


def test_related_resource_needs_an_id() -> None:
    """SEMANTICS 2.1: a related resource is a resource, so it needs its id label too."""
    doc = event_doc(related=[{"prefect.resource.role": "flow"}])
    assert_rejected(doc, "related.0", "prefect.resource.id")


def test_resource_at_the_label_limit_is_accepted() -> None:
    """SEMANTICS 2.1: 10 labels (id included) are fine against a limit of 10."""
    event = decode(event_doc(resource=labels(10)), EventLimits(maximum_labels_per_resource=10))
    assert len(event.resource) == 10


def test_resource_over_the_label_limit_is_refused() -> None:
    """SEMANTICS 2.1: Prefect's test builds 11 labels against a limit of 10: rejected."""
    assert_rejected(
        event_doc(resource=labels(11)),
        "resource",
        "at most 10 labels",
        limits=EventLimits(maximum_labels_per_resource=10),
    )


def test_related_resource_over_the_label_limit_is_refused() -> None:
    """SEMANTICS 2.1: the label limit holds for related resources too."""
    crowded = labels(11, **{"prefect.resource.role": "flow"})
    assert_rejected(
        event_doc(related=[crowded]),
        "related.0",
        "at most 10 labels",
        limits=EventLimits(maximum_labels_per_resource=10),
    )


def test_default_label_limit_is_500() -> None:
    """SEMANTICS 2.1: default `maximum_labels_per_resource` is 500."""
    assert decode(event_doc(resource=labels(500)))
    assert_rejected(event_doc(resource=labels(501)), "resource", "at most 500 labels")


# -- 2.2 events --


def test_related_resources_up_to_the_limit_are_accepted() -> None:
    """SEMANTICS 2.2: at most `maximum_related_resources` related resources."""
    doc = event_doc(related=[related(f"r{n}") for n in range(3)])
    assert len(decode(doc, EventLimits(maximum_related_resources=3)).related) == 3


def test_related_resources_over_the_limit_are_refused() -> None:
    """SEMANTICS 2.2: one more than the limit is rejected."""
    doc = event_doc(related=[related(f"r{n}") for n in range(4)])
    assert_rejected(
        doc, "related", "at most 3 related", limits=EventLimits(maximum_related_resources=3)
    )


def test_default_related_limit_is_100() -> None:
    """SEMANTICS 2.2: default `maximum_related_resources` is 100."""
    assert decode(event_doc(related=[related(f"r{n}") for n in range(100)]))
    assert_rejected(event_doc(related=[related(f"r{n}") for n in range(101)]), "related")


def test_event_name_at_the_length_limit_is_accepted() -> None:
    """SEMANTICS 2.2: name length <= `maximum_event_name_length`."""
    event = decode(event_doc(event="e" * 20), EventLimits(maximum_event_name_length=20))
    assert event.event == "e" * 20


def test_event_name_over_the_length_limit_is_refused() -> None:
    """SEMANTICS 2.2: one character over the limit is rejected."""
    assert_rejected(
        event_doc(event="e" * 21),
        "event",
        "at most 20 characters",
        limits=EventLimits(maximum_event_name_length=20),
    )


def test_default_event_name_limit_is_1024() -> None:
    """SEMANTICS 2.2: default `maximum_event_name_length` is 1024."""
    assert decode(event_doc(event="e" * 1024))
    assert_rejected(event_doc(event="e" * 1025), "event", "1024")


def test_body_at_the_size_limit_is_accepted() -> None:
    """SEMANTICS 2.2: events up to `maximum_size_bytes` are accepted."""
    body = orjson.dumps(event_doc())
    assert decode_event(body, received=NOW, limits=EventLimits(maximum_size_bytes=len(body)))


def test_body_over_the_size_limit_is_refused() -> None:
    """SEMANTICS 2.2: a body over `maximum_size_bytes` is refused, naming the limit."""
    body = orjson.dumps(event_doc())
    limits = EventLimits(maximum_size_bytes=len(body) - 1)
    with pytest.raises(InvalidEvent) as caught:
        decode_event(body, received=NOW, limits=limits)
    assert caught.value.errors[0].path == ""
    assert f"over the limit of {len(body) - 1}" in caught.value.errors[0].message


def test_size_limit_counts_bytes_not_characters() -> None:
    """SEMANTICS 2.2: the limit is in bytes of the JSON, so multi-byte text counts more."""
    body = orjson.dumps(event_doc(payload={"text": "é" * 100})).decode()
    limits = EventLimits(maximum_size_bytes=len(body) + 50)
    with pytest.raises(InvalidEvent):
        decode_event(body, received=NOW, limits=limits)


def test_naive_datetimes_are_taken_as_utc() -> None:
    """SEMANTICS 2.2: naive `occurred` and `received` are UTC."""
    event = decode(event_doc(occurred="2026-01-01T10:00:00", received="2026-01-01T10:00:01"))
    assert event.occurred == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert event.occurred.utcoffset() == timedelta(0)
    assert event.received == datetime(2026, 1, 1, 10, 0, 1, tzinfo=UTC)


def test_datetimes_with_an_offset_keep_their_instant_in_utc() -> None:
    """SEMANTICS 2.2: `occurred` is timezone-aware; it is held in UTC."""
    event = decode(event_doc(occurred="2026-01-01T12:00:00+02:00"))
    assert event.occurred == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert event.occurred.utcoffset() == timedelta(0)


def test_datetime_out_of_range_in_utc_is_refused_not_raised() -> None:
    """Decision 2: year 1 at +05:00 is before datetime.min in UTC; it is invalid input,
    not an OverflowError that would stop the consumer."""
    assert_rejected(event_doc(occurred="0001-01-01T00:00:00+05:00"), "occurred", "range")
    assert_rejected(event_doc(received="9999-12-31T23:59:59-05:00"), "received", "range")


def test_unknown_fields_are_ignored() -> None:
    """SEMANTICS 2.2: the server model ignores unknown fields."""
    event = decode(event_doc(surprise={"a": 1}, account="x"))
    assert "surprise" not in event.to_json()
    assert event == decode(event_doc())


def test_received_is_filled_when_absent() -> None:
    """SEMANTICS 2.2: `received` defaults to the server's now (UTC)."""
    assert decode(event_doc()).received == NOW


def test_received_is_kept_when_present() -> None:
    """SEMANTICS 2.2: a `received` in the message is kept."""
    event = decode(event_doc(received="2026-01-01T11:59:30+00:00"))
    assert event.received == datetime(2026, 1, 1, 11, 59, 30, tzinfo=UTC)


def test_explicit_null_received_is_refused() -> None:
    """SEMANTICS 2.2: `received` is a datetime with a default, not nullable (as in Prefect)."""
    assert_rejected(event_doc(received=None), "received", "leave it out")


def test_received_fill_in_is_converted_to_utc() -> None:
    """SEMANTICS 2.2: the default `received` is UTC even if the given now is not."""
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    event = decode_event(orjson.dumps(event_doc()), received=plus_two)
    assert event.received == NOW
    assert event.received is not None and event.received.utcoffset() == timedelta(0)


def test_follows_is_a_uuid() -> None:
    """SEMANTICS 2.2: `follows` is a UUID or null."""
    assert decode(event_doc(follows=LEADER_ID)).follows == UUID(LEADER_ID)
    assert decode(event_doc(follows=None)).follows is None


def test_follows_that_is_not_a_uuid_is_refused() -> None:
    """SEMANTICS 2.2: `follows` must be a UUID."""
    assert_rejected(event_doc(follows="the-previous-one"), "follows", "UUID")


def test_id_must_be_a_uuid() -> None:
    """SEMANTICS 2.2: `id` is a client-supplied UUID."""
    assert_rejected(event_doc(id="event-1"), "id", "UUID")


@pytest.mark.parametrize("field", ["occurred", "event", "resource", "id"])
def test_required_fields_are_required(field: str) -> None:
    """SEMANTICS 2.2: `occurred`, `event`, `resource` and `id` are required."""
    doc = event_doc()
    del doc[field]
    assert_rejected(doc, field, "required")


@pytest.mark.parametrize("payload", [[], [1, 2], "text", 3, None])
def test_payload_must_be_an_object(payload: Any) -> None:
    """SEMANTICS 2.2: `payload` is an object (default {})."""
    assert_rejected(event_doc(payload=payload), "payload", "object")


def test_payload_keeps_any_json_inside() -> None:
    """SEMANTICS 2.2: the payload is open-ended."""
    payload = {"a": [1, 2.5, None, True], "b": {"c": "d"}}
    assert decode(event_doc(payload=payload)).payload == payload


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b"null", b"\xff\xfe", "\ud800"])
def test_a_body_that_is_not_an_event_object_is_refused(body: bytes | str) -> None:
    """Decision 2: undecodable input is an InvalidEvent (dead-lettered), never a crash."""
    with pytest.raises(InvalidEvent) as caught:
        decode_event(body, received=NOW)
    assert caught.value.errors[0].path == ""


def test_error_lists_every_offending_field() -> None:
    """SEMANTICS 2.2: each invalid field is named."""
    error = rejection({"event": 5, "payload": [], "resource": {}, "id": "x"})
    assert {"occurred", "event", "payload", "resource", "id"} <= {e.path for e in error.errors}
    assert "invalid event" in str(error)


def test_validate_event_applies_the_same_rules_to_a_decoded_object() -> None:
    """`validate_event` is `decode_event` without the JSON step."""
    assert validate_event(event_doc(), received=NOW) == decode(event_doc())
    with pytest.raises(InvalidEvent) as caught:
        validate_event(
            event_doc(resource=labels(3)),
            received=NOW,
            limits=EventLimits(maximum_labels_per_resource=2),
        )
    assert caught.value.errors[0].path == "resource"


def test_to_json_follows_the_json_conventions() -> None:
    """SEMANTICS 3.8: UUIDs as strings, datetimes ISO 8601 with offset."""
    event = decode(event_doc(follows=LEADER_ID, occurred="2026-01-01T10:00:00"))
    assert event.to_json() == {
        "occurred": "2026-01-01T10:00:00+00:00",
        "event": "prefect.flow-run.Completed",
        "resource": {"prefect.resource.id": "prefect.flow-run.abc"},
        "related": [],
        "payload": {},
        "id": EVENT_ID,
        "follows": LEADER_ID,
        "received": "2026-01-01T12:00:00+00:00",
    }


def test_find_resource_label_reads_the_first_related_resource_in_a_role() -> None:
    """SEMANTICS 2.3: `related:<role>:<label>` looks at the first resource in that role."""
    event = decode(
        event_doc(related=[related("flow", name="first"), related("flow", name="second")])
    )
    assert event.find_resource_label("related:flow:name") == "first"
    assert event.find_resource_label("prefect.resource.id") == "prefect.flow-run.abc"
    assert event.find_resource_label("missing") is None


# -- property tests --

label_names = st.text(min_size=1, max_size=20)
label_values = st.text(max_size=20)
ids = st.uuids().map(str)
# Whole-minute offsets: the ISO form of an offset with seconds is not a standard one.
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets
)
json_values = any_json()


@st.composite
def resources(draw: st.DrawFn, *, role: bool = False) -> dict[str, str]:
    resource = draw(st.dictionaries(label_names, label_values, max_size=4))
    resource["prefect.resource.id"] = draw(st.text(min_size=1, max_size=20))
    if role:
        resource["prefect.resource.role"] = draw(st.text(min_size=1, max_size=10))
    return resource


event_docs = st.fixed_dictionaries(
    {
        "occurred": aware_datetimes.map(datetime.isoformat),
        "event": st.text(min_size=0, max_size=30),
        "resource": resources(),
        "related": st.lists(resources(role=True), max_size=3),
        "payload": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "id": ids,
        "follows": st.none() | ids,
    },
    optional={"received": aware_datetimes.map(datetime.isoformat)},
)


@given(event_docs)
@example(event_doc(occurred="0002-01-01T00:00:00+23:59", payload={"n": 2**63 - 1}))
def test_event_json_round_trip(doc: dict[str, Any]) -> None:
    """SEMANTICS 3.8: `decode_event(dumps(e.to_json()))` gives the same event."""
    event = decode(doc)
    again = decode_event(orjson.dumps(event.to_json()), received=NOW - timedelta(days=1))
    assert again == event
    assert again.to_json() == event.to_json()
    # the JSON the engine sends its scripts is exactly to_json's
    assert event.json_bytes == orjson.dumps(event.to_json())


garbage_events = st.fixed_dictionaries(
    {},
    optional={
        "occurred": json_values | aware_datetimes.map(datetime.isoformat) | st.text(max_size=30),
        "event": json_values,
        "resource": json_values | resources(),
        "related": json_values | st.lists(json_values | resources(role=True), max_size=3),
        "payload": json_values,
        "id": json_values | ids,
        "follows": json_values | ids,
        "received": json_values | st.datetimes().map(datetime.isoformat),
    },
)


@given(garbage_events | json_values)
@example({"occurred": "0001-01-01T00:00:00+00:01", "event": "x", "id": EVENT_ID})
def test_garbage_documents_raise_only_invalid_event(doc: Any) -> None:
    """Decision 2: bad input is an InvalidEvent (dead-lettered), never another exception."""
    try:
        decode_event(orjson.dumps(doc), received=NOW)
    except InvalidEvent as error:
        assert error.errors
    try:
        validate_event(doc, received=NOW)
    except InvalidEvent as error:
        assert error.errors


@given(st.binary(max_size=200) | st.text(max_size=50))
def test_garbage_bodies_raise_only_invalid_event(body: bytes | str) -> None:
    """Decision 2: any body at all either decodes or is an InvalidEvent."""
    try:
        decode_event(body, received=NOW)
    except InvalidEvent as error:
        assert error.errors


# ---------------------------------------------------------------- the fast path of decode_event


def validated(body: bytes, limits: EventLimits = DEFAULT_LIMITS) -> ReceivedEvent:
    """What full validation (pydantic, no fast path) makes of a body."""
    return EventDocument.model_validate_json(body, context={"limits": limits}).to_event(NOW)


_label = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_uuids = st.uuids().map(str)
_datetimes = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2026-01-01T11:59:00Z",
            "2026-01-01T11:59:00.5+05:30",
            "2026-01-01T11:59:00.123456-08:00",
            "2026-01-01 11:59:00Z",
            "2026-01-01T11:59:00",
            "2026-01-01T11:59:00.1234567Z",
            "2026-13-01T11:59:00Z",
            "0001-01-01T00:00:00+05:00",
            1767268740,
            None,
        ]
    ),
)
_resource = st.dictionaries(_label, st.one_of(_label, _int64), max_size=3).map(
    lambda labels: {"prefect.resource.id": "r", **labels}
)
_plain_or_not = st.fixed_dictionaries(
    {
        "occurred": _datetimes,
        "event": st.one_of(_label, _int64),
        "resource": _resource,
        "id": st.one_of(_uuids, _uuids.map(str.upper), st.just(EVENT_ID.replace("-", ""))),
    },
    optional={
        "related": st.lists(
            _resource.map(lambda r: {"prefect.resource.role": "x", **r}), max_size=2
        ),
        "payload": st.one_of(
            st.dictionaries(
                _label,
                st.one_of(
                    st.integers(),  # wider than 64 bits too
                    st.floats(allow_nan=False, allow_infinity=False),
                    _label,
                    st.lists(st.integers(), max_size=2),
                ),
                max_size=3,
            ),
            st.just([]),
        ),
        "follows": st.one_of(st.none(), _uuids, st.just("not-a-uuid")),
        "received": _datetimes,
        "extra": _int64,
    },
)


@given(_plain_or_not)
@example(event_doc())
@example(event_doc(received=None))
@example(event_doc(occurred="2026-01-01T11:59:00.1234567Z"))
@example(event_doc(resource={"prefect.resource.id": ""}))
def test_decode_event_agrees_with_full_validation(doc: dict[str, Any]) -> None:
    """decode_event's fast path (svc/domain/events.py) builds what validation builds, and
    refuses what validation refuses, with validation's own errors (docs/performance.md)."""
    body = json.dumps(doc).encode()  # orjson cannot write integers wider than 64 bits
    try:
        expected = validated(body)
    except ValidationError:
        with pytest.raises(InvalidEvent):
            decode_event(body, received=NOW)
        return
    event = decode_event(body, received=NOW)
    assert event == expected
    # what the fast path makes itself rather than from the id and `occurred`
    assert event.id_text == expected.id_text == str(expected.id)
    assert event.occurred_us == expected.occurred_us
    assert event.to_json() == expected.to_json()
    assert event.json_bytes == expected.json_bytes
    # exactly the event, whatever its integers (svc/domain/jsonio.py), and orjson's bytes
    # wherever orjson can write it
    assert json.loads(event.json_bytes) == expected.to_json()
    with contextlib.suppress(TypeError):
        assert event.json_bytes == orjson.dumps(expected.to_json())
    assert event.occurred.tzinfo is UTC and event.received.tzinfo is UTC  # type: ignore[union-attr]


def test_decode_event_keeps_limits_on_the_fast_path() -> None:
    """The limits of SEMANTICS 2.1 hold whichever way a body is decoded."""
    tight = EventLimits(maximum_labels_per_resource=2, maximum_related_resources=1,
                        maximum_event_name_length=5)
    for doc in (
        event_doc(event="toolong"),
        event_doc(resource={"prefect.resource.id": "r", "a": "1", "b": "2"}),
        event_doc(related=[{"prefect.resource.id": "r", "prefect.resource.role": "x"}] * 2),
    ):
        with pytest.raises(InvalidEvent):
            decode_event(orjson.dumps(doc), received=NOW, limits=tight)


def test_plain_bodies_take_the_fast_path_and_others_fall_back() -> None:
    """The fast path vouches for plain events only; a body it cannot read as it is (here a
    payload integer beyond 64 bits, which orjson refuses) is validated the usual way."""
    from svc.domain.events import _decode_plain_event

    plain = orjson.dumps(event_doc(follows=LEADER_ID, related=[], payload={"a": [1.5, None]}))
    assert _decode_plain_event(plain, NOW, DEFAULT_LIMITS) == validated(plain)
    huge = plain.replace(b'"a":[1.5,null]', b'"a":123456789012345678901234567890')
    assert _decode_plain_event(huge, NOW, DEFAULT_LIMITS) is None
    assert decode_event(huge, received=NOW).payload == {"a": 123456789012345678901234567890}
    wide_in_a_list = plain.replace(b'"a":[1.5,null]', b'"a":[{"b":-9223372036854775809}]')
    assert _decode_plain_event(wide_in_a_list, NOW, DEFAULT_LIMITS) is None
    assert decode_event(wide_in_a_list, received=NOW).payload == {"a": [{"b": -(2**63) - 1}]}
    not_a_number = plain.replace(b'"a":[1.5,null]', b'"a":NaN')
    assert _decode_plain_event(not_a_number, NOW, DEFAULT_LIMITS) is None
    assert decode_event(not_a_number, received=NOW).payload["a"] != 0
