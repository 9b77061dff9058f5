"""Starts the gRPC admin server: the admin service, standard health checking, reflection."""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from svc.admin.backend import AdminBackend
from svc.admin.generated.triggers.admin.v1 import admin_pb2 as pb
from svc.admin.generated.triggers.admin.v1 import admin_pb2_grpc as pb_grpc
from svc.admin.security import AdminSecurity, AuthInterceptor
from svc.admin.servicer import AutomationAdminServicer

logger = logging.getLogger(__name__)

# The admin service's full name, `triggers.admin.v1.AutomationAdminService`, which the
# health service also reports on (the empty name stands for the whole server).
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AutomationAdminService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Health name that stays SERVING while the process answers at all, whatever its dependencies
# do: for liveness probes, which must not restart a replica because Redis is down (readiness,
# the empty name, says NOT_SERVING then).
LIVENESS_SERVICE_NAME = "liveness"


class ServerGroup:
    """The admin server and a plaintext, health-only one beside it: stopped together."""

    def __init__(self, server: grpc.aio.Server, health_server: grpc.aio.Server,
                 health_address: str):
        self.server = server
        self.health_server = health_server
        self.health_address = health_address

    async def stop(self, grace: float | None) -> None:
        await asyncio.gather(self.server.stop(grace), self.health_server.stop(grace))


async def start_admin_server(
    backend: AdminBackend,
    address: str,
    *,
    health_service_name: str = SERVICE_NAME,
    security: AdminSecurity | None = None,
    health_address: str | None = None,
) -> tuple[grpc.aio.Server | ServerGroup, health_aio.HealthServicer, str]:
    """Serve the admin API on `address` (`host:port`; port 0 picks a free one).

    Returns the started server, its health servicer (SERVING for both the empty name and
    `health_service_name`; change it with `set_serving`) and the address actually bound.
    Stop it with `await server.stop(grace_s)`, after `set_serving(health, False)` so that
    load balancers stop sending calls first.

    `security` adds TLS and requires a token or client certificate on every call but health
    checks. `health_address` serves the health service alone, in plaintext, on a port of
    its own, for probes that speak neither TLS nor tokens (the kubelet's gRPC probe); the
    server returned is then a ServerGroup, which stops both.
    """
    security = security or AdminSecurity()
    interceptors = [AuthInterceptor(security)] if security.requires_authentication else []
    # Without SO_REUSEPORT a second server on the same port fails here, loudly, instead of
    # silently sharing the port with the first.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)], interceptors=interceptors)
    pb_grpc.add_AutomationAdminServiceServicer_to_server(AutomationAdminServicer(backend), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        if security.tls:
            port = server.add_secure_port(address, security.server_credentials())
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"the gRPC admin API cannot listen on {address}: {exc}") from exc
    await server.start()
    await set_serving(health, True, service_name=health_service_name)
    await health.set(LIVENESS_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    host = address.rpartition(":")[0]
    bound = f"{host}:{port}"
    logger.info(
        "gRPC admin API listening on %s (%s, %s)", bound, "TLS" if security.tls else "plaintext",
        "authenticated" if security.requires_authentication else "open",
    )
    if health_address is None:
        return server, health, bound
    health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health, health_server)
    try:
        health_port = health_server.add_insecure_port(health_address)
    except RuntimeError as exc:
        await server.stop(None)
        raise OSError(f"the health service cannot listen on {health_address}: {exc}") from exc
    await health_server.start()
    health_bound = f"{health_address.rpartition(':')[0]}:{health_port}"
    logger.info("gRPC health service (alone, plaintext) listening on %s", health_bound)
    return ServerGroup(server, health_server, health_bound), health, bound


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
