"""The service's NATS connection and Redis client, built from the settings in one place: they
reconnect by themselves, bound every call with a timeout, and retry a start-up step until the
dependency answers, so a replica rides out a restart of either (DESIGN "Delivery guarantees")."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import hiredis
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from svc.config import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds between two attempts to reach a NATS server that went away. The client tries
# forever (nats.py gives up after 60 attempts by default, which would leave a replica that
# outlived a long outage disconnected for good); the replica reports NOT_SERVING meanwhile.
NATS_RECONNECT_WAIT_S = 0.5
# A Redis command that fails on a dead connection is retried this many times, quickly: that
# covers the pooled connections a Redis restart leaves stale. Longer outages are the
# consumer's and the dependency monitor's to wait out, with their own backoff.
REDIS_RETRIES = 3
REDIS_RETRY_BASE_S = 0.02
REDIS_RETRY_CAP_S = 0.5
# Pauses of a start-up step that keeps failing: doubling from the first, capped.
STARTUP_RETRY_INITIAL_S = 0.2
STARTUP_RETRY_MAX_S = 5.0

# What an unreachable dependency raises: a refused or dropped connection, or a timeout.
UNREACHABLE = (OSError, asyncio.TimeoutError, RedisConnectionError, RedisTimeoutError,
               nats.errors.Error)


def nats_servers(url: str) -> list[str]:
    """NATS_URL may list several servers of one cluster, comma-separated."""
    return [u.strip() for u in url.split(",") if u.strip()]


async def connect_nats(settings: Settings, name: str = "triggers") -> NATS:
    """Connect to NATS; waits (retrying forever) while no server answers."""
    if settings.nats_url is None:
        raise ValueError("NATS_URL is not set")

    async def disconnected() -> None:
        if nc.is_closed or nc.is_draining:
            return  # closed on purpose (a stop): nothing is lost
        logger.warning("NATS connection lost; reconnecting every %.1f s", NATS_RECONNECT_WAIT_S)

    async def reconnected() -> None:
        logger.info("NATS connection re-established (%s)", nc.connected_url)

    async def error(exc: Exception) -> None:
        # refused connections while a server restarts are expected and repeat every attempt
        level = logging.INFO if isinstance(exc, OSError) else logging.WARNING
        logger.log(level, "NATS client error: %r", exc)

    tls = _nats_tls(settings)
    nc = await nats.connect(
        servers=nats_servers(settings.nats_url),
        name=name,
        tls=tls,
        user_credentials=settings.nats_creds_file,
        max_reconnect_attempts=-1,
        reconnect_time_wait=NATS_RECONNECT_WAIT_S,
        connect_timeout=max(1, round(settings.dependency_timeout_s)),
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
    )
    return nc


def _nats_tls(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context when a CA or a client certificate is set (a `tls://` URL alone uses
    the system's CAs, as nats.py does by default)."""
    s = settings
    if not (s.nats_tls_ca_file or s.nats_tls_cert_file):
        return None
    context = ssl.create_default_context(cafile=s.nats_tls_ca_file)
    if s.nats_tls_cert_file:
        context.load_cert_chain(s.nats_tls_cert_file, s.nats_tls_key_file)
    return context


def redis_client(settings: Settings) -> Redis:
    """A Redis (or Redis Cluster) client whose every call is bounded by
    `dependency_timeout_s`. The state layer takes either: every script's keys share one
    hash tag, so each call goes to one node (DESIGN "State in Redis")."""
    if settings.redis_url is None:
        raise ValueError("REDIS_URL is not set")
    options: dict[str, object] = {
        "socket_timeout": settings.dependency_timeout_s,
        "socket_connect_timeout": settings.dependency_timeout_s,
        "retry": Retry(
            ExponentialWithJitterBackoff(base=REDIS_RETRY_BASE_S, cap=REDIS_RETRY_CAP_S),
            REDIS_RETRIES,
        ),
    }
    # AUTH and TLS: set only when given, so a URL's own user and password still count
    for option, value in (
        ("username", settings.redis_username),
        ("password", settings.redis_password),
        ("ssl_ca_certs", settings.redis_tls_ca_file),
        ("ssl_certfile", settings.redis_tls_cert_file),
        ("ssl_keyfile", settings.redis_tls_key_file),
    ):
        if value:
            options[option] = value
    if settings.redis_cluster:
        # the cluster client has the methods of Redis the state layer uses; it is not a
        # subclass, hence the cast for type checkers. (It makes its nodes' connections
        # itself, so they pack commands with redis-py's own Python code.)
        return RedisCluster.from_url(settings.redis_url, **options)  # type: ignore[return-value]
    client = Redis.from_url(settings.redis_url, **options)
    pool = client.connection_pool
    pool.connection_class = hiredis_packing(pool.connection_class)
    return client


# A future that the next commands sent in this context resolve once they are written to the
# socket (RedisState.send_many): the caller works meanwhile, while Redis runs them.
WRITTEN: contextvars.ContextVar[asyncio.Future[None] | None] = contextvars.ContextVar(
    "redis_commands_written", default=None
)


class _HiredisPacking:
    """Packs commands with hiredis's C `pack_command` rather than redis-py's Python loop,
    which the asyncio client uses even with hiredis installed: about a tenth of the
    service's CPU time per event went there (docs/performance.md). Same bytes on the wire;
    an argument hiredis cannot pack raises redis-py's DataError, as redis-py's would."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return [_pack(args)]

    def pack_commands(self, commands: Any) -> list[bytes]:
        return [b"".join(_pack(tuple(command)) for command in commands)]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        await super().send_packed_command(command, check_health)  # type: ignore[misc]
        written = WRITTEN.get()
        if written is not None and not written.done():
            written.set_result(None)

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,
        *,
        disconnect_on_error: bool = True,
        push_request: bool = False,
    ) -> Any:
        """A reply already whole in the parser's buffer is taken as it is. redis-py arms an
        `asyncio.timeout` for every read, even one that needs no waiting, and a pipeline
        reads one reply per command: arming them was ~4 % of the service's CPU time per
        event (docs/performance.md). Any other read, one that has to wait for the socket
        above all, goes through redis-py's own, bounded by `socket_timeout` as before."""
        parser = self._parser  # type: ignore[attr-defined]
        if (
            timeout is None
            and not push_request
            and not disable_decoding
            and type(parser) is _AsyncHiredisParser
            and parser._connected
        ):
            response = parser._reader.gets()
            push = parser._hiredis_PushNotificationType
            if push is not None and isinstance(response, push):
                # RESP3 pushes (none is asked for): handled, then the reply is read as usual
                await parser.handle_push_response(response)
                response = NOT_ENOUGH_DATA
            if response is not NOT_ENOUGH_DATA:
                # what redis-py's hiredis parser and connection do with a reply
                if isinstance(response, RedisConnectionError):
                    raise response
                if isinstance(response, list) and response and isinstance(
                    response[0], RedisConnectionError
                ):
                    raise response[0]
                if self.health_check_interval:  # type: ignore[attr-defined]
                    self.next_health_check = (  # type: ignore[attr-defined]
                        asyncio.get_running_loop().time() + self.health_check_interval  # type: ignore[attr-defined]
                    )
                if isinstance(response, ResponseError):
                    raise response from None
                return response
        return await super().read_response(  # type: ignore[misc]
            disable_decoding,
            timeout,
            disconnect_on_error=disconnect_on_error,
            push_request=push_request,
        )


@dataclass(frozen=True, slots=True)
class PackedCommand:
    """A whole command already in the protocol's bytes (RESP), queued in a pipeline after
    its command's name, `execute_command("EVALSHA", PackedCommand(resp))`, and sent as it
    is; redis-py reads its reply as that command's. The one call per batch that evaluates
    its events (RedisState.together) is packed this way, from parts each trigger packs
    once: hiredis's packing takes ~170 ns per argument, 18 per event. A single Redis only:
    the cluster client packs with redis-py's own code."""

    resp: bytes


def bulk_strings(values: Iterable[bytes | str | int]) -> bytes:
    """Arguments as RESP bulk strings, as hiredis packs each (str as UTF-8, int in decimal)."""
    out = []
    for value in values:
        if isinstance(value, str):
            value = value.encode()
        elif isinstance(value, int):
            value = b"%d" % value
        out.append(b"$%d\r\n%b\r\n" % (len(value), value))
    return b"".join(out)


def _pack(args: tuple[Any, ...]) -> bytes:
    if len(args) == 2 and type(args[1]) is PackedCommand:
        return args[1].resp
    first = args[0]
    # a command name of several words ('CLIENT SETNAME') goes as several arguments
    if isinstance(first, str):
        if " " in first:
            args = (*first.encode().split(), *args[1:])
    elif b" " in first:
        args = (*first.split(), *args[1:])
    try:
        return hiredis.pack_command(args)
    except TypeError:
        pass
    # buffers other than bytes are packed as bytes (rare: the slow path), anything else fails
    args = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
    try:
        return hiredis.pack_command(args)
    except TypeError as error:
        raise DataError(str(error)) from error


def sends_packed_commands(client: Redis | RedisCluster) -> bool:
    """Do the client's connections send a PackedCommand as it is (connections made by
    `redis_client` for a single Redis; not a cluster's, nor a plain redis-py client's)?"""
    pool = getattr(client, "connection_pool", None)
    return pool is not None and issubclass(pool.connection_class, _HiredisPacking)


@cache
def hiredis_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class` (plain, TLS or Unix socket) packing commands with hiredis."""
    return type(f"Hiredis{connection_class.__name__}", (_HiredisPacking, connection_class), {})


async def nats_check(nc: NATS, js: JetStreamContext, timeout_s: float) -> None:
    """Raises unless NATS answers and JetStream serves API calls (what intake needs)."""
    if not nc.is_connected:
        raise ConnectionError("NATS is not connected")
    await asyncio.wait_for(js.account_info(), timeout=timeout_s)


async def until_reachable(step: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a start-up step, retrying with backoff while its dependency is unreachable."""
    pause_s = STARTUP_RETRY_INITIAL_S
    while True:
        try:
            return await step()
        except UNREACHABLE as exc:
            logger.warning("%s unreachable at start-up (%r); retrying in %.1f s", what, exc,
                           pause_s)
        # outside the except block, so the exception is not chained onto a later failure
        await asyncio.sleep(pause_s)
        pause_s = min(2 * pause_s, STARTUP_RETRY_MAX_S)
