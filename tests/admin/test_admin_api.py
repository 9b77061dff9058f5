"""The admin API over a real gRPC server: every RPC, its status codes and its field paths."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from svc.admin.backend import BucketView
from svc.admin.convert import to_document
from svc.admin.generated.triggers.admin.v1 import admin_pb2 as pb
from svc.admin.server import SERVICE_NAME, set_serving
from svc.domain.automations import parse_automation
from tests.admin.documents import LOOPING, NESTED, SIMPLE, document
from tests.admin.support import Admin, field_violations, rpc_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def normalized(doc: dict[str, Any]) -> dict[str, Any]:
    """What the domain makes of a document, without the timestamps the API sets."""
    result = parse_automation(doc).to_json()
    result.pop("created", None)
    result.pop("updated", None)
    return result


def stored_json(stored: pb.StoredAutomation) -> dict[str, Any]:
    result = orjson.loads(stored.json)
    result.pop("created", None)
    result.pop("updated", None)
    return result


def create_json(doc: dict[str, Any]) -> pb.CreateAutomationRequest:
    return pb.CreateAutomationRequest(json=orjson.dumps(doc).decode())


def simple_message(**fields: Any) -> pb.Automation:
    within = duration_pb2.Duration(seconds=30)
    trigger = pb.EventTrigger(
        expect=["prefect.flow-run.Failed"],
        match=pb.ResourceSpecification(
            labels={"prefect.resource.id": pb.Patterns(values=["prefect.flow-run.*"])}
        ),
        posture=pb.POSTURE_REACTIVE,
        threshold=3,
        within=within,
    )
    automation = pb.Automation(
        **{"name": "three failures", **fields}, trigger=pb.Trigger(event=trigger)
    )
    automation.actions.add().update({"type": "do-nothing", "retries": 2})
    return automation


# -- create --


async def test_create_from_message_assigns_ids_and_answers_in_both_shapes(admin: Admin) -> None:
    reply = await admin.stub.CreateAutomation(
        pb.CreateAutomationRequest(automation=simple_message())
    )

    automation = reply.stored.automation
    automation_id = uuid.UUID(automation.id)
    assert uuid.UUID(automation.trigger.event.id)
    assert automation.enabled  # unset means enabled, as in Prefect
    assert automation.HasField("created") and automation.HasField("updated")
    as_json = orjson.loads(reply.stored.json)
    assert as_json["id"] == automation.id
    assert as_json["trigger"]["match"] == {"prefect.resource.id": "prefect.flow-run.*"}
    assert as_json["trigger"]["within"] == 30.0
    assert as_json["actions"] == [{"type": "do-nothing", "retries": 2}]
    assert parse_automation(to_document(automation)) == admin.backend.automations[automation_id]
    assert list(reply.warnings) == []


async def test_create_from_prefect_json_with_nested_composites_round_trips(admin: Admin) -> None:
    reply = await admin.stub.CreateAutomation(create_json(NESTED))

    automation_id = reply.stored.automation.id
    expected = normalized({**NESTED, "id": automation_id})
    assert stored_json(reply.stored) == expected
    # The message says the same as the JSON, string-or-list spellings included.
    assert normalized(to_document(reply.stored.automation)) == expected
    compound = reply.stored.automation.trigger.compound
    assert compound.require_count == 2 and not compound.HasField("within")
    first, sequence = compound.triggers
    assert not first.event.match.labels["prefect.resource.id"].is_list
    assert not first.event.match_related_is_list
    assert sequence.sequence.within.ToTimedelta().total_seconds() == 600.5
    assert sequence.sequence.triggers[0].event.match_related_is_list
    assert sequence.sequence.triggers[1].event.within.seconds == 300
    assert expected["trigger"]["triggers"][0]["match_related"]["prefect.resource.id"] == [
        "prefect.deployment.a",
        "prefect.deployment.b",
    ]


async def test_create_keeps_a_given_id_and_refuses_it_a_second_time(admin: Admin) -> None:
    automation_id = str(uuid.uuid4())
    reply = await admin.stub.CreateAutomation(create_json({**SIMPLE, "id": automation_id}))
    assert reply.stored.automation.id == automation_id

    error = await rpc_error(
        admin.stub.CreateAutomation(
            pb.CreateAutomationRequest(automation=simple_message(id=automation_id))
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert automation_id in error.details()
    assert len(admin.backend.automations) == 1


async def test_create_returns_lint_warnings_and_stores_anyway(admin: Admin) -> None:
    admin.backend.warnings = lambda automation: [f"{automation.name} looks odd"]

    reply = await admin.stub.CreateAutomation(create_json(SIMPLE))

    assert list(reply.warnings) == ["any failure looks odd"]
    assert len(admin.backend.automations) == 1


async def test_create_without_a_source_names_the_oneof(admin: Admin) -> None:
    error = await rpc_error(admin.stub.CreateAutomation(pb.CreateAutomationRequest()))
    assert error.code() == INVALID
    assert field_violations(error) == ["source"]


# -- invalid automations --


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (document(SIMPLE, trigger={**SIMPLE["trigger"], "within": None}), "trigger.within"),
        (document(SIMPLE, trigger={**SIMPLE["trigger"], "within": -1}), "trigger.within"),
        (
            document(SIMPLE, trigger={**SIMPLE["trigger"], "posture": "Proactive", "within": 5}),
            "trigger.within",
        ),
        (document(SIMPLE, trigger={**SIMPLE["trigger"], "posture": "Metric"}), "trigger.posture"),
        (
            document(
                NESTED,
                trigger={**NESTED["trigger"], "triggers": [{"type": "event", "within": None}]},
            ),
            "trigger.triggers.0.within",
        ),
        (document(NESTED, trigger={**NESTED["trigger"], "require": 3}), "trigger.require"),
        (document(SIMPLE, actions=[{"kind": "no type"}]), "actions.0"),
        (document(SIMPLE, trigger=None), "trigger"),
        (document(SIMPLE, surprise=1), "surprise"),
        (document(SIMPLE, id="not-a-uuid"), "id"),
    ],
)
async def test_invalid_json_is_invalid_argument_naming_the_field(
    admin: Admin, doc: dict[str, Any], path: str
) -> None:
    error = await rpc_error(admin.stub.CreateAutomation(create_json(doc)))

    assert error.code() == INVALID
    assert path in field_violations(error)
    assert f"{path}:" in error.details()
    assert admin.backend.automations == {}


async def test_json_that_does_not_parse_is_invalid_argument_naming_json(admin: Admin) -> None:
    error = await rpc_error(admin.stub.CreateAutomation(pb.CreateAutomationRequest(json="{")))
    assert error.code() == INVALID
    assert field_violations(error) == ["json"]


async def test_invalid_message_names_the_document_path(admin: Admin) -> None:
    message = simple_message()
    message.trigger.event.within.seconds = -5
    message.trigger.event.posture = pb.POSTURE_UNSPECIFIED

    error = await rpc_error(
        admin.stub.CreateAutomation(pb.CreateAutomationRequest(automation=message))
    )

    assert error.code() == INVALID
    assert set(field_violations(error)) == {"trigger.within", "trigger.posture"}


async def test_a_trigger_message_of_no_kind_is_named_by_its_path(admin: Admin) -> None:
    compound = pb.CompoundTrigger(
        triggers=[pb.Trigger(), simple_message().trigger],
        require_quantifier=pb.REQUIRE_QUANTIFIER_ALL,
    )
    message = pb.Automation(name="x", trigger=pb.Trigger(compound=compound))

    error = await rpc_error(
        admin.stub.CreateAutomation(pb.CreateAutomationRequest(automation=message))
    )

    assert error.code() == INVALID
    assert field_violations(error) == ["trigger.triggers.0"]


async def test_a_threshold_beyond_int64_is_refused_before_it_is_stored(admin: Admin) -> None:
    doc = document(SIMPLE, trigger={**SIMPLE["trigger"], "threshold": 2**63})

    error = await rpc_error(admin.stub.CreateAutomation(create_json(doc)))

    assert error.code() == INVALID
    assert field_violations(error) == ["trigger.threshold"]
    assert admin.backend.automations == {}


# -- replace --


async def test_replace_creates_then_replaces_keeping_created(admin: Admin) -> None:
    automation_id = str(uuid.uuid4())
    first = await admin.stub.ReplaceAutomation(
        pb.ReplaceAutomationRequest(id=automation_id, json=orjson.dumps(SIMPLE).decode())
    )
    assert first.created
    assert first.stored.automation.id == automation_id

    second = await admin.stub.ReplaceAutomation(
        pb.ReplaceAutomationRequest(id=automation_id, automation=simple_message(name="renamed"))
    )

    assert not second.created
    assert second.stored.automation.name == "renamed"
    assert second.stored.automation.created == first.stored.automation.created
    assert (
        second.stored.automation.updated.ToDatetime()
        >= first.stored.automation.updated.ToDatetime()
    )
    assert admin.backend.automations[uuid.UUID(automation_id)].name == "renamed"


async def test_replace_refuses_a_document_with_another_id(admin: Admin) -> None:
    error = await rpc_error(
        admin.stub.ReplaceAutomation(
            pb.ReplaceAutomationRequest(
                id=str(uuid.uuid4()), automation=simple_message(id=str(uuid.uuid4()))
            )
        )
    )
    assert error.code() == INVALID
    assert field_violations(error) == ["id"]


async def test_replace_needs_an_id(admin: Admin) -> None:
    error = await rpc_error(
        admin.stub.ReplaceAutomation(pb.ReplaceAutomationRequest(automation=simple_message()))
    )
    assert error.code() == INVALID
    assert field_violations(error) == ["id"]


# -- get, delete --


async def test_get_answers_what_create_stored(admin: Admin) -> None:
    created = await admin.stub.CreateAutomation(create_json(NESTED))

    got = await admin.stub.GetAutomation(pb.GetAutomationRequest(id=created.stored.automation.id))

    assert got.stored == created.stored


async def test_get_unknown_is_not_found_and_a_bad_id_invalid(admin: Admin) -> None:
    missing = str(uuid.uuid4())
    error = await rpc_error(admin.stub.GetAutomation(pb.GetAutomationRequest(id=missing)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert missing in error.details()

    error = await rpc_error(admin.stub.GetAutomation(pb.GetAutomationRequest(id="nope")))
    assert error.code() == INVALID
    assert field_violations(error) == ["id"]


async def test_delete_removes_and_then_is_not_found(admin: Admin) -> None:
    created = await admin.stub.CreateAutomation(create_json(SIMPLE))
    automation_id = created.stored.automation.id

    await admin.stub.DeleteAutomation(pb.DeleteAutomationRequest(id=automation_id))

    assert admin.backend.automations == {}
    error = await rpc_error(
        admin.stub.DeleteAutomation(pb.DeleteAutomationRequest(id=automation_id))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await rpc_error(admin.stub.GetAutomation(pb.GetAutomationRequest(id=automation_id)))
    assert error.code() == grpc.StatusCode.NOT_FOUND


# -- list --


def store_directly(admin: Admin, count: int) -> list[str]:
    """Put `count` automations in the backend without the API; their ids, sorted."""
    ids = []
    for _ in range(count):
        automation = parse_automation({**SIMPLE, "id": str(uuid.uuid4())})
        admin.backend.automations[automation.id] = automation
        ids.append(str(automation.id))
    return sorted(ids)


async def list_all(admin: Admin, page_size: int) -> tuple[list[str], int]:
    """Every id, page by page; and how many pages it took."""
    ids: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await admin.stub.ListAutomations(
            pb.ListAutomationsRequest(page_size=page_size, page_token=token)
        )
        pages += 1
        assert len(page.automations) <= page_size
        ids.extend(stored.automation.id for stored in page.automations)
        token = page.next_page_token
        if not token:
            return ids, pages


async def test_list_pages_through_every_automation_in_id_order(admin: Admin) -> None:
    expected = store_directly(admin, 7)

    ids, pages = await list_all(admin, page_size=3)

    assert ids == expected
    assert pages == 3


async def test_list_pages_stay_stable_when_automations_come_and_go(admin: Admin) -> None:
    ids = store_directly(admin, 6)
    first = await admin.stub.ListAutomations(pb.ListAutomationsRequest(page_size=3))
    # Meanwhile: one automation of the first page is deleted, one before the token is added.
    del admin.backend.automations[uuid.UUID(ids[0])]
    early = parse_automation({**SIMPLE, "id": "00000000-0000-4000-8000-000000000000"})
    admin.backend.automations[early.id] = early

    second = await admin.stub.ListAutomations(
        pb.ListAutomationsRequest(page_size=3, page_token=first.next_page_token)
    )

    assert [s.automation.id for s in second.automations] == ids[3:]
    assert second.next_page_token == ""


async def test_list_page_size_bounds(admin: Admin) -> None:
    store_directly(admin, 1001)

    default = await admin.stub.ListAutomations(pb.ListAutomationsRequest())
    assert len(default.automations) == 50
    capped = await admin.stub.ListAutomations(pb.ListAutomationsRequest(page_size=5000))
    assert len(capped.automations) == 1000
    last = await admin.stub.ListAutomations(
        pb.ListAutomationsRequest(page_size=5000, page_token=capped.next_page_token)
    )
    assert len(last.automations) == 1 and last.next_page_token == ""

    error = await rpc_error(admin.stub.ListAutomations(pb.ListAutomationsRequest(page_size=-1)))
    assert error.code() == INVALID
    assert field_violations(error) == ["page_size"]


async def test_list_of_nothing_is_one_empty_page(admin: Admin) -> None:
    page = await admin.stub.ListAutomations(pb.ListAutomationsRequest(page_size=10))
    assert list(page.automations) == [] and page.next_page_token == ""


@pytest.mark.parametrize("token", ["garbage!", "YWZ0ZXI6bm90LWEtdXVpZA==", "e30="])
async def test_list_refuses_a_token_it_did_not_give(admin: Admin, token: str) -> None:
    error = await rpc_error(admin.stub.ListAutomations(pb.ListAutomationsRequest(page_token=token)))
    assert error.code() == INVALID
    assert field_violations(error) == ["page_token"]


# -- enable / disable --


async def test_disable_then_enable_keeps_the_trigger_ids(admin: Admin) -> None:
    created = await admin.stub.CreateAutomation(create_json(NESTED))
    automation_id = created.stored.automation.id

    disabled = await admin.stub.SetAutomationEnabled(
        pb.SetAutomationEnabledRequest(id=automation_id, enabled=False)
    )
    assert not disabled.stored.automation.enabled
    assert not admin.backend.automations[uuid.UUID(automation_id)].enabled

    enabled = await admin.stub.SetAutomationEnabled(
        pb.SetAutomationEnabledRequest(id=automation_id, enabled=True)
    )
    assert enabled.stored.automation.enabled
    assert enabled.stored.automation.trigger == created.stored.automation.trigger
    assert enabled.stored.automation.created == created.stored.automation.created


async def test_enabling_an_automation_the_loop_guard_refuses_is_invalid_argument(
    admin: Admin,
) -> None:
    """SEMANTICS 3.1: the run-deployment loop guard applies only to enabled automations, and
    enabling re-validates the whole automation, as Prefect's PATCH does."""
    created = await admin.stub.CreateAutomation(create_json(LOOPING))
    automation_id = created.stored.automation.id

    error = await rpc_error(
        admin.stub.SetAutomationEnabled(
            pb.SetAutomationEnabledRequest(id=automation_id, enabled=True)
        )
    )

    assert error.code() == INVALID
    assert field_violations(error) == ["actions.0"]
    assert "infinite loop" in error.details()
    assert not admin.backend.automations[uuid.UUID(automation_id)].enabled


async def test_enable_unknown_is_not_found(admin: Admin) -> None:
    error = await rpc_error(
        admin.stub.SetAutomationEnabled(
            pb.SetAutomationEnabledRequest(id=str(uuid.uuid4()), enabled=True)
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


# -- reset state --


async def test_reset_state_of_one_or_of_all(admin: Admin) -> None:
    created = await admin.stub.CreateAutomation(create_json(SIMPLE))
    automation_id = created.stored.automation.id

    await admin.stub.ResetState(pb.ResetStateRequest(automation_id=automation_id))
    await admin.stub.ResetState(pb.ResetStateRequest(all_automations=True))

    assert admin.backend.resets == [uuid.UUID(automation_id), None]


async def test_reset_state_needs_exactly_one_target(admin: Admin) -> None:
    error = await rpc_error(admin.stub.ResetState(pb.ResetStateRequest()))
    assert error.code() == INVALID
    assert field_violations(error) == ["automation_id"]

    error = await rpc_error(
        admin.stub.ResetState(
            pb.ResetStateRequest(automation_id=str(uuid.uuid4()), all_automations=True)
        )
    )
    assert error.code() == INVALID

    error = await rpc_error(
        admin.stub.ResetState(pb.ResetStateRequest(automation_id=str(uuid.uuid4())))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert admin.backend.resets == []


# -- buckets --


async def test_trigger_buckets_show_the_backend_buckets(admin: Admin) -> None:
    created = await admin.stub.CreateAutomation(create_json(NESTED))
    automation = created.stored.automation
    event_trigger = automation.trigger.compound.triggers[0].event
    start = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
    end = datetime(2026, 1, 2, 4, 4, 5, 600_000, tzinfo=UTC)
    admin.backend.buckets[(uuid.UUID(automation.id), uuid.UUID(event_trigger.id))] = [
        BucketView(
            key=("prefect.flow-run.1",),
            start=start,
            end=end,
            count=2,
            last_event_id="e1",
            last_event_name="prefect.flow-run.Failed",
            last_operation="increment_bucket[update]",
        ),
        BucketView(("prefect.flow-run.2",), start, end, -1, None, None, "ensure_bucket[insert]"),
    ]

    reply = await admin.stub.GetTriggerBuckets(
        pb.GetTriggerBucketsRequest(automation_id=automation.id, trigger_id=event_trigger.id)
    )

    first, second = reply.buckets
    assert list(first.bucketing_key) == ["prefect.flow-run.1"]
    assert first.start.ToDatetime(tzinfo=UTC) == start
    assert first.end.ToDatetime(tzinfo=UTC) == end
    assert (first.count, first.last_event_id, first.last_event_name) == (
        2,
        "e1",
        "prefect.flow-run.Failed",
    )
    assert first.last_operation == "increment_bucket[update]"
    assert (second.count, second.last_event_id, second.last_event_name) == (-1, "", "")


async def test_trigger_buckets_of_unknown_or_composite_triggers(admin: Admin) -> None:
    created = await admin.stub.CreateAutomation(create_json(NESTED))
    automation = created.stored.automation

    error = await rpc_error(
        admin.stub.GetTriggerBuckets(
            pb.GetTriggerBucketsRequest(automation_id=automation.id, trigger_id=str(uuid.uuid4()))
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND

    error = await rpc_error(
        admin.stub.GetTriggerBuckets(
            pb.GetTriggerBucketsRequest(
                automation_id=automation.id, trigger_id=automation.trigger.compound.id
            )
        )
    )
    assert error.code() == INVALID
    assert field_violations(error) == ["trigger_id"]


# -- failures of the backend --


async def test_a_backend_failure_is_internal_logged_and_not_leaked(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    admin.backend.failure = RuntimeError("redis password is hunter2")

    with caplog.at_level(logging.ERROR, logger="svc.admin.servicer"):
        error = await rpc_error(admin.stub.CreateAutomation(create_json(SIMPLE)))

    assert error.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in error.details()
    assert "Traceback" not in error.details()
    assert "CreateAutomation" in caplog.text and "hunter2" in caplog.text


async def test_a_backend_lookup_error_is_not_found(admin: Admin) -> None:
    created = await admin.stub.CreateAutomation(create_json(SIMPLE))

    class AutomationNotLoaded(LookupError):
        pass

    async def not_loaded(automation_id: uuid.UUID | None) -> None:
        raise AutomationNotLoaded(f"automation {automation_id} is not loaded")

    admin.backend.reset_state = not_loaded  # type: ignore[method-assign]
    error = await rpc_error(
        admin.stub.ResetState(pb.ResetStateRequest(automation_id=created.stored.automation.id))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "is not loaded" in error.details()


async def test_a_key_error_in_the_backend_is_internal_not_not_found(admin: Admin) -> None:
    admin.backend.failure = KeyError("bug")
    error = await rpc_error(admin.stub.GetAutomation(pb.GetAutomationRequest(id=str(uuid.uuid4()))))
    assert error.code() == grpc.StatusCode.INTERNAL


# -- health and reflection --


async def test_health_is_serving_and_can_be_set_not_serving(admin: Admin) -> None:
    health = health_pb2_grpc.HealthStub(admin.channel)
    for name in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    await set_serving(admin.health, False)  # type: ignore[arg-type]

    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_services_and_describes_the_admin_api(admin: Admin) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(admin.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
    ]

    replies = [reply async for reply in reflection.ServerReflectionInfo(iter(requests))]

    services = {s.name for s in replies[0].list_services_response.service}
    assert SERVICE_NAME == "triggers.admin.v1.AutomationAdminService"
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    assert replies[1].file_descriptor_response.file_descriptor_proto
