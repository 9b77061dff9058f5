"""Malformed input over the wire is INVALID_ARGUMENT, never INTERNAL (Hypothesis).

The oracle is the domain: the server answers OK exactly when `parse_automation` accepts what
it was sent (with the id and timestamps the server fills in), INVALID_ARGUMENT naming at least
one field otherwise, and nothing else, whatever the input.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import orjson
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from svc.admin.convert import to_document
from svc.admin.generated.triggers.admin.v1 import admin_pb2 as pb
from svc.domain.automations import parse_automation
from svc.domain.errors import InvalidAutomation
from tests.admin.documents import LOOPING, NESTED, SIMPLE, document
from tests.admin.strategies import (
    automation_documents,
    automation_messages,
    json_values,
    mutated,
    texts,
)
from tests.admin.support import Admin, field_violations

# The server is started once per test function and shared by its examples, which is safe:
# each example empties the backend first.
wire_settings = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

prefect_documents = st.sampled_from(
    [document(SIMPLE), document(NESTED), document(LOOPING, enabled=True)]
)
malformed_documents = st.one_of(
    json_values,  # mostly not an object at all
    st.dictionaries(texts, json_values, max_size=4),
    mutated(prefect_documents),
    mutated(automation_documents()),
)


def accepted_by_domain(doc: Any) -> bool:
    """What the server's CreateAutomation makes of a document, decided locally."""
    if isinstance(doc, dict):
        now = datetime.now(UTC)
        doc = {**doc, "created": now, "updated": now}
        if doc.get("id") in (None, ""):
            doc["id"] = str(uuid.uuid4())
    try:
        parse_automation(doc)
    except InvalidAutomation:
        return False
    return True


async def assert_judged_like_the_domain(
    admin: Admin, request: pb.CreateAutomationRequest, accepted: bool
) -> None:
    admin.backend.automations.clear()
    event("accepted" if accepted else "refused")
    try:
        await admin.stub.CreateAutomation(request)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert not accepted, error.details()
        assert field_violations(error) or error.details().startswith("invalid")
        return
    assert accepted


@given(doc=malformed_documents)
@example(doc=[])
@example(doc={"trigger": None})
@example(doc={"trigger": {"type": ["event"]}})
@example(doc=document(SIMPLE, trigger={"type": "compound", "triggers": "x", "require": 1}))
@example(doc=document(SIMPLE, trigger={**SIMPLE["trigger"], "threshold": 2**64 - 1}))
@example(doc=document(SIMPLE, created="yesterday", id=""))
@wire_settings
async def test_malformed_json_documents_are_invalid_argument(admin: Admin, doc: Any) -> None:
    request = pb.CreateAutomationRequest(json=orjson.dumps(doc).decode())
    trigger = doc.get("trigger") if isinstance(doc, dict) else None
    threshold = trigger.get("threshold") if isinstance(trigger, dict) else None
    fits_int64 = not isinstance(threshold, int) or -(2**63) <= threshold < 2**63
    accepted = accepted_by_domain(doc) and fits_int64
    await assert_judged_like_the_domain(admin, request, accepted)


@given(text=texts)
@example(text="")
@example(text="{'single': 'quotes'}")
@example(text="[1, 2,]")
@wire_settings
async def test_text_that_is_not_json_is_invalid_argument(admin: Admin, text: str) -> None:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        request = pb.CreateAutomationRequest(json=text)
        await assert_judged_like_the_domain(admin, request, accepted=False)


@given(message=automation_messages())
@wire_settings
async def test_random_field_values_in_a_message_are_judged_by_the_domain(
    admin: Admin, message: pb.Automation
) -> None:
    request = pb.CreateAutomationRequest(automation=message)
    await assert_judged_like_the_domain(admin, request, accepted_by_domain(to_document(message)))
