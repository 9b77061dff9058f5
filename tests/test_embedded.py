"""The embedded nats-server and redis-server: they answer, stop for real, and fail loudly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import nats
import pytest
import redis.asyncio

from svc import embedded
from svc.embedded import EmbeddedServerError, EmbeddedServers, NatsServer, RedisServer
from tests.helpers import process_alive, wait_until


async def test_redis_answers_ping(redis_client: redis.asyncio.Redis) -> None:
    assert await redis_client.ping() is True


async def test_jetstream_stream_takes_and_gives_back_a_message(nats_url: str, key_prefix: str):
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        stream = f"{key_prefix}-EVENTS"
        await js.add_stream(name=stream, subjects=[f"{key_prefix}.>"])
        try:
            ack = await js.publish(f"{key_prefix}.hello", b"payload")
            assert ack.stream == stream
            subscription = await js.pull_subscribe(f"{key_prefix}.>", durable="reader")
            [message] = await subscription.fetch(1, timeout=5)
            assert (message.subject, message.data) == (f"{key_prefix}.hello", b"payload")
            await message.ack()
        finally:
            await js.delete_stream(stream)
    finally:
        await nc.close()


@pytest.mark.parametrize("server_class", [NatsServer, RedisServer])
def test_stop_ends_the_process_and_removes_temporary_data(server_class: type) -> None:
    server = server_class().start()
    pid, data_dir = server.pid, server.data_dir
    assert pid is not None and process_alive(pid)
    assert data_dir is not None and data_dir.is_dir()

    server.stop()

    assert not process_alive(pid)
    assert not data_dir.exists()
    assert server.pid is None and not server.running
    server.stop()  # a second stop is harmless


def test_given_data_dir_is_used_and_kept(tmp_path: Path) -> None:
    with RedisServer(data_dir=tmp_path / "redis", appendonly=True) as server:
        assert server.data_dir == tmp_path / "redis"
    assert (tmp_path / "redis" / "redis-server.log").read_text()
    assert list((tmp_path / "redis").glob("appendonly*"))


def test_servers_side_by_side_get_different_ports() -> None:
    with (
        NatsServer() as nats_a,
        NatsServer() as nats_b,
        RedisServer() as redis_a,
        RedisServer() as redis_b,
    ):
        ports = [*nats_a.ports, *nats_b.ports, redis_a.port, redis_b.port]
        assert len(set(ports)) == len(ports)
        assert all(s.running for s in (nats_a, nats_b, redis_a, redis_b))


@pytest.mark.parametrize(
    ("server", "binary_name", "log_line"),
    [
        (
            NatsServer(extra_args=["--config", "/nonexistent/nats.conf"]),
            "nats-server",
            "open /nonexistent/nats.conf: no such file or directory",
        ),
        (
            RedisServer(extra_args=["--no-such-directive", "yes"]),
            "redis-server",
            "Bad directive or wrong number of arguments",
        ),
    ],
    ids=["nats", "redis"],
)
def test_failed_start_names_the_binary_and_quotes_its_log(
    server: NatsServer | RedisServer, binary_name: str, log_line: str
) -> None:
    with pytest.raises(EmbeddedServerError) as raised:
        server.start()

    message = str(raised.value)
    assert str(server.binary()) in message
    assert f"/{binary_name} exited with code" in message
    assert log_line in message
    assert not server.running


def test_port_taken_before_the_server_binds_is_retried_on_fresh_ports(monkeypatch) -> None:
    with socket.socket() as squatter:
        squatter.bind((embedded.HOST, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([[taken]])
        real_free_ports = embedded.free_ports
        # The first pick is a port someone else already listens on: the race, made certain.
        monkeypatch.setattr(
            embedded, "free_ports", lambda count: next(picks, None) or real_free_ports(count)
        )

        with RedisServer() as server:
            assert server.port != taken
            assert server.running


def test_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed parent, whose atexit never runs, leaves no server."""
    script = (
        "import sys\n"
        "from svc.embedded import RedisServer\n"
        f"server = RedisServer(data_dir={str(tmp_path)!r}).start()\n"
        "print(server.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        assert process_alive(server_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()

    def server_gone() -> bool:
        return not process_alive(server_pid)

    wait_until(server_gone)


def test_external_urls_are_used_as_given_and_nothing_is_started() -> None:
    with EmbeddedServers(nats_url="nats://nats.example:4222", redis_url="redis://r:6379") as s:
        assert (s.nats_url, s.redis_url) == ("nats://nats.example:4222", "redis://r:6379")
        assert s.nats is None and s.redis is None


def test_only_the_server_without_a_url_is_embedded() -> None:
    with EmbeddedServers(nats_url="nats://nats.example:4222") as servers:
        assert servers.nats is None
        assert servers.redis is not None and servers.redis.running
        assert servers.redis_url == servers.redis.url
        pid = servers.redis.pid
    assert pid is not None and not process_alive(pid)
