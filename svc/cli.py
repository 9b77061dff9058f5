"""The `python -m svc` command line: one function per subcommand, registered in COMMANDS."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from svc.admin import probe as health_probe
from svc.bench.command import bench, bench_arguments
from svc.config import Settings, SettingsError
from svc.crash import command as crash_command
from svc.explain_commands import (
    explain,
    explain_arguments,
    replay,
    replay_arguments,
    why,
    why_arguments,
)

if TYPE_CHECKING:
    from rich.console import Console

    from svc.client import AdminClient
from svc.embedded import EmbeddedServerError, EmbeddedServers, RedisServer

logger = logging.getLogger(__name__)

# Signals that ask the service to stop: Ctrl-C in a terminal, and what process managers send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """For subcommands that take no options beyond the settings in the environment."""


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one line of help, its options and the function it runs.

    `run` gets the parsed arguments and the settings, and returns the exit code.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace, Settings], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grpc-address",
        help="override TRIGGERS_GRPC_ADDRESS (port 0 picks a free port)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Start NATS and Redis (embedded where no URL is set) and the service, until told to stop."""
    if args.grpc_address:
        settings = dataclasses.replace(settings, grpc_address=args.grpc_address)
    with EmbeddedServers(
        nats_url=settings.nats_url, redis_url=settings.redis_url, data_dir=settings.data_dir
    ) as servers:
        for line in servers.describe():
            print(line, flush=True)
        settings = dataclasses.replace(
            settings, nats_url=servers.nats_url, redis_url=servers.redis_url
        )
        asyncio.run(serve(settings))
    print("Stopped.", flush=True)
    return 0


async def serve(settings: Settings) -> str:
    """Run the service until SIGINT or SIGTERM; return the signal's name."""
    from svc.service import Service
    from svc.telemetry import configure_telemetry

    telemetry = configure_telemetry(
        service_name=settings.service_name,
        traces_exporter=settings.traces_exporter,
        metrics_exporter=settings.metrics_exporter,
        prometheus_address=settings.prometheus_address,
    )
    if telemetry.prometheus is not None:
        print(f"Metrics for Prometheus on http://{telemetry.prometheus.address}/metrics", flush=True)
    stop = asyncio.Event()
    received: list[str] = []
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:
        if not received:
            print(f"{name} received; stopping.", flush=True)
        received.append(name)
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig.name)
    service = Service(settings, instruments=telemetry.instruments)
    try:
        await service.start()
        _announce(settings, service.admin_address or settings.grpc_address)
        await stop.wait()
    finally:
        await service.stop()
        telemetry.shutdown()
    return received[0] if received else "stop"


def _announce(settings: Settings, admin_address: str) -> None:
    env = f"NATS_URL={settings.nats_url} TRIGGERS_GRPC_ADDRESS={admin_address}"
    # the interpreter of this environment, as the user can type it from here
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    automations = sorted(Path("examples").glob("*.json"))
    events = sorted(Path("examples/events").glob("*.json"))
    lines = [
        f"Admin API (gRPC) {admin_address}",
        "The triggers service is running; Ctrl-C (or SIGTERM) stops it.",
        "Next, in another terminal:",
        f"  export {env}",
    ]
    lines += [f"  {python} -m svc automations load {p}" for p in automations]
    lines += [f"  {python} -m svc automations list", f"  {python} -m svc actions tail &"]
    lines += [f"  {python} -m svc events publish {p}" for p in events]
    for line in lines:
        print(line, flush=True)


def _automations_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = actions.add_parser("load", help="create or replace automations from JSON files")
    load.add_argument("files", nargs="+", metavar="FILE")
    actions.add_parser("list", help="list the stored automations")
    for name, text in (
        ("get", "print one automation as JSON"),
        ("delete", "delete an automation and its state"),
        ("enable", "enable an automation"),
        ("disable", "disable an automation (its state is kept)"),
    ):
        actions.add_parser(name, help=text).add_argument("id")
    reset = actions.add_parser("reset", help="delete trigger state (one automation, or --all)")
    reset.add_argument("id", nargs="?")
    reset.add_argument("--all", action="store_true")
    buckets = actions.add_parser("buckets", help="show one event trigger's current buckets")
    buckets.add_argument("id")
    buckets.add_argument("trigger_id")


def automations(args: argparse.Namespace, settings: Settings) -> int:
    """Manage automations through the admin API (TRIGGERS_GRPC_ADDRESS)."""
    import grpc

    try:
        return asyncio.run(_automations(args, settings))
    except grpc.aio.AioRpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1


async def _automations(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table

    from svc.client import AdminClient

    console = Console()
    async with AdminClient.from_settings(settings) as admin:
        if args.action == "load":
            return await _load_files(admin, console, args.files)
        elif args.action == "list":
            table = Table("id", "name", "enabled", "trigger")
            for doc in await admin.list():
                table.add_row(doc["id"], doc["name"], str(doc["enabled"]), doc["trigger"]["type"])
            console.print(table)
        elif args.action == "get":
            print(json.dumps(await admin.get(args.id), indent=2))
        elif args.action == "delete":
            await admin.delete(args.id)
            console.print(f"deleted {args.id}")
        elif args.action in ("enable", "disable"):
            stored = await admin.set_enabled(args.id, args.action == "enable")
            console.print(f"{args.action}d {stored.id}")
            for warning in stored.warnings:
                console.print(f"  [yellow]warning:[/yellow] {warning}")
        elif args.action == "reset":
            if bool(args.id) == bool(args.all):
                print("error: give an automation id or --all", file=sys.stderr)
                return 2
            await admin.reset_state(None if args.all else args.id)
            console.print("state reset")
        elif args.action == "buckets":
            table = Table("bucketing key", "start", "end", "count", "last event", "operation")
            for b in await admin.buckets(args.id, args.trigger_id):
                table.add_row(
                    json.dumps(list(b.bucketing_key)),
                    b.start.ToDatetime().isoformat(),
                    b.end.ToDatetime().isoformat(),
                    str(b.count),
                    f"{b.last_event_name} {b.last_event_id}".strip(),
                    b.last_operation,
                )
            console.print(table)
    return 0


async def _load_files(admin: AdminClient, console: Console, paths: Sequence[str]) -> int:
    """Load each file; a refused one is reported and the others still load."""
    import grpc

    status = 0
    for path in paths:
        try:
            stored = await admin.load(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as error:
            console.print(f"[red]error:[/red] {path}: {error}")
            status = 1
            continue
        except grpc.aio.AioRpcError as error:
            console.print(f"[red]error:[/red] {path}: {error.code().name}: {error.details()}")
            status = 1
            continue
        verb = "created" if stored.created else "replaced"
        console.print(f"{verb} {stored.id} {stored.document['name']!r} from {path}")
        for warning in stored.warnings:
            console.print(f"  [yellow]warning:[/yellow] {warning}")
    return status


def _events_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    publish = actions.add_parser(
        "publish", help="publish events (a JSON object or a list of them; '-' reads stdin)"
    )
    publish.add_argument("files", nargs="+", metavar="FILE")


def events(args: argparse.Namespace, settings: Settings) -> int:
    """Publish events to the EVENTS stream; a missing id or occurred is filled in."""
    from svc.client import complete_event, publish_events

    batch = []
    for path in args.files:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        document = json.loads(text)
        batch += document if isinstance(document, list) else [document]
    ids = asyncio.run(publish_events(settings, [complete_event(e) for e in batch]))
    for event_id in ids:
        print(f"published {event_id}")
    return 0


def _actions_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    tail = actions.add_parser("tail", help="print triggered actions as they are published")
    tail.add_argument("--from-start", action="store_true", help="begin at the stream's start")
    tail.add_argument("--json", action="store_true", help="print each action's whole JSON")


def actions(args: argparse.Namespace, settings: Settings) -> int:
    """Follow the ACTIONS stream."""
    from svc.client import tail_actions
    from svc.conformance import summarize

    async def follow() -> None:
        async for subject, action in tail_actions(settings, from_start=args.from_start):
            print(json.dumps(action) if args.json else f"{subject}  {summarize(action)}")

    asyncio.run(follow())
    return 0


def _conformance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="scenario files, or folders of them"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only failures and the summary"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="run end to end against the running service (NATS_URL, TRIGGERS_GRPC_ADDRESS)",
    )


def conformance(args: argparse.Namespace, settings: Settings) -> int:
    """Run scenario files through the engine in-process (fake clock, real Redis)."""
    from svc.conformance import run_files, run_files_live

    if args.live:
        if settings.nats_url is None:
            print("error: --live needs NATS_URL (and TRIGGERS_GRPC_ADDRESS)", file=sys.stderr)
            return 2
        return asyncio.run(run_files_live(settings, args.files, quiet=args.quiet))
    with contextlib.ExitStack() as stack:
        redis_url = settings.redis_url
        if redis_url is None:
            redis_url = stack.enter_context(RedisServer()).url
        return asyncio.run(run_files(redis_url, args.files, quiet=args.quiet))


COMMANDS: tuple[Command, ...] = (
    Command(
        name="run",
        help="run the service, starting embedded NATS and Redis where no URL is set",
        run=run,
        add_arguments=_run_arguments,
    ),
    Command(
        name="automations",
        help="load, list, get, delete, enable, disable automations; reset or show state",
        run=automations,
        add_arguments=_automations_arguments,
    ),
    Command(
        name="events",
        help="publish events to the events stream",
        run=events,
        add_arguments=_events_arguments,
    ),
    Command(
        name="actions",
        help="follow the triggered actions the service publishes",
        run=actions,
        add_arguments=_actions_arguments,
    ),
    Command(
        name="conformance",
        help="run conformance scenario files through the engine in-process "
        "(fake clock, real Redis; embedded when REDIS_URL is not set)",
        run=conformance,
        add_arguments=_conformance_arguments,
    ),
    Command(
        name="crash-test",
        help="run the crash harness: a known workload through replicas that are SIGKILLed, "
        "and Redis and NATS restarted; compare the actions published with the calm run",
        run=crash_command.run,
        add_arguments=crash_command.add_arguments,
    ),
    Command(
        name="health",
        help="ask a replica's health service whether it serves (exit 0 when SERVING): for "
        "exec probes and compose health checks",
        run=health_probe.run,
        add_arguments=health_probe.add_arguments,
    ),
    Command(
        name="explain",
        help="explain what one event would do against one automation's current state "
        "(a dry run through the admin API: nothing changes)",
        run=explain,
        add_arguments=explain_arguments,
    ),
    Command(
        name="why",
        help="list an automation's recorded decisions and why (from the decisions stream)",
        run=why,
        add_arguments=why_arguments,
    ),
    Command(
        name="replay",
        help="replay the events stream's history through automation files in isolation and "
        "print the firings that would have happened",
        run=replay,
        add_arguments=replay_arguments,
    ),
    Command(
        name="bench",
        help="benchmark the service on generated workloads against a bare fetch-and-ack "
        "ceiling (embedded NATS and Redis where no URL is set)",
        run=bench,
        add_arguments=bench_arguments,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m svc",
        description="The triggers service. Settings come from the environment (see README).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(command_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv), read the settings, run the subcommand."""
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C (KeyboardInterrupt), so a command stopped at any moment,
    # even while it starts its servers, still leaves through its `with` blocks and cleans up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return args.command_run(args, settings)
    except EmbeddedServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
