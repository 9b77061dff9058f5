"""Helpers of the admin API tests: the in-memory backend, the client bundle, error probes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from svc.admin.backend import BucketView
from svc.admin.generated.triggers.admin.v1 import admin_pb2_grpc as pb_grpc
from svc.domain.automations import Automation


def _no_warnings(automation: Automation) -> list[str]:
    return []


@dataclass
class InMemoryBackend:
    """Automations in a dict, buckets set by the test, every reset recorded."""

    automations: dict[UUID, Automation] = field(default_factory=dict)
    buckets: dict[tuple[UUID, UUID], list[BucketView]] = field(default_factory=dict)
    resets: list[UUID | None] = field(default_factory=list)
    # What `lint` answers; replaced by tests of warnings.
    warnings: Callable[[Automation], list[str]] = field(default_factory=lambda: _no_warnings)
    # Set to make every call fail with this exception, as a broken store would.
    failure: Exception | None = None

    def _fail(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def put(self, automation: Automation) -> None:
        self._fail()
        self.automations[automation.id] = automation

    async def get(self, automation_id: UUID) -> Automation | None:
        self._fail()
        return self.automations.get(automation_id)

    async def list(self) -> list[Automation]:
        self._fail()
        # Newest first: the API must sort, not rely on the store's order.
        return list(reversed(self.automations.values()))

    async def delete(self, automation_id: UUID) -> bool:
        self._fail()
        self.buckets = {k: v for k, v in self.buckets.items() if k[0] != automation_id}
        return self.automations.pop(automation_id, None) is not None

    async def reset_state(self, automation_id: UUID | None) -> None:
        self._fail()
        self.resets.append(automation_id)

    async def trigger_buckets(self, automation_id: UUID, trigger_id: UUID) -> list[BucketView]:
        self._fail()
        return self.buckets.get((automation_id, trigger_id), [])

    def lint(self, automation: Automation) -> list[str]:
        return self.warnings(automation)


@dataclass
class Admin:
    """A client of the running admin server, with what the tests look at behind it."""

    stub: pb_grpc.AutomationAdminServiceStub
    channel: grpc.aio.Channel
    backend: InMemoryBackend
    health: object


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The field paths of the google.rpc.BadRequest detail in the error's trailers."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            assert status.code == error.code().value[0]
            for detail in status.details:
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request):
                    return [v.field for v in bad_request.field_violations]
    return []
