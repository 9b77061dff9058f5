"""`python -m svc run`: starts the embedded servers, says where they are, stops on a signal."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

import pytest

from svc.cli import COMMANDS, build_parser
from tests.helpers import process_alive, wait_until


def test_every_registered_command_is_reachable_from_the_parser() -> None:
    parser = build_parser()
    (subcommands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in COMMANDS:
        assert subcommands.choices[command.name].get_default("command_run") is command.run


def test_a_bad_setting_is_reported_and_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "svc", "run"],
        env={"TRIGGERS_FETCH_BATCH": "x", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "TRIGGERS_FETCH_BATCH must be a positive integer, got 'x'" in result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_run_prints_where_servers_listen_and_stops_them_on_a_signal(stop_signal, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "svc", "run"],
        # A clean environment: no NATS_URL/REDIS_URL, so both servers are embedded.
        env={
            "PATH": "/usr/bin:/bin",
            "TRIGGERS_DATA_DIR": str(tmp_path),
            "TRIGGERS_GRPC_ADDRESS": "127.0.0.1:0",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        nats_line = process.stdout.readline()
        redis_line = process.stdout.readline()
        assert nats_line.startswith("NATS  nats://127.0.0.1:"), nats_line
        assert redis_line.startswith("Redis redis://127.0.0.1:"), redis_line
        admin_line = process.stdout.readline()
        assert admin_line.startswith("Admin API (gRPC) 127.0.0.1:"), admin_line
        assert "service is running" in process.stdout.readline()
        pids = [int(line.split("pid ")[1].split(",")[0]) for line in (nats_line, redis_line)]
        assert all(process_alive(pid) for pid in pids)

        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, err
    assert f"{stop_signal.name} received" in out and "Stopped." in out

    def servers_gone() -> bool:
        return not any(process_alive(pid) for pid in pids)

    wait_until(servers_gone)
