"""Security settings: the admin API over TLS, a bearer token required on every call but health
checks (UNAUTHENTICATED otherwise) and/or a client certificate from a given CA (mTLS), health
alone on a plaintext port for probes, Redis AUTH and NATS TLS with credentials, and embedded
servers on loopback only."""

from __future__ import annotations

import argparse
import dataclasses
import socket
from pathlib import Path

import grpc
import pytest
import redis.exceptions
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from svc.admin import probe
from svc.admin.generated.triggers.admin.v1 import admin_pb2 as pb
from svc.admin.generated.triggers.admin.v1 import admin_pb2_grpc as pb_grpc
from svc.admin.security import AdminSecurity, AdminSecurityError
from svc.admin.server import ServerGroup, start_admin_server
from svc.client import AdminClient
from svc.config import Settings
from svc.connections import connect_nats, redis_client
from svc.embedded import HOST, NatsServer, RedisServer
from tests.admin.support import InMemoryBackend
from tests.reliability.pki import Pki, make_pki

TOKEN = "s3cret-token"
OK, UNAUTHENTICATED = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def security(pki: Pki, *, token: str | None = None, mtls: bool = False) -> AdminSecurity:
    return AdminSecurity(
        cert_chain=pki.server_cert.read_bytes(),
        private_key=pki.server_key.read_bytes(),
        client_ca=pki.ca.read_bytes() if mtls else None,
        token=token,
    )


@pytest.fixture
async def serve():
    servers = []

    async def start(admin_security: AdminSecurity | None, **kwargs):
        server, health, address = await start_admin_server(
            InMemoryBackend(), "127.0.0.1:0", security=admin_security, **kwargs
        )
        servers.append(server)
        return server, address

    yield start
    for server in servers:
        await server.stop(None)


def tls_channel(address: str, pki: Pki, client: str | None = None) -> grpc.aio.Channel:
    chain = key = None
    if client == "trusted":
        chain, key = pki.client_cert.read_bytes(), pki.client_key.read_bytes()
    elif client == "stranger":
        chain, key = pki.stranger_cert.read_bytes(), pki.stranger_key.read_bytes()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(), private_key=key, certificate_chain=chain
    )
    return grpc.aio.secure_channel(address, credentials)


async def list_status(channel: grpc.aio.Channel, token: str | None = None) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    try:
        await pb_grpc.AutomationAdminServiceStub(channel).ListAutomations(
            pb.ListAutomationsRequest(), metadata=metadata, timeout=10
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return OK


async def health_status(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=10
    )
    return reply.status


async def test_a_token_is_required_on_every_call_but_health(serve) -> None:
    _, address = await serve(AdminSecurity(token=TOKEN))
    async with grpc.aio.insecure_channel(address) as channel:
        assert await list_status(channel) == UNAUTHENTICATED
        assert await list_status(channel, "wrong") == UNAUTHENTICATED
        assert await list_status(channel, TOKEN) == OK
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in reflection.ServerReflectionInfo(iter([request])):
                pass
        assert refused.value.code() == UNAUTHENTICATED
        metadata = (("authorization", f"bearer {TOKEN}"),)
        answers = [a async for a in reflection.ServerReflectionInfo(iter([request]),
                                                                    metadata=metadata)]
        assert answers and answers[0].list_services_response.service


async def test_over_tls_with_a_token(serve, pki: Pki) -> None:
    _, address = await serve(security(pki, token=TOKEN))
    async with tls_channel(address, pki) as channel:
        assert await list_status(channel) == UNAUTHENTICATED
        assert await list_status(channel, TOKEN) == OK
    async with grpc.aio.insecure_channel(address) as plaintext:
        assert await list_status(plaintext, TOKEN) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_ca_requires_a_certificate_it_signed(serve, pki: Pki) -> None:
    _, address = await serve(security(pki, mtls=True))
    async with tls_channel(address, pki, client="trusted") as channel:
        assert await list_status(channel) == OK
    for client in (None, "stranger"):  # the handshake refuses both: no channel at all
        async with tls_channel(address, pki, client=client) as channel:
            assert await list_status(channel) == grpc.StatusCode.UNAVAILABLE


async def test_with_a_client_ca_and_a_token_both_are_required(serve, pki: Pki) -> None:
    _, address = await serve(security(pki, mtls=True, token=TOKEN))
    async with tls_channel(address, pki, client="trusted") as channel:
        assert await list_status(channel) == UNAUTHENTICATED
        assert await list_status(channel, TOKEN) == OK


async def test_health_alone_on_a_plaintext_port_for_probes(serve, pki: Pki) -> None:
    server, address = await serve(security(pki, token=TOKEN), health_address="127.0.0.1:0")
    assert isinstance(server, ServerGroup)
    async with grpc.aio.insecure_channel(server.health_address) as channel:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await list_status(channel, TOKEN) == grpc.StatusCode.UNIMPLEMENTED


def test_security_settings_are_checked_naming_the_variable(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(AdminSecurityError, match="TRIGGERS_ADMIN_TLS_KEY_FILE"):
        AdminSecurity.from_settings(Settings(admin_tls_cert_file=str(pki.server_cert)))
    with pytest.raises(AdminSecurityError, match="needs TLS"):
        AdminSecurity.from_settings(Settings(admin_tls_client_ca_file=str(pki.ca)))
    with pytest.raises(AdminSecurityError, match="cannot read"):
        AdminSecurity.from_settings(
            Settings(admin_tls_cert_file=str(tmp_path / "none.pem"),
                     admin_tls_key_file=str(pki.server_key))
        )
    settings = Settings.from_env(
        {
            "TRIGGERS_ADMIN_TLS_CERT_FILE": str(pki.server_cert),
            "TRIGGERS_ADMIN_TLS_KEY_FILE": str(pki.server_key),
            "TRIGGERS_ADMIN_TOKEN": TOKEN,
        }
    )
    loaded = AdminSecurity.from_settings(settings)
    assert loaded.tls and loaded.requires_authentication and loaded.token == TOKEN


async def test_redis_auth_is_a_setting(tmp_path: Path) -> None:
    with RedisServer(data_dir=tmp_path, extra_args=("--requirepass", "pw")) as server:
        settings = Settings(redis_url=server.url)
        anonymous = redis_client(settings)
        with pytest.raises(redis.exceptions.AuthenticationError):
            await anonymous.ping()
        await anonymous.aclose()
        client = redis_client(dataclasses.replace(settings, redis_password="pw"))
        assert await client.ping()
        await client.aclose()


async def test_nats_tls_and_credentials_are_settings(pki: Pki, tmp_path: Path) -> None:
    tls = ("--tls", "--tlscert", str(pki.server_cert), "--tlskey", str(pki.server_key),
           "--user", "svc", "--pass", "pw")
    with NatsServer(data_dir=tmp_path, extra_args=tls) as server:
        settings = Settings(
            nats_url=f"tls://svc:pw@127.0.0.1:{server.port}", nats_tls_ca_file=str(pki.ca)
        )
        nc = await connect_nats(settings)
        try:
            assert nc.is_connected
            await nc.jetstream().account_info()
        finally:
            await nc.close()


def listening_addresses(pid: int) -> set[str]:
    """The local addresses of the TCP sockets process `pid` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = str(fd.readlink()) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address = fields[1].split(":")[0]
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1])
                          if len(address) == 8 else address)
    return found


def test_embedded_servers_and_the_admin_api_listen_on_loopback_only(tmp_path: Path) -> None:
    assert Settings().grpc_address.startswith("127.0.0.1:")
    with (
        NatsServer(data_dir=tmp_path / "nats") as nats_server,
        RedisServer(data_dir=tmp_path / "redis") as redis_server,
    ):
        for server in (nats_server, redis_server):
            assert server.pid is not None
            assert listening_addresses(server.pid) == {HOST}, server.name


async def test_the_cli_client_brings_the_token_over_tls(serve, pki: Pki) -> None:
    _, address = await serve(security(pki, token=TOKEN))
    settings = Settings(
        grpc_address=address,
        admin_tls_cert_file=str(pki.server_cert),
        admin_tls_key_file=str(pki.server_key),
    )
    async with AdminClient.from_settings(settings) as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await anonymous.list()
        assert refused.value.code() == UNAUTHENTICATED
    async with AdminClient.from_settings(
        dataclasses.replace(settings, admin_token=TOKEN)
    ) as admin:
        assert await admin.list() == []


async def test_the_health_command_speaks_the_admin_apis_tls(serve, pki: Pki) -> None:
    _, address = await serve(security(pki, token=TOKEN))
    settings = Settings(
        grpc_address=address,
        admin_tls_cert_file=str(pki.server_cert),
        admin_tls_key_file=str(pki.server_key),
    )
    asked = argparse.Namespace(address=None, service="")
    assert await probe._check(asked, settings) == 0
    assert await probe._check(asked, Settings(grpc_address=address)) == 1  # no TLS: refused
