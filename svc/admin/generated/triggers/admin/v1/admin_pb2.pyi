import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Posture(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POSTURE_UNSPECIFIED: _ClassVar[Posture]
    POSTURE_REACTIVE: _ClassVar[Posture]
    POSTURE_PROACTIVE: _ClassVar[Posture]
    POSTURE_METRIC: _ClassVar[Posture]

class RequireQuantifier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUIRE_QUANTIFIER_UNSPECIFIED: _ClassVar[RequireQuantifier]
    REQUIRE_QUANTIFIER_ANY: _ClassVar[RequireQuantifier]
    REQUIRE_QUANTIFIER_ALL: _ClassVar[RequireQuantifier]
POSTURE_UNSPECIFIED: Posture
POSTURE_REACTIVE: Posture
POSTURE_PROACTIVE: Posture
POSTURE_METRIC: Posture
REQUIRE_QUANTIFIER_UNSPECIFIED: RequireQuantifier
REQUIRE_QUANTIFIER_ANY: RequireQuantifier
REQUIRE_QUANTIFIER_ALL: RequireQuantifier

class Automation(_message.Message):
    __slots__ = ("id", "name", "description", "enabled", "tags", "trigger", "actions", "actions_on_trigger", "actions_on_resolve", "owner_resource", "created", "updated")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_ON_TRIGGER_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_ON_RESOLVE_FIELD_NUMBER: _ClassVar[int]
    OWNER_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    enabled: bool
    tags: _containers.RepeatedScalarFieldContainer[str]
    trigger: Trigger
    actions: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    actions_on_trigger: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    actions_on_resolve: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    owner_resource: str
    created: _timestamp_pb2.Timestamp
    updated: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., enabled: _Optional[bool] = ..., tags: _Optional[_Iterable[str]] = ..., trigger: _Optional[_Union[Trigger, _Mapping]] = ..., actions: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., actions_on_trigger: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., actions_on_resolve: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., owner_resource: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Trigger(_message.Message):
    __slots__ = ("event", "compound", "sequence")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    COMPOUND_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    event: EventTrigger
    compound: CompoundTrigger
    sequence: SequenceTrigger
    def __init__(self, event: _Optional[_Union[EventTrigger, _Mapping]] = ..., compound: _Optional[_Union[CompoundTrigger, _Mapping]] = ..., sequence: _Optional[_Union[SequenceTrigger, _Mapping]] = ...) -> None: ...

class EventTrigger(_message.Message):
    __slots__ = ("id", "match", "match_related", "match_related_is_list", "after", "expect", "for_each", "posture", "threshold", "within")
    ID_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    MATCH_RELATED_FIELD_NUMBER: _ClassVar[int]
    MATCH_RELATED_IS_LIST_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    EXPECT_FIELD_NUMBER: _ClassVar[int]
    FOR_EACH_FIELD_NUMBER: _ClassVar[int]
    POSTURE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WITHIN_FIELD_NUMBER: _ClassVar[int]
    id: str
    match: ResourceSpecification
    match_related: _containers.RepeatedCompositeFieldContainer[ResourceSpecification]
    match_related_is_list: bool
    after: _containers.RepeatedScalarFieldContainer[str]
    expect: _containers.RepeatedScalarFieldContainer[str]
    for_each: _containers.RepeatedScalarFieldContainer[str]
    posture: Posture
    threshold: int
    within: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., match: _Optional[_Union[ResourceSpecification, _Mapping]] = ..., match_related: _Optional[_Iterable[_Union[ResourceSpecification, _Mapping]]] = ..., match_related_is_list: _Optional[bool] = ..., after: _Optional[_Iterable[str]] = ..., expect: _Optional[_Iterable[str]] = ..., for_each: _Optional[_Iterable[str]] = ..., posture: _Optional[_Union[Posture, str]] = ..., threshold: _Optional[int] = ..., within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ResourceSpecification(_message.Message):
    __slots__ = ("labels",)
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Patterns
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Patterns, _Mapping]] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.MessageMap[str, Patterns]
    def __init__(self, labels: _Optional[_Mapping[str, Patterns]] = ...) -> None: ...

class Patterns(_message.Message):
    __slots__ = ("values", "is_list")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    IS_LIST_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    is_list: bool
    def __init__(self, values: _Optional[_Iterable[str]] = ..., is_list: _Optional[bool] = ...) -> None: ...

class CompoundTrigger(_message.Message):
    __slots__ = ("id", "triggers", "within", "require_count", "require_quantifier")
    ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    WITHIN_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_QUANTIFIER_FIELD_NUMBER: _ClassVar[int]
    id: str
    triggers: _containers.RepeatedCompositeFieldContainer[Trigger]
    within: _duration_pb2.Duration
    require_count: int
    require_quantifier: RequireQuantifier
    def __init__(self, id: _Optional[str] = ..., triggers: _Optional[_Iterable[_Union[Trigger, _Mapping]]] = ..., within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., require_count: _Optional[int] = ..., require_quantifier: _Optional[_Union[RequireQuantifier, str]] = ...) -> None: ...

class SequenceTrigger(_message.Message):
    __slots__ = ("id", "triggers", "within")
    ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    WITHIN_FIELD_NUMBER: _ClassVar[int]
    id: str
    triggers: _containers.RepeatedCompositeFieldContainer[Trigger]
    within: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., triggers: _Optional[_Iterable[_Union[Trigger, _Mapping]]] = ..., within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class StoredAutomation(_message.Message):
    __slots__ = ("automation", "json")
    AUTOMATION_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    automation: Automation
    json: str
    def __init__(self, automation: _Optional[_Union[Automation, _Mapping]] = ..., json: _Optional[str] = ...) -> None: ...

class CreateAutomationRequest(_message.Message):
    __slots__ = ("automation", "json")
    AUTOMATION_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    automation: Automation
    json: str
    def __init__(self, automation: _Optional[_Union[Automation, _Mapping]] = ..., json: _Optional[str] = ...) -> None: ...

class CreateAutomationResponse(_message.Message):
    __slots__ = ("stored", "warnings")
    STORED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    stored: StoredAutomation
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stored: _Optional[_Union[StoredAutomation, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ReplaceAutomationRequest(_message.Message):
    __slots__ = ("id", "automation", "json")
    ID_FIELD_NUMBER: _ClassVar[int]
    AUTOMATION_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    automation: Automation
    json: str
    def __init__(self, id: _Optional[str] = ..., automation: _Optional[_Union[Automation, _Mapping]] = ..., json: _Optional[str] = ...) -> None: ...

class ReplaceAutomationResponse(_message.Message):
    __slots__ = ("stored", "created", "warnings")
    STORED_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    stored: StoredAutomation
    created: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stored: _Optional[_Union[StoredAutomation, _Mapping]] = ..., created: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class GetAutomationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetAutomationResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: StoredAutomation
    def __init__(self, stored: _Optional[_Union[StoredAutomation, _Mapping]] = ...) -> None: ...

class ListAutomationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAutomationsResponse(_message.Message):
    __slots__ = ("automations", "next_page_token")
    AUTOMATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    automations: _containers.RepeatedCompositeFieldContainer[StoredAutomation]
    next_page_token: str
    def __init__(self, automations: _Optional[_Iterable[_Union[StoredAutomation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteAutomationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteAutomationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetAutomationEnabledRequest(_message.Message):
    __slots__ = ("id", "enabled")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    id: str
    enabled: bool
    def __init__(self, id: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class SetAutomationEnabledResponse(_message.Message):
    __slots__ = ("stored", "warnings")
    STORED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    stored: StoredAutomation
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stored: _Optional[_Union[StoredAutomation, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ResetStateRequest(_message.Message):
    __slots__ = ("automation_id", "all_automations")
    AUTOMATION_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_AUTOMATIONS_FIELD_NUMBER: _ClassVar[int]
    automation_id: str
    all_automations: bool
    def __init__(self, automation_id: _Optional[str] = ..., all_automations: _Optional[bool] = ...) -> None: ...

class ResetStateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTriggerBucketsRequest(_message.Message):
    __slots__ = ("automation_id", "trigger_id")
    AUTOMATION_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_ID_FIELD_NUMBER: _ClassVar[int]
    automation_id: str
    trigger_id: str
    def __init__(self, automation_id: _Optional[str] = ..., trigger_id: _Optional[str] = ...) -> None: ...

class GetTriggerBucketsResponse(_message.Message):
    __slots__ = ("buckets",)
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[Bucket]
    def __init__(self, buckets: _Optional[_Iterable[_Union[Bucket, _Mapping]]] = ...) -> None: ...

class Bucket(_message.Message):
    __slots__ = ("bucketing_key", "start", "end", "count", "last_event_id", "last_event_name", "last_operation")
    BUCKETING_KEY_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_OPERATION_FIELD_NUMBER: _ClassVar[int]
    bucketing_key: _containers.RepeatedScalarFieldContainer[str]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    count: int
    last_event_id: str
    last_event_name: str
    last_operation: str
    def __init__(self, bucketing_key: _Optional[_Iterable[str]] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[int] = ..., last_event_id: _Optional[str] = ..., last_event_name: _Optional[str] = ..., last_operation: _Optional[str] = ...) -> None: ...

class ExplainEventRequest(_message.Message):
    __slots__ = ("automation_id", "event_json")
    AUTOMATION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_JSON_FIELD_NUMBER: _ClassVar[int]
    automation_id: str
    event_json: str
    def __init__(self, automation_id: _Optional[str] = ..., event_json: _Optional[str] = ...) -> None: ...

class ExplainEventResponse(_message.Message):
    __slots__ = ("intake", "intake_reason", "loaded", "triggers", "composites", "event_json", "text")
    INTAKE_FIELD_NUMBER: _ClassVar[int]
    INTAKE_REASON_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    COMPOSITES_FIELD_NUMBER: _ClassVar[int]
    EVENT_JSON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    intake: str
    intake_reason: str
    loaded: bool
    triggers: _containers.RepeatedCompositeFieldContainer[TriggerExplanation]
    composites: _containers.RepeatedCompositeFieldContainer[CompositeExplanation]
    event_json: str
    text: str
    def __init__(self, intake: _Optional[str] = ..., intake_reason: _Optional[str] = ..., loaded: _Optional[bool] = ..., triggers: _Optional[_Iterable[_Union[TriggerExplanation, _Mapping]]] = ..., composites: _Optional[_Iterable[_Union[CompositeExplanation, _Mapping]]] = ..., event_json: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class TriggerExplanation(_message.Message):
    __slots__ = ("trigger_id", "path", "interested", "name_reason", "expected", "starts_after", "expect_pattern", "after_pattern", "resource_failures", "bucketing_key", "bucket", "held_events", "decision", "bucket_after", "firing_ids")
    TRIGGER_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    INTERESTED_FIELD_NUMBER: _ClassVar[int]
    NAME_REASON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    STARTS_AFTER_FIELD_NUMBER: _ClassVar[int]
    EXPECT_PATTERN_FIELD_NUMBER: _ClassVar[int]
    AFTER_PATTERN_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    BUCKETING_KEY_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    HELD_EVENTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_AFTER_FIELD_NUMBER: _ClassVar[int]
    FIRING_IDS_FIELD_NUMBER: _ClassVar[int]
    trigger_id: str
    path: str
    interested: bool
    name_reason: str
    expected: bool
    starts_after: bool
    expect_pattern: str
    after_pattern: str
    resource_failures: _containers.RepeatedScalarFieldContainer[str]
    bucketing_key: _containers.RepeatedScalarFieldContainer[str]
    bucket: Bucket
    held_events: int
    decision: str
    bucket_after: Bucket
    firing_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, trigger_id: _Optional[str] = ..., path: _Optional[str] = ..., interested: _Optional[bool] = ..., name_reason: _Optional[str] = ..., expected: _Optional[bool] = ..., starts_after: _Optional[bool] = ..., expect_pattern: _Optional[str] = ..., after_pattern: _Optional[str] = ..., resource_failures: _Optional[_Iterable[str]] = ..., bucketing_key: _Optional[_Iterable[str]] = ..., bucket: _Optional[_Union[Bucket, _Mapping]] = ..., held_events: _Optional[int] = ..., decision: _Optional[str] = ..., bucket_after: _Optional[_Union[Bucket, _Mapping]] = ..., firing_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CompositeExplanation(_message.Message):
    __slots__ = ("trigger_id", "path", "kind", "expected_firings", "stored", "missing", "decision")
    TRIGGER_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIRINGS_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    trigger_id: str
    path: str
    kind: str
    expected_firings: int
    stored: _containers.RepeatedCompositeFieldContainer[StoredChildFiring]
    missing: _containers.RepeatedScalarFieldContainer[str]
    decision: str
    def __init__(self, trigger_id: _Optional[str] = ..., path: _Optional[str] = ..., kind: _Optional[str] = ..., expected_firings: _Optional[int] = ..., stored: _Optional[_Iterable[_Union[StoredChildFiring, _Mapping]]] = ..., missing: _Optional[_Iterable[str]] = ..., decision: _Optional[str] = ...) -> None: ...

class StoredChildFiring(_message.Message):
    __slots__ = ("trigger_id", "path", "firing_id", "at")
    TRIGGER_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FIRING_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    trigger_id: str
    path: str
    firing_id: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, trigger_id: _Optional[str] = ..., path: _Optional[str] = ..., firing_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
