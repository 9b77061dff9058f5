"""Starts the gRPC admin server: the admin service, standard health checking, reflection."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from svc.admin.backend import AdminBackend
from svc.admin.generated.triggers.admin.v1 import admin_pb2 as pb
from svc.admin.generated.triggers.admin.v1 import admin_pb2_grpc as pb_grpc
from svc.admin.servicer import AutomationAdminServicer

logger = logging.getLogger(__name__)

# The admin service's full name, `triggers.admin.v1.AutomationAdminService`, which the
# health service also reports on (the empty name stands for the whole server).
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AutomationAdminService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


async def start_admin_server(
    backend: AdminBackend,
    address: str,
    *,
    health_service_name: str = SERVICE_NAME,
) -> tuple[grpc.aio.Server, health_aio.HealthServicer, str]:
    """Serve the admin API on `address` (`host:port`; port 0 picks a free one).

    Returns the started server, its health servicer (SERVING for both the empty name and
    `health_service_name`; change it with `set_serving`) and the address actually bound.
    Stop it with `await server.stop(grace_s)`, after `set_serving(health, False)` so that
    load balancers stop sending calls first.
    """
    # Without SO_REUSEPORT a second server on the same port fails here, loudly, instead of
    # silently sharing the port with the first.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_AutomationAdminServiceServicer_to_server(AutomationAdminServicer(backend), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"the gRPC admin API cannot listen on {address}: {exc}") from exc
    await server.start()
    await set_serving(health, True, service_name=health_service_name)
    host = address.rpartition(":")[0]
    bound = f"{host}:{port}"
    logger.info("gRPC admin API listening on %s", bound)
    return server, health, bound


async def set_serving(
    health: health_aio.HealthServicer, serving: bool, *, service_name: str = SERVICE_NAME
) -> None:
    """Report SERVING or NOT_SERVING for the whole server and for `service_name`."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", service_name):
        await health.set(name, status)
