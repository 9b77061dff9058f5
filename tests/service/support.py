"""What the service tests share: settings naming streams, subjects, a bucket and a consumer of
the test's own, the service run as a process (`python -m svc run`), and clean-up afterwards."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import redis.asyncio
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from svc.bus.streams import desired_streams
from svc.config import ENV_PREFIX, Settings, env_name
from tests.helpers import JS_API_TIMEOUT_S, eventually, wait_until

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
# The line `svc run` prints once the admin API listens (svc/cli.py, _announce).
ADMIN_LINE = "Admin API (gRPC) "
# Generous: a service process starts in about a second; a loaded 2-core machine is slower,
# and a passing test never waits this long.
START_TIMEOUT_S = 60.0
# How long a service process gets to stop after SIGTERM: the batch in flight, then close.
STOP_TIMEOUT_S = 30.0


# Settings that name something shared in NATS or Redis, by how their field name ends: each
# test gives every one of them a value of its own, those added later included.
NAME_SETTINGS = ("_stream", "_subject_prefix", "_subject", "_bucket", "consumer_name")


def service_settings(nats_url: str, redis_url: str, key_prefix: str, **changes: Any) -> Settings:
    """Settings whose every name (streams, subjects, bucket, consumer) is this test's own,
    `<default>-<key_prefix>`, as are its Redis keys; the admin API on a free port, and a 1 s
    periodic timer. `key_prefix` must be valid in stream and subject names (letters, digits
    and '-')."""
    defaults = Settings.from_env({})
    names = {
        f.name: f"{getattr(defaults, f.name)}-{key_prefix}"
        for f in dataclasses.fields(Settings)
        if f.name.endswith(NAME_SETTINGS)
    }
    values: dict[str, Any] = {
        **names,
        "nats_url": nats_url,
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "grpc_address": "127.0.0.1:0",
        "periodic_interval_s": 1.0,
    }
    return dataclasses.replace(defaults, **{**values, **changes})


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that give a process `settings` (unset ones left out)."""
    return {
        env_name(f): str(getattr(settings, f.name))
        for f in dataclasses.fields(settings)
        if getattr(settings, f.name) is not None
    }


def process_env(settings: Settings) -> dict[str, str]:
    """This environment without any setting of ours, plus `settings`."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith((ENV_PREFIX, "OTEL_")) and k not in ("NATS_URL", "REDIS_URL")
    }
    return {**inherited, **settings_env(settings)}


def svc_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "svc", *arguments]


@dataclass
class ServiceProcess:
    """`python -m svc run`, its output in files (so no pipe can fill up and stall it)."""

    process: subprocess.Popen[bytes]
    settings: Settings  # with the admin API's bound address
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return (
            f"stdout:\n{self.stdout.read_text()}\nstderr (end):\n{self.stderr.read_text()[-6000:]}"
        )

    def stop(self) -> int:
        """SIGTERM, then wait for the exit; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@contextlib.contextmanager
def service_process(settings: Settings, log_dir: Path) -> Iterator[ServiceProcess]:
    """Start the service as a process on `settings`; yields once its admin API listens.
    Killed on the way out if the test did not stop it."""
    stdout, stderr = log_dir / "stdout.txt", log_dir / "stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            svc_command("run"), env=process_env(settings), cwd=REPO, stdout=out, stderr=err
        )
    running = ServiceProcess(process, settings, stdout, stderr)
    try:
        address = _admin_address(running)
        running.settings = dataclasses.replace(settings, grpc_address=address)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@contextlib.asynccontextmanager
async def stopping_cleanly(settings: Settings, log_dir: Path) -> AsyncIterator[ServiceProcess]:
    """service_process for a module's tests: at the end it is stopped with SIGTERM, which it
    must answer with a clean exit, and its streams, bucket and keys are removed."""
    try:
        with service_process(settings, log_dir) as running:
            yield running
            status = running.stop()
            assert status == 0, f"the service exited with {status}\n{running.output()}"
            assert "SIGTERM received; stopping." in running.stdout.read_text()
    finally:
        await remove_names(settings)


def _admin_address(running: ServiceProcess) -> str:
    """Poll the process's output for the admin API's address, until a deadline."""

    def announced() -> str | None:
        for line in running.stdout.read_text().splitlines():
            if line.startswith(ADMIN_LINE):
                return line.removeprefix(ADMIN_LINE).strip()
        if running.process.poll() is not None:
            raise RuntimeError(
                f"the service exited with {running.process.returncode} before its admin API "
                f"listened\n{running.output()}"
            )
        return None

    try:
        return wait_until(announced, f"a {ADMIN_LINE!r} line", timeout_s=START_TIMEOUT_S)
    except pytest.fail.Exception as timed_out:
        pytest.fail(f"{timed_out}\n{running.output()}")


async def remove_names(settings: Settings) -> None:
    """Delete the streams, the bucket and the Redis keys `settings` name."""
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream(timeout=JS_API_TIMEOUT_S)
        for stream in desired_streams(settings):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream.name)
    finally:
        await nc.close()
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{settings.key_prefix}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


# ---------------------------------------------------------------- waiting and reading back

@dataclass(frozen=True)
class StoredMessage:
    subject: str
    headers: dict[str, str]
    data: bytes

    def json(self) -> Any:
        return orjson.loads(self.data)


async def stream_messages(js: JetStreamContext, stream: str) -> list[StoredMessage]:
    """Every message in `stream`, in order."""
    state = (await js.stream_info(stream)).state
    found = []
    for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        with contextlib.suppress(NotFoundError):  # deleted
            msg = await js.get_msg(stream, seq)
            found.append(StoredMessage(msg.subject or "", dict(msg.headers or {}), msg.data or b""))
    return found


async def consumer_settled(js: JetStreamContext, settings: Settings) -> bool:
    """True once the durable consumer has every message of the events stream delivered and
    acknowledged: the firings they caused are in the actions stream by then (and the
    `prefect.automation.triggered` events they published back are consumed too)."""
    try:
        info = await js.consumer_info(settings.events_stream, settings.consumer_name)
    except NotFoundError:  # the service creates it as its consumer starts
        return False
    # the ack floor against the stream's last message, not only the consumer's pending
    # count, which the server may not have updated yet for a message just published
    last = (await js.stream_info(settings.events_stream)).state.last_seq
    return info.ack_floor.stream_seq >= last and info.num_ack_pending == 0


async def settle(js: JetStreamContext, settings: Settings) -> None:
    await eventually(lambda: consumer_settled(js, settings), "the consumer to ack every event")


def reactive_automation(
    event: str, *, threshold: int = 1, within: float = 0, **fields: Any
) -> dict[str, Any]:
    """A reactive automation document (Prefect's REST shape) with a fresh id."""
    trigger = {
        "type": "event",
        "posture": "Reactive",
        "expect": [event],
        "threshold": threshold,
        "within": within,
    }
    trigger.update(fields.pop("trigger", {}))
    return {
        "id": str(uuid.uuid4()),
        "name": f"on {event}",
        "trigger": trigger,
        "actions": [{"type": "do-nothing"}],
        **fields,
    }


def event_document(name: str, resource_id: str = "thing.1", **fields: Any) -> dict[str, Any]:
    """A valid event with a fresh id, occurred now."""
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource_id},
        **fields,
    }


async def publish(
    js: JetStreamContext,
    settings: Settings,
    body: dict[str, Any] | bytes,
    headers: dict[str, str] | None = None,
) -> int:
    """Publish an event (a document, or raw bytes) on the events subjects; its stream seq."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    ack = await js.publish(f"{settings.events_subject_prefix}.test", data, headers=headers)
    return ack.seq
