"""The gRPC admin servicer: requests in, domain validation, the backend, responses out.

Every handler raises typed exceptions and one wrapper turns them into status codes, so no
handler calls `context.abort` itself:
- a `DomainValidationError` (an invalid automation or request field) -> INVALID_ARGUMENT,
  naming each offending field in the message and in a `google.rpc.BadRequest` detail;
- `AutomationNotFound`, or a backend's `LookupError` -> NOT_FOUND;
- `AutomationAlreadyExists` -> ALREADY_EXISTS;
- anything else -> INTERNAL, logged with its traceback here and never sent to the client.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import grpc
import orjson
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from svc.admin.backend import AdminBackend
from svc.admin.convert import (
    bucket_message,
    explanation_message,
    stored_automation,
    to_document,
)
from svc.admin.generated.triggers.admin.v1 import admin_pb2 as pb
from svc.admin.generated.triggers.admin.v1 import admin_pb2_grpc as pb_grpc
from svc.domain import jsonio
from svc.domain.automations import (
    Automation,
    CompoundTrigger,
    SequenceTrigger,
    parse_automation,
)
from svc.domain.errors import DomainValidationError, FieldError, InvalidAutomation, InvalidEvent
from svc.domain.events import ReceivedEvent, validate_event

logger = logging.getLogger(__name__)

# ListAutomations page sizes (AIP-158): 0 asks for the default, larger ones are capped.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# Marks page tokens of this format, so a token of another format is refused, not misread.
PAGE_TOKEN_PREFIX = "after:"

# Status messages and trailers travel in HTTP/2 headers, which clients cap (8 KiB by
# default), and field paths and messages can quote user input of any length: report at
# most this many problems, each clipped, and clip the whole message.
MAX_REPORTED_ERRORS = 8
MAX_PATH_BYTES = 128
MAX_ERROR_MESSAGE_BYTES = 256
MAX_STATUS_MESSAGE_BYTES = 1024
# The trailer in which gRPC's richer error model carries a serialized `google.rpc.Status`.
STATUS_DETAILS_KEY = "grpc-status-details-bin"

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


class InvalidRequest(DomainValidationError):
    """A request field (not the automation itself) is missing or malformed."""

    what = "request"


class AutomationNotFound(LookupError):
    """No automation (or no trigger of it) has the id the request names."""


class AutomationAlreadyExists(Exception):
    """CreateAutomation was given the id of an automation that exists."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _rpc(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Turns the exceptions of one handler into gRPC status codes (see the module doc)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except DomainValidationError as exc:
            await _abort_invalid(context, exc)
        except AutomationAlreadyExists as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, _clip(str(exc)))
        except LookupError as exc:
            if isinstance(exc, KeyError | IndexError):
                # A bug, not an answer: KeyError and IndexError are never "not found" here.
                await _abort_internal(context, handler.__name__)
            await context.abort(grpc.StatusCode.NOT_FOUND, _clip(str(exc)))
        except Exception:
            await _abort_internal(context, handler.__name__)
        raise RuntimeError("context.abort returned instead of raising")

    return wrapper


async def _abort_internal(context: grpc.aio.ServicerContext, rpc_name: str) -> None:
    logger.exception("admin RPC %s failed", rpc_name)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"{rpc_name} failed on an internal error; the service log has the details",
    )


async def _abort_invalid(context: grpc.aio.ServicerContext, exc: DomainValidationError) -> None:
    errors = [
        FieldError(_clip(e.path, MAX_PATH_BYTES), _clip(e.message, MAX_ERROR_MESSAGE_BYTES))
        for e in exc.errors[:MAX_REPORTED_ERRORS]
    ]
    message = f"invalid {exc.what}: " + "; ".join(str(e) for e in errors)
    if len(exc.errors) > len(errors):
        message += f"; and {len(exc.errors) - len(errors)} more"
    message = _clip(message, MAX_STATUS_MESSAGE_BYTES)
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=e.path, description=e.message)
            for e in errors
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
        trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
    )


def _clip(text: str, max_bytes: int = MAX_STATUS_MESSAGE_BYTES) -> str:
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - 3].decode(errors="ignore") + "..."


def _uuid(value: str, field: str) -> UUID:
    if not value:
        raise InvalidRequest.single(field, "required: the UUID of an automation or trigger")
    try:
        return UUID(value)
    except ValueError:
        raise InvalidRequest.single(field, f"not a UUID: {value!r}") from None


def _source_document(request: pb.CreateAutomationRequest | pb.ReplaceAutomationRequest) -> Any:
    """The automation document of a request, from its message or from its JSON."""
    source = request.WhichOneof("source")
    if source == "automation":
        return to_document(request.automation)
    if source == "json":
        try:
            return orjson.loads(request.json)
        except orjson.JSONDecodeError as exc:
            raise InvalidAutomation.single("json", f"not valid JSON: {exc}") from None
    raise InvalidRequest.single(
        "source", "set `automation` (a message) or `json` (a JSON document)"
    )


def _page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(f"{PAGE_TOKEN_PREFIX}{last_id}".encode()).decode()


def _after_id(page_token: str) -> str:
    """The id after which the page of `page_token` starts ("" for the first page)."""
    if not page_token:
        return ""
    try:
        decoded = base64.urlsafe_b64decode(page_token.encode()).decode()
        if decoded.startswith(PAGE_TOKEN_PREFIX):
            return str(UUID(decoded.removeprefix(PAGE_TOKEN_PREFIX)))
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise InvalidRequest.single(
        "page_token", "not a token this API gave out; pass the previous page's next_page_token"
    )


class AutomationAdminServicer(pb_grpc.AutomationAdminServiceServicer):
    """The AutomationAdminService of proto/triggers/admin/v1/admin.proto over a backend."""

    def __init__(self, backend: AdminBackend, *, now: Callable[[], datetime] = _utc_now):
        self._backend = backend
        # Stamps `created` and `updated`; passed in so tests can fix the time.
        self._now = now

    def _stamped(self, document: Any, *, created: datetime | None) -> Any:
        """The document with `created` (kept, or now) and `updated` (now) set by us."""
        if not isinstance(document, dict):
            return document  # the domain refuses it, naming the root
        now = self._now()
        return {**document, "created": created or now, "updated": now}

    async def _store(self, automation: Automation) -> tuple[pb.StoredAutomation, list[str]]:
        """Store a validated automation: the reply's copy of it, and lint warnings about it.

        The reply is built first: a value the domain accepts but a message cannot carry is
        refused before anything is stored.
        """
        stored = stored_automation(automation)
        warnings = self._backend.lint(automation)
        await self._backend.put(automation)
        return stored, warnings

    async def _existing(self, automation_id: UUID) -> Automation:
        automation = await self._backend.get(automation_id)
        if automation is None:
            raise AutomationNotFound(f"no automation has the id {automation_id}")
        return automation

    @_rpc
    async def CreateAutomation(
        self, request: pb.CreateAutomationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateAutomationResponse:
        document = _source_document(request)
        if isinstance(document, dict) and document.get("id") in (None, ""):
            document = {**document, "id": str(uuid.uuid4())}
        automation = parse_automation(self._stamped(document, created=None))
        if await self._backend.get(automation.id) is not None:
            raise AutomationAlreadyExists(
                f"automation {automation.id} exists; use ReplaceAutomation to change it, or "
                "leave the id out to have a new one assigned"
            )
        stored, warnings = await self._store(automation)
        return pb.CreateAutomationResponse(stored=stored, warnings=warnings)

    @_rpc
    async def ReplaceAutomation(
        self, request: pb.ReplaceAutomationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplaceAutomationResponse:
        automation_id = _uuid(request.id, "id")
        document = _source_document(request)
        if isinstance(document, dict):
            given = document.get("id")
            if given in (None, ""):
                document = {**document, "id": str(automation_id)}
            elif _same_uuid(given, automation_id) is False:
                raise InvalidAutomation.single(
                    "id",
                    f"{given!r} differs from the request's id {automation_id}; "
                    "leave it out or make the two equal",
                )
        existing = await self._backend.get(automation_id)
        created = None if existing is None else existing.created
        automation = parse_automation(self._stamped(document, created=created))
        stored, warnings = await self._store(automation)
        return pb.ReplaceAutomationResponse(
            stored=stored, created=existing is None, warnings=warnings
        )

    @_rpc
    async def GetAutomation(
        self, request: pb.GetAutomationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAutomationResponse:
        automation = await self._existing(_uuid(request.id, "id"))
        return pb.GetAutomationResponse(stored=stored_automation(automation))

    @_rpc
    async def ListAutomations(
        self, request: pb.ListAutomationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAutomationsResponse:
        if request.page_size < 0:
            raise InvalidRequest.single("page_size", "must not be negative (0 means 50)")
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _after_id(request.page_token)
        remaining = sorted(
            (a for a in await self._backend.list() if str(a.id) > after),
            key=lambda a: str(a.id),
        )
        page = remaining[:page_size]
        more = len(remaining) > page_size
        return pb.ListAutomationsResponse(
            automations=[stored_automation(a) for a in page],
            next_page_token=_page_token(str(page[-1].id)) if more else "",
        )

    @_rpc
    async def DeleteAutomation(
        self, request: pb.DeleteAutomationRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteAutomationResponse:
        automation_id = _uuid(request.id, "id")
        if not await self._backend.delete(automation_id):
            raise AutomationNotFound(f"no automation has the id {automation_id}")
        return pb.DeleteAutomationResponse()

    @_rpc
    async def SetAutomationEnabled(
        self, request: pb.SetAutomationEnabledRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetAutomationEnabledResponse:
        existing = await self._existing(_uuid(request.id, "id"))
        # Like Prefect's PATCH: merge into the stored automation and validate the whole again
        # (enabling can trip the run-deployment loop guard). Trigger ids, so state, are kept.
        document = {**existing.to_json(), "enabled": request.enabled}
        automation = parse_automation(self._stamped(document, created=existing.created))
        stored, warnings = await self._store(automation)
        return pb.SetAutomationEnabledResponse(stored=stored, warnings=warnings)

    @_rpc
    async def ResetState(
        self, request: pb.ResetStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetStateResponse:
        if request.automation_id and request.all_automations:
            raise InvalidRequest.single(
                "all_automations", "set either automation_id or all_automations, not both"
            )
        if request.all_automations:
            await self._backend.reset_state(None)
            return pb.ResetStateResponse()
        if not request.automation_id:
            raise InvalidRequest.single(
                "automation_id",
                "required: the automation whose state to reset (or all_automations=true)",
            )
        automation = await self._existing(_uuid(request.automation_id, "automation_id"))
        await self._backend.reset_state(automation.id)
        return pb.ResetStateResponse()

    @_rpc
    async def GetTriggerBuckets(
        self, request: pb.GetTriggerBucketsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTriggerBucketsResponse:
        automation = await self._existing(_uuid(request.automation_id, "automation_id"))
        trigger_id = _uuid(request.trigger_id, "trigger_id")
        trigger = automation.trigger_by_id(trigger_id)
        if trigger is None:
            raise AutomationNotFound(f"automation {automation.id} has no trigger {trigger_id}")
        if isinstance(trigger, CompoundTrigger | SequenceTrigger):
            raise InvalidRequest.single(
                "trigger_id",
                f"trigger {trigger_id} is a {trigger.type} trigger; only event triggers have "
                "buckets",
            )
        buckets = await self._backend.trigger_buckets(automation.id, trigger_id)
        return pb.GetTriggerBucketsResponse(buckets=[bucket_message(b) for b in buckets])

    @_rpc
    async def ExplainEvent(
        self, request: pb.ExplainEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExplainEventResponse:
        automation = await self._existing(_uuid(request.automation_id, "automation_id"))
        event = self._event(request.event_json)
        return explanation_message(await self._backend.explain(automation, event))

    def _event(self, text: str) -> ReceivedEvent:
        """The event to explain; a missing id is fresh and a missing `occurred` is now, as
        `python -m svc events publish` fills them. Errors name `event_json.<field>`."""
        try:
            document = jsonio.loads(text)  # any integer of the payload, exactly
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent.single("event_json", f"not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidEvent.single("event_json", "must be a JSON object (one event)")
        now = self._now()
        document = {"id": str(uuid.uuid4()), "occurred": now.isoformat(), **document}
        try:
            return validate_event(document, received=now)
        except InvalidEvent as exc:
            raise InvalidEvent(
                [FieldError(f"event_json.{e.path}".rstrip("."), e.message) for e in exc.errors]
            ) from None


def _same_uuid(given: Any, automation_id: UUID) -> bool | None:
    """Whether `given` spells `automation_id`; None when it is no UUID (the domain says so)."""
    try:
        return UUID(str(given)) == automation_id
    except ValueError:
        return None


__all__: Sequence[str] = (
    "AutomationAdminServicer",
    "AutomationAlreadyExists",
    "AutomationNotFound",
    "InvalidRequest",
)
