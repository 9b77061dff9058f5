"""`python -m svc health`: ask a replica's health service whether it serves, the way a probe
would (exit 0 when SERVING, 1 otherwise), with the admin API's TLS settings when it has TLS;
for exec probes and compose health checks, where the kubelet's gRPC probe cannot go."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from svc.config import Settings

PROBE_TIMEOUT_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help="host:port to ask (default: TRIGGERS_HEALTH_ADDRESS, else TRIGGERS_GRPC_ADDRESS)",
    )
    parser.add_argument("--service", default="", help="service name to ask about ('': all)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_check(args, settings))


async def _check(args: argparse.Namespace, settings: Settings) -> int:
    address = args.address or settings.health_address or settings.grpc_address
    if address.startswith("0.0.0.0:"):  # a listen address: ask it on loopback
        address = "127.0.0.1:" + address.rpartition(":")[2]
    plaintext = args.address is None and settings.health_address is not None
    channel = (
        grpc.aio.insecure_channel(address)
        if plaintext or not settings.admin_tls_cert_file
        else grpc.aio.secure_channel(address, _credentials(settings))
    )
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=PROBE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            print(f"{address}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _credentials(settings: Settings) -> grpc.ChannelCredentials:
    """Trust the server's own certificate chain (a probe runs beside it); with mTLS, the
    probe has no client certificate, so use TRIGGERS_HEALTH_ADDRESS instead."""
    chain = Path(settings.admin_tls_cert_file or "").read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=chain)
