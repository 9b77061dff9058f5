"""The `python -m svc` commands a person runs against a running service (README's walk-through):
load the examples, list, get, disable, enable and delete automations, publish an event, and
follow the triggered actions."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.service.support import (
    REPO,
    ServiceProcess,
    process_env,
    service_settings,
    stopping_cleanly,
    svc_command,
)

EXAMPLES = sorted((REPO / "examples").glob("*.json"))
FAILED_EVENT = REPO / "examples" / "events" / "flow-run-failed.json"
ERROR_BURST = REPO / "examples" / "error-burst.json"
# Generous: a command takes well under a second; a passing test never waits this long.
COMMAND_TIMEOUT_S = 60.0


def example(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
async def service(
    nats_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    settings = service_settings(nats_url, redis_url, f"cli-{uuid.uuid4().hex[:8]}")
    async with stopping_cleanly(settings, tmp_path_factory.mktemp("cli-service")) as running:
        yield running


def command_env(service: ServiceProcess) -> dict[str, str]:
    # wide enough that rich does not fold the tables' columns; output as it is printed
    return {**process_env(service.settings), "COLUMNS": "250", "PYTHONUNBUFFERED": "1"}


def svc(service: ServiceProcess, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        svc_command(*map(str, arguments)),
        env=command_env(service),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("automations") / "bad.json"
    document = example(EXAMPLES[0]) | {"id": str(uuid.uuid4()), "bogus": 1}
    path.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="module")
def loaded(service: ServiceProcess, bad_file: Path) -> subprocess.CompletedProcess[str]:
    """`automations load` of the examples, with a file the admin API refuses among them."""
    return svc(service, "automations", "load", EXAMPLES[0], bad_file, *EXAMPLES[1:])


def test_there_are_three_examples() -> None:
    assert len(EXAMPLES) == 3, EXAMPLES


def test_load_reports_a_refused_file_exits_1_and_loads_the_others(
    loaded: subprocess.CompletedProcess[str], bad_file: Path
) -> None:
    assert loaded.returncode == 1, loaded.stderr
    lines = loaded.stdout.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and str(bad_file) in errors[0] and "INVALID_ARGUMENT" in errors[0]
    assert "bogus" in errors[0]
    for path in EXAMPLES:
        document = example(path)
        assert any(
            line.split()[:2] in (["created", document["id"]], ["replaced", document["id"]])
            and line.endswith(str(path))
            for line in lines
        ), f"{path} not loaded:\n{loaded.stdout}"


def test_list_shows_every_loaded_example(service: ServiceProcess, loaded) -> None:
    listed = svc(service, "automations", "list")
    assert listed.returncode == 0, listed.stderr
    for path in EXAMPLES:
        document = example(path)
        row = next(line for line in listed.stdout.splitlines() if document["id"] in line)
        assert document["name"] in row and "True" in row and "event" in row


def test_get_prints_the_automation_as_json(service: ServiceProcess, loaded) -> None:
    document = example(ERROR_BURST)
    got = svc(service, "automations", "get", document["id"])
    assert got.returncode == 0, got.stderr
    stored = json.loads(got.stdout)
    assert stored["id"] == document["id"] and stored["name"] == document["name"]
    assert stored["trigger"]["threshold"] == 5


def test_disable_and_enable(service: ServiceProcess, loaded) -> None:
    automation_id = example(EXAMPLES[-1])["id"]

    disabled = svc(service, "automations", "disable", automation_id)
    assert disabled.returncode == 0, disabled.stderr
    assert f"disabled {automation_id}" in disabled.stdout
    assert json.loads(svc(service, "automations", "get", automation_id).stdout)["enabled"] is False

    enabled = svc(service, "automations", "enable", automation_id)
    assert enabled.returncode == 0, enabled.stderr
    assert f"enabled {automation_id}" in enabled.stdout
    assert json.loads(svc(service, "automations", "get", automation_id).stdout)["enabled"] is True


def test_delete(service: ServiceProcess, tmp_path: Path) -> None:
    document = example(EXAMPLES[0]) | {"id": str(uuid.uuid4()), "name": "to be deleted"}
    path = tmp_path / "doomed.json"
    path.write_text(json.dumps(document))
    assert svc(service, "automations", "load", path).returncode == 0

    deleted = svc(service, "automations", "delete", document["id"])
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted {document['id']}" in deleted.stdout
    gone = svc(service, "automations", "get", document["id"])
    assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr
    assert document["id"] not in svc(service, "automations", "list").stdout


def read_lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stdout lines, read on a thread, so the test can wait with a deadline."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_published_events_fire_and_actions_tail_prints_the_action(
    service: ServiceProcess, loaded
) -> None:
    """Five failures of one deployment's flow runs within a minute fire the error-burst
    example; `actions tail` prints the triggered action."""
    published = svc(service, "events", "publish", *[FAILED_EVENT] * 5)
    assert published.returncode == 0, published.stderr
    ids = [line.split()[1] for line in published.stdout.splitlines()]
    assert len(ids) == 5 and all(
        line.startswith("published ") for line in published.stdout.splitlines()
    )
    assert len({str(uuid.UUID(i)) for i in ids}) == 5

    # from the stream's start, so the action is printed whether it came before or after
    # the tail subscribed
    tail = subprocess.Popen(
        svc_command("actions", "tail", "--from-start"),
        env=command_env(service),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = read_lines(tail)
        try:
            line = lines.get(timeout=COMMAND_TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"`actions tail` printed nothing in {COMMAND_TIMEOUT_S:g} s")
        burst = example(ERROR_BURST)
        subject = f"{service.settings.actions_subject_prefix}.create-ticket.{burst['id']}"
        assert line.startswith(f"{subject}  automation={burst['id']}"), line
        assert "event=prefect.flow-run.Failed#" in line and "action=create-ticket" in line
        assert ids[-1][-8:] in line  # the fifth failure completed the burst
        assert '"related:deployment:prefect.resource.id": "prefect.deployment.nightly-etl"' in line
    finally:
        tail.send_signal(signal.SIGTERM)
        try:
            status = tail.wait(timeout=COMMAND_TIMEOUT_S)
        finally:
            if tail.poll() is None:
                tail.kill()
                tail.wait()
    assert status == 130, tail.stderr.read() if tail.stderr else ""
