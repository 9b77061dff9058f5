"""Events and resources in Prefect's JSON shape, with the limits of SEMANTICS section 2."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from svc.domain import jsonio
from svc.domain.errors import FieldValueError, InvalidEvent
from svc.domain.matching import find_resource_label

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch, exactly (the scripts' time unit)."""
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

RESOURCE_ID = "prefect.resource.id"
RESOURCE_NAME = "prefect.resource.name"
RESOURCE_ROLE = "prefect.resource.role"


@dataclass(frozen=True)
class EventLimits:
    """Prefect's `server.events.*` limits (SEMANTICS 2.1, 2.2, 14)."""

    maximum_labels_per_resource: int = 500
    maximum_related_resources: int = 100
    maximum_event_name_length: int = 1024
    maximum_size_bytes: int = 1_500_000


DEFAULT_LIMITS = EventLimits()


def _limits(info: ValidationInfo) -> EventLimits:
    context = info.context or {}
    return context.get("limits", DEFAULT_LIMITS)


def _check_resource(labels: dict[str, str], limits: EventLimits, *, related: bool) -> None:
    if len(labels) > limits.maximum_labels_per_resource:
        raise ValueError(
            f"a resource may have at most {limits.maximum_labels_per_resource} labels "
            f"(the id included), this one has {len(labels)}"
        )
    if not labels.get(RESOURCE_ID):
        raise ValueError(f"a resource needs a non-empty {RESOURCE_ID!r} label")
    if related and not labels.get(RESOURCE_ROLE):
        raise ValueError(f"a related resource needs a non-empty {RESOURCE_ROLE!r} label")


def to_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC, as Prefect's DateTime type does."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00:00+05:00: a ValueError makes it a validation error.
        raise ValueError(f"{value.isoformat()} is out of the range of datetimes in UTC") from None


class EventDocument(BaseModel):
    """Validation of an event document: Prefect's `ReceivedEvent` fields and rules (SEMANTICS
    2.2; unknown fields ignored), with pydantic's errors naming each offending field. What
    passes becomes a `ReceivedEvent` (`to_event`); the engine never holds these."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    occurred: datetime
    event: str
    resource: dict[str, str]
    related: list[dict[str, str]] = Field(default_factory=list)
    payload: dict[str, Any] = Field(default_factory=dict)
    id: UUID
    follows: UUID | None = None
    received: datetime | None = None

    @field_validator("occurred", "received")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else to_utc(value)

    @field_validator("received", mode="before")
    @classmethod
    def _received_not_null(cls, value: Any) -> Any:
        # `None` here only means "not given yet"; Prefect refuses an explicit null (2.2).
        if value is None:
            raise ValueError("`received` must be a datetime; leave it out to have it filled")
        return value

    @field_validator("event")
    @classmethod
    def _name_length(cls, value: str, info: ValidationInfo) -> str:
        limit = _limits(info).maximum_event_name_length
        if len(value) > limit:
            raise ValueError(f"an event name may be at most {limit} characters, got {len(value)}")
        return value

    @field_validator("resource")
    @classmethod
    def _resource(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        _check_resource(value, _limits(info), related=False)
        return value

    @field_validator("related")
    @classmethod
    def _related(cls, value: list[dict[str, str]], info: ValidationInfo) -> list[dict[str, str]]:
        limits = _limits(info)
        if len(value) > limits.maximum_related_resources:
            raise ValueError(
                f"an event may have at most {limits.maximum_related_resources} related "
                f"resources, got {len(value)}"
            )
        for position, labels in enumerate(value):
            try:
                _check_resource(labels, limits, related=True)
            except ValueError as exc:
                raise FieldValueError(str(position), str(exc)) from None
        return value

    def to_event(self, received: datetime) -> ReceivedEvent:
        """The event, `received` filling a `received` the document left out."""
        return ReceivedEvent(
            occurred=self.occurred,
            event=self.event,
            resource=self.resource,
            related=self.related,
            payload=self.payload,
            id=self.id,
            follows=self.follows,
            received=to_utc(received) if self.received is None else self.received,
        )


class ReceivedEvent:
    """An event as the server sees it: Prefect's `ReceivedEvent`, validated (`decode_event`,
    `validate_event`, or `EventDocument.to_event`), its datetimes in UTC.

    A plain class with slots rather than a pydantic model: intake makes one per event, and a
    model's construction, with the cached properties the hot path reads, cost ~5 us of the
    service's CPU time per event (docs/performance.md). Its constructor does not validate.
    It is immutable by contract: never assign to its attributes (`id_text`, `occurred_us`
    and the JSON it caches are made from them)."""

    __slots__ = (
        "occurred", "event", "resource", "related", "payload", "id", "follows", "received",
        "id_text", "occurred_us", "_json",
    )  # fmt: skip

    occurred: datetime
    event: str
    resource: dict[str, str]
    related: list[dict[str, str]]
    payload: dict[str, Any]
    id: UUID
    follows: UUID | None
    received: datetime | None
    # the id as text, made once: the hot path writes it several times per event (seen marks,
    # script arguments, the event's JSON), and a UUID's str() is not free
    id_text: str
    # `occurred` in microseconds since the epoch, made once (the events clock, each
    # trigger's script and each decision read it)
    occurred_us: int

    def __init__(
        self,
        *,
        occurred: datetime,
        event: str,
        resource: dict[str, str],
        id: UUID,
        related: list[dict[str, str]] | None = None,
        payload: dict[str, Any] | None = None,
        follows: UUID | None = None,
        received: datetime | None = None,
        id_text: str | None = None,
    ) -> None:
        self.occurred = occurred
        self.event = event
        self.resource = resource
        self.related = [] if related is None else related
        self.payload = {} if payload is None else payload
        self.id = id
        self.follows = follows
        self.received = received
        self.id_text = str(id) if id_text is None else id_text
        self.occurred_us = to_micros(occurred)
        self._json: bytes | None = None

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.occurred, self.event, self.resource, self.related, self.payload, self.id,
            self.follows, self.received,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReceivedEvent):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable dicts inside, as the model had

    def __repr__(self) -> str:
        return (
            f"ReceivedEvent(id={self.id_text!r}, event={self.event!r}, "
            f"occurred={self.occurred.isoformat()!r}, resource={self.resource!r})"
        )

    # -- helpers used by the engine (SEMANTICS 2.1, 2.3) --

    @property
    def resource_id(self) -> str:
        return self.resource[RESOURCE_ID]

    def find_resource_label(self, label: str) -> str | None:
        return find_resource_label(self.resource, self.related, label)

    @property
    def json_bytes(self) -> bytes:
        """`to_json` serialized, made once: it goes into the scripts of every trigger
        interested in the event and into a parked follower's record. The same bytes as
        `orjson.dumps(self.to_json())`, made faster: orjson writes UUIDs and the UTC
        datetimes of an event as to_json does (property-tested). A payload with an integer
        orjson cannot write is written by Python's json (svc/domain/jsonio.py)."""
        made = self._json
        if made is None:
            made = self._json = jsonio.dumps(
                {
                    "occurred": self.occurred,
                    "event": self.event,
                    "resource": self.resource,
                    "related": self.related,
                    "payload": self.payload,
                    "id": self.id,
                    "follows": self.follows,
                    "received": self.received,
                }
            )
        return made

    def to_json(self) -> dict[str, Any]:
        """The event in Prefect's JSON shape (ISO datetimes, UUIDs as strings)."""
        return {
            "occurred": self.occurred.isoformat(),
            "event": self.event,
            "resource": self.resource,
            "related": self.related,
            "payload": self.payload,
            "id": self.id_text,
            "follows": None if self.follows is None else str(self.follows),
            "received": None if self.received is None else self.received.isoformat(),
        }


def decode_event(
    body: bytes | str, *, received: datetime, limits: EventLimits = DEFAULT_LIMITS
) -> ReceivedEvent:
    """Decode and validate one event message body; `received` fills a missing `received`.

    Raises `InvalidEvent` naming every offending field (the message is then dead-lettered).
    """
    if isinstance(body, str):
        try:
            body = body.encode()
        except UnicodeEncodeError as exc:
            raise InvalidEvent.single("", f"the event is not valid UTF-8 text: {exc}") from None
    size = len(body)
    if size > limits.maximum_size_bytes:
        raise InvalidEvent.single(
            "", f"the event is {size} bytes, over the limit of {limits.maximum_size_bytes}"
        )
    if not body:
        raise InvalidEvent.single("", "the message body is empty")
    fast = _decode_plain_event(body, received, limits)
    if fast is not None:
        return fast
    try:
        document = EventDocument.model_validate_json(body, context={"limits": limits})
    except ValidationError as exc:
        raise InvalidEvent.from_pydantic(exc) from None
    return document.to_event(received)


# The shapes the fast path takes as they are: canonical UUIDs, and ISO 8601 datetimes with
# an offset and at most microseconds. ASCII digits only (`\d` would take any Unicode digit).
_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_ISO_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def _decode_plain_event(
    body: bytes, received: datetime, limits: EventLimits
) -> ReceivedEvent | None:
    """The event of a plain, valid body, decoded without pydantic's validators; None for any
    body this path does not vouch for, which then goes through `ReceivedEvent` validation
    (so every error message, and every lenient parse of an unusual value, stays pydantic's).

    Plain: a JSON object whose fields have exactly the types of `ReceivedEvent`, canonical
    UUID strings and ISO 8601 datetimes with an offset, within the limits. What it builds is
    what validation builds from the same body (tests/domain/test_events.py checks both ways
    agree)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict:
        return None
    name = data.get("event")
    resource = data.get("resource")
    related = data.get("related", [])
    payload = data.get("payload", {})
    if (
        type(name) is not str
        or len(name) > limits.maximum_event_name_length
        or not _plain_resource(resource, limits, related=False)
        or type(related) is not list
        or len(related) > limits.maximum_related_resources
        or not all(_plain_resource(r, limits, related=True) for r in related)
        or type(payload) is not dict
        # orjson reads an integer beyond 64 bits as a float, where validation keeps it exact
        or jsonio.may_hold_a_wide_integer(payload)
    ):
        return None
    id_text = data.get("id")
    event_id = _plain_uuid(id_text)
    occurred = _plain_datetime(data.get("occurred"))
    leader = data.get("follows")
    follows = None if leader is None else _plain_uuid(leader)
    if event_id is None or occurred is None or (leader is not None and follows is None):
        return None
    if "received" in data:
        received_at = _plain_datetime(data["received"])
        if received_at is None:
            return None
    else:
        received_at = to_utc(received)
    return ReceivedEvent(
        occurred=occurred,
        event=name,
        resource=resource,
        related=related,
        payload=payload,
        id=event_id,
        follows=follows,
        received=received_at,
        # a canonical UUID's text, lower-cased, is its str(): no need to make it again
        id_text=id_text.lower(),  # type: ignore[union-attr]
    )


def _plain_resource(labels: Any, limits: EventLimits, *, related: bool) -> bool:
    if type(labels) is not dict or len(labels) > limits.maximum_labels_per_resource:
        return False
    for value in labels.values():  # a loop, not all(): this runs for every resource
        if type(value) is not str:
            return False
    return bool(labels.get(RESOURCE_ID)) and (not related or bool(labels.get(RESOURCE_ROLE)))


def _plain_uuid(value: Any) -> UUID | None:
    if type(value) is not str or not _CANONICAL_UUID.fullmatch(value):
        return None
    return UUID(value)


def _plain_datetime(value: Any) -> datetime | None:
    if type(value) is not str or not _ISO_DATETIME.fullmatch(value):
        return None
    try:
        return to_utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        return None


def validate_event(
    data: dict[str, Any], *, received: datetime, limits: EventLimits = DEFAULT_LIMITS
) -> ReceivedEvent:
    """Validate an already-decoded event object (same rules as `decode_event`)."""
    try:
        document = EventDocument.model_validate(data, context={"limits": limits})
    except ValidationError as exc:
        raise InvalidEvent.from_pydantic(exc) from None
    return document.to_event(received)
