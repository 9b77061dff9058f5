"""Automations and their triggers in the JSON shape Prefect's REST API takes (SEMANTICS 3).

The trigger's questions (`covers`, `expects`, `starts_after`, `bucketing_key`,
`meets_threshold`) are pure methods: no clock, no store, as in Prefect's schema module.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, Union
from uuid import UUID, uuid5

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from svc.domain.errors import FieldValueError, InvalidAutomation
from svc.domain.events import ReceivedEvent, to_utc
from svc.domain.matching import ResourceSpecification, covers_resources
from svc.domain.names import EventNamePatterns

# Proactive triggers need at least this window; a missing or zero one is set to it (3.3).
PROACTIVE_MINIMUM_WITHIN = timedelta(seconds=10)

# Expect patterns through which every deployment's flow runs pass (the loop guard of 3.1).
FLOW_RUN_LOOP_EVENTS = frozenset(
    {
        "prefect.flow-run.Scheduled",
        "prefect.flow-run.Pending",
        "prefect.flow-run.Running",
        "prefect.flow-run.*",
    }
)

# Action types become a token of the NATS subject `actions.<type>.<automation id>`.
ACTION_TYPE = re.compile(r"^[A-Za-z0-9_-]+$")

_timedelta = TypeAdapter(timedelta)
_int = TypeAdapter(int)


class Posture(StrEnum):
    Reactive = "Reactive"
    Proactive = "Proactive"
    Metric = "Metric"


class TriggerState(StrEnum):
    Triggered = "Triggered"
    Resolved = "Resolved"


def seconds(value: timedelta) -> float:
    return value.total_seconds()


def micros(value: timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


# The empty `after`, `expect` or `for_each` of every trigger that leaves it empty.
NO_NAMES: frozenset[str] = frozenset()


def _share_fields_set(model: BaseModel) -> None:
    """Replace the set of the fields a model's input gave (pydantic keeps one per instance,
    ~700 bytes) with one shared by every model that was given the same fields. Safe for
    frozen models: pydantic only adds to the set on assignment, which they refuse, and a
    model_copy copies it first (docs/performance.md, memory)."""
    object.__setattr__(
        model, "__pydantic_fields_set__", _fields_set(frozenset(model.__pydantic_fields_set__))
    )


@functools.lru_cache(maxsize=1024)
def _fields_set(fields: frozenset[str]) -> set[str]:
    return set(fields)


def _spec(value: Any) -> ResourceSpecification:
    if isinstance(value, ResourceSpecification):
        return value
    if not isinstance(value, dict):
        raise ValueError("a resource specification must be an object of label -> pattern(s)")
    try:
        return ResourceSpecification.from_json(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


class _TriggerBase(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, arbitrary_types_allowed=True)

    id: UUID | None = None

    def all_triggers(self) -> Iterator[Trigger]:
        """This trigger followed by a depth-first flattening of its children (3.2)."""
        yield self  # type: ignore[misc]


class EventTrigger(_TriggerBase):
    """Fires on the presence (Reactive) or absence (Proactive) of events (3.3)."""

    type: Literal["event"] = "event"
    match: ResourceSpecification = Field(default_factory=lambda: _spec({}))
    match_related: ResourceSpecification | list[ResourceSpecification] = Field(
        default_factory=lambda: _spec({})
    )
    after: frozenset[str] = frozenset()
    expect: frozenset[str] = frozenset()
    for_each: frozenset[str] = frozenset()
    posture: Literal[Posture.Reactive, Posture.Proactive]
    threshold: int = 1
    within: timedelta = timedelta(0)

    def model_post_init(self, context: Any) -> None:
        _share_fields_set(self)

    # What the trigger's questions use, derived once from the fields. Cached properties, not
    # pydantic private attributes: those are read through BaseModel.__getattr__, a slow path
    # for values read for every candidate trigger of every event (docs/performance.md).

    @functools.cached_property
    def patterns(self) -> EventNamePatterns:
        return EventNamePatterns(expect=self.expect, after=self.after)

    @functools.cached_property
    def related_specs(self) -> tuple[ResourceSpecification, ...]:
        related = self.match_related
        return tuple(related) if isinstance(related, list) else (related,)

    @functools.cached_property
    def sorted_for_each(self) -> tuple[str, ...]:
        return tuple(sorted(self.for_each))

    @functools.cached_property
    def immediate(self) -> bool:
        return self.posture == Posture.Reactive and self.within == timedelta(0)

    @functools.cached_property
    def holds_events(self) -> bool:
        """Proactive triggers with `after` hold their expected events (6.2)."""
        return self.posture == Posture.Proactive and bool(self.after)

    @field_validator("after", "expect", "for_each")
    @classmethod
    def _shared_when_empty(cls, value: frozenset[str]) -> frozenset[str]:
        # most triggers leave some of these empty: one empty set serves them all
        return value or NO_NAMES

    @model_validator(mode="before")
    @classmethod
    def _prevalidate_within(cls, data: Any) -> Any:
        # SEMANTICS 3.3: runs on the raw input, before the field validators.
        if not isinstance(data, dict):
            return data
        if "within" in data and data["within"] is None:
            raise FieldValueError("within", "`within` should be a valid timedelta")
        within = data.get("within")
        if within is not None and not isinstance(within, timedelta):
            try:
                within = _timedelta.validate_python(within)
            except ValidationError:
                return data  # the field validator reports the unparsable value
            data = {**data, "within": within}
        if data.get("posture") == Posture.Proactive:
            if not within:
                data = {**data, "within": PROACTIVE_MINIMUM_WITHIN}
            elif within < PROACTIVE_MINIMUM_WITHIN:
                raise FieldValueError(
                    "within",
                    "`within` for Proactive triggers must be greater than or equal to 10 seconds",
                )
        return data

    @field_validator("posture", mode="before")
    @classmethod
    def _refuse_metric(cls, value: Any) -> Any:
        if value == Posture.Metric:
            raise ValueError("the Metric posture is not supported; use Reactive or Proactive")
        return value

    @field_validator("within")
    @classmethod
    def _non_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("`within` must not be negative")
        return value

    @field_validator("match", mode="before")
    @classmethod
    def _coerce_match(cls, value: Any) -> ResourceSpecification:
        return _spec(value)

    @field_validator("match_related", mode="before")
    @classmethod
    def _coerce_match_related(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return _spec(value)
        specs = []
        for position, item in enumerate(value):
            try:
                specs.append(_spec(item))
            except ValueError as exc:
                raise FieldValueError(str(position), str(exc)) from None
        return specs

    # -- the trigger's questions (SEMANTICS 2.6, 2.7, 3.3) --

    def covers(self, event: ReceivedEvent) -> bool:
        return self.patterns.covers(event.event) and covers_resources(
            self.match, self.related_specs, event.resource, event.related
        )

    def expects(self, name: str) -> bool:
        return self.patterns.expects(name)

    def starts_after(self, name: str) -> bool:
        return self.patterns.starts_after(name)

    def bucketing_key(self, event: ReceivedEvent) -> tuple[str, ...]:
        find = event.find_resource_label
        return tuple(find(label) or "" for label in self.sorted_for_each)

    def triggering_labels(self, key: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(self.sorted_for_each, key, strict=True))

    def meets_threshold(self, count: int) -> bool:
        if self.posture == Posture.Reactive:
            return count >= self.threshold
        return count < self.threshold

    def to_json(self) -> dict[str, Any]:
        related = self.match_related
        return {
            "type": "event",
            "id": str(self.id),
            "match": self.match.to_json(),
            "match_related": (
                [spec.to_json() for spec in related]
                if isinstance(related, list)
                else related.to_json()
            ),
            "after": sorted(self.after),
            "expect": sorted(self.expect),
            "for_each": sorted(self.for_each),
            "posture": str(self.posture),
            "threshold": self.threshold,
            "within": seconds(self.within),
        }


class _CompositeBase(_TriggerBase):
    triggers: list[Trigger]
    within: timedelta | None

    def all_triggers(self) -> Iterator[Trigger]:
        yield self  # type: ignore[misc]
        for child in self.triggers:
            yield from child.all_triggers()

    @property
    def child_trigger_ids(self) -> list[UUID]:
        return [child.id for child in self.triggers]  # type: ignore[misc]

    @property
    def num_expected_firings(self) -> int:
        return len(self.triggers)

    def _base_json(self) -> dict[str, Any]:
        return {
            "type": self.type,  # type: ignore[attr-defined]
            "id": str(self.id),
            "triggers": [child.to_json() for child in self.triggers],
            "within": None if self.within is None else seconds(self.within),
        }


class CompoundTrigger(_CompositeBase):
    """Fires when `require` of its children have fired (within `within`) (3.4)."""

    type: Literal["compound"] = "compound"
    require: int | Literal["any", "all"]

    @field_validator("require", mode="before")
    @classmethod
    def _int_any_or_all(cls, value: Any) -> Any:
        # One clear error, instead of one per member of the union under made-up paths.
        if value in ("any", "all"):
            return value
        try:
            return _int.validate_python(value)
        except ValidationError:
            raise ValueError(f"require must be an integer, 'any' or 'all', got {value!r}") from None

    @model_validator(mode="after")
    def _require_bounds(self) -> CompoundTrigger:
        if isinstance(self.require, int):
            if self.require < 1:
                raise FieldValueError("require", "require must be at least 1")
            if self.require > len(self.triggers):
                raise FieldValueError(
                    "require", "require must be less than or equal to the number of triggers"
                )
        return self

    @property
    def num_expected_firings(self) -> int:
        if self.require == "any":
            return 1
        if self.require == "all":
            return len(self.triggers)
        return int(self.require)

    def to_json(self) -> dict[str, Any]:
        return {**self._base_json(), "require": self.require}


class SequenceTrigger(_CompositeBase):
    """Fires when all its children have fired, in declaration order (3.4, Decision 1)."""

    type: Literal["sequence"] = "sequence"

    def to_json(self) -> dict[str, Any]:
        return self._base_json()


def _trigger_tag(value: Any) -> str:
    kind = value.get("type", "event") if isinstance(value, dict) else getattr(value, "type", None)
    return f"<{kind}>"


Trigger = Annotated[
    Union[  # noqa: UP007 - tagged members need the Union spelling
        Annotated[EventTrigger, Tag("<event>")],
        Annotated[CompoundTrigger, Tag("<compound>")],
        Annotated[SequenceTrigger, Tag("<sequence>")],
    ],
    Discriminator(
        _trigger_tag,
        custom_error_type="trigger_type",
        custom_error_message="`type` must be one of 'event', 'compound' or 'sequence'",
    ),
]
CompositeTrigger = CompoundTrigger | SequenceTrigger

for _model in (CompoundTrigger, SequenceTrigger):
    _model.model_rebuild()


class Automation(BaseModel):
    """An automation: a trigger and the actions to take when it fires (3.1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: UUID
    name: str
    description: str = ""
    enabled: bool = True
    tags: list[str] = Field(default_factory=list)
    trigger: Trigger
    actions: list[dict[str, Any]]
    actions_on_trigger: list[dict[str, Any]] = Field(default_factory=list)
    actions_on_resolve: list[dict[str, Any]] = Field(default_factory=list)
    owner_resource: str | None = None
    created: datetime | None = None
    updated: datetime | None = None

    # None for the usual tree of one event trigger: nothing to look up (memory, with many)
    _parents: dict[UUID, UUID] | None = PrivateAttr()
    _by_id: dict[UUID, Trigger] | None = PrivateAttr()

    @functools.cached_property
    def id_text(self) -> str:
        """The id as text, made once: intake writes it for every event that matches."""
        return str(self.id)

    @model_validator(mode="before")
    @classmethod
    def _assign_trigger_ids(cls, data: Any) -> Any:
        # Decision 6: ids given are kept; missing ones are derived from the automation id and
        # the trigger's position, so reloading the same document keeps the same ids.
        if isinstance(data, dict) and isinstance(data.get("trigger"), dict):
            try:
                automation_id = UUID(str(data.get("id")))
            except ValueError:
                return data  # the id field reports it
            data = {**data, "trigger": _with_ids(data["trigger"], automation_id, "trigger")}
        return data

    @field_validator("created", "updated")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else to_utc(value)

    @field_validator("actions", "actions_on_trigger", "actions_on_resolve")
    @classmethod
    def _actions_have_types(cls, actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for position, action in enumerate(actions):
            kind = action.get("type")
            if not isinstance(kind, str) or not ACTION_TYPE.match(kind):
                raise FieldValueError(
                    str(position),
                    f"action {position} needs a `type` made of letters, digits, '-' or '_' "
                    f"(it names the NATS subject actions.<type>.<automation id>), got {kind!r}",
                )
        return actions

    @model_validator(mode="after")
    def _unique_trigger_ids(self) -> Automation:
        # Runtime state is keyed by trigger id, so two triggers may not share one.
        first_path: dict[UUID, str] = {}
        for path, trigger in _trigger_paths(self.trigger, "trigger"):
            if trigger.id in first_path:
                raise FieldValueError(
                    f"{path}.id",
                    f"trigger id {trigger.id} is already used by {first_path[trigger.id]}; "
                    "give each trigger its own id, or leave it out to have one assigned",
                )
            first_path[trigger.id] = path  # type: ignore[index]
        return self

    @model_validator(mode="after")
    def _prevent_run_deployment_loops(self) -> Automation:
        _check_run_deployment_loop(self)
        return self

    def model_post_init(self, context: Any) -> None:
        _share_fields_set(self)
        if isinstance(self.trigger, EventTrigger):
            self._parents = self._by_id = None
            return
        parents: dict[UUID, UUID] = {}
        by_id: dict[UUID, Trigger] = {}
        stack: list[tuple[Trigger, UUID]] = [(self.trigger, self.id)]
        while stack:
            trigger, parent = stack.pop()
            parents[trigger.id] = parent  # type: ignore[index]
            by_id[trigger.id] = trigger  # type: ignore[index]
            if isinstance(trigger, CompoundTrigger | SequenceTrigger):
                stack.extend((child, trigger.id) for child in trigger.triggers)  # type: ignore[misc]
        self._parents = parents
        self._by_id = by_id

    # -- navigation (3.2) --

    def all_triggers(self) -> list[Trigger]:
        return list(self.trigger.all_triggers())

    def event_triggers(self) -> list[EventTrigger]:
        return [t for t in self.trigger.all_triggers() if isinstance(t, EventTrigger)]

    def trigger_by_id(self, trigger_id: UUID) -> Trigger | None:
        if self._by_id is None:
            return self.trigger if self.trigger.id == trigger_id else None
        return self._by_id.get(trigger_id)

    def parent_of(self, trigger_id: UUID) -> CompoundTrigger | SequenceTrigger | None:
        """The composite containing a trigger, or None when its parent is the automation."""
        if self._parents is None:
            return None
        parent = self._parents.get(trigger_id)
        found = self._by_id.get(parent) if parent is not None else None
        return found if isinstance(found, CompoundTrigger | SequenceTrigger) else None

    def trigger_fingerprint(self) -> str:
        """A digest of the whole trigger tree: any change of any trigger changes it (Decision 6)."""
        canonical = orjson.dumps(self.trigger.to_json(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "description": self.description,
            "enabled": self.enabled,
            "tags": list(self.tags),
            "trigger": self.trigger.to_json(),
            "actions": list(self.actions),
            "actions_on_trigger": list(self.actions_on_trigger),
            "actions_on_resolve": list(self.actions_on_resolve),
        }
        if self.owner_resource is not None:
            document["owner_resource"] = self.owner_resource
        if self.created is not None:
            document["created"] = self.created.isoformat()
        if self.updated is not None:
            document["updated"] = self.updated.isoformat()
        return document


def _with_ids(trigger: dict[str, Any], automation_id: UUID, path: str) -> dict[str, Any]:
    trigger = dict(trigger)
    if trigger.get("id") is None:
        trigger["id"] = str(uuid5(automation_id, path))
    children = trigger.get("triggers")
    if isinstance(children, list):
        trigger["triggers"] = [
            _with_ids(child, automation_id, f"{path}.{i}") if isinstance(child, dict) else child
            for i, child in enumerate(children)
        ]
    return trigger


def _trigger_paths(trigger: Trigger, path: str) -> Iterator[tuple[str, Trigger]]:
    """Each trigger of the tree with its field path, depth first in declaration order."""
    yield path, trigger
    if isinstance(trigger, CompoundTrigger | SequenceTrigger):
        for position, child in enumerate(trigger.triggers):
            yield from _trigger_paths(child, f"{path}.triggers.{position}")


def _check_run_deployment_loop(automation: Automation) -> None:
    """SEMANTICS 3.1, the run-deployment loop guard."""
    trigger = automation.trigger
    if not automation.enabled or not isinstance(trigger, EventTrigger):
        return
    if trigger.posture != Posture.Reactive:
        return
    if not any(pattern.startswith("prefect.flow-run.") for pattern in trigger.expect):
        return
    if not FLOW_RUN_LOOP_EVENTS & trigger.expect:
        return
    for position, action in enumerate(automation.actions):
        if action.get("type") != "run-deployment":
            continue
        source = action.get("source", "selected")
        if source == "inferred":
            raise FieldValueError(
                f"actions.{position}",
                "Running an inferred deployment from a flow run state change event will lead "
                "to an infinite loop of flow runs. Choose a specific deployment and add "
                "filtering labels to the trigger's match or match_related.",
            )
        unfiltered = trigger.match.matches_every_resource_of_kind("prefect.flow-run") and any(
            spec.matches_every_resource_of_kind("prefect.flow-run")
            for spec in trigger.related_specs
        )
        if source == "selected" and unfiltered:
            raise FieldValueError(
                f"actions.{position}",
                "Running a selected deployment from a flow run state change event may "
                "lead to an infinite loop of flow runs. Include filtering labels on "
                "match or match_related that exclude the selected deployment's flow runs.",
            )


def parse_automation(document: Any) -> Automation:
    """Validate an automation document (Prefect's REST shape plus `id`).

    Raises `InvalidAutomation` naming every offending field path.
    """
    try:
        return Automation.model_validate(document)
    except ValidationError as exc:
        raise InvalidAutomation.from_pydantic(exc) from None


def parse_automation_json(data: bytes | str) -> Automation:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidAutomation.single("", f"not valid JSON: {exc}") from None
    return parse_automation(document)
