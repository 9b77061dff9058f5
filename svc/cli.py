"""The `python -m svc` command line: one function per subcommand, registered in COMMANDS."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from svc.config import Settings, SettingsError
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


def wait_for_stop_signal() -> signal.Signals:
    """Block until SIGINT or SIGTERM arrives; return which one.

    The signals are blocked and then taken with sigwait, so one that arrives at any moment
    (even before this call) is received exactly once and never interrupts other code.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return signal.Signals(signal.sigwait(STOP_SIGNALS))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Start NATS and Redis (embedded where no URL is set) and serve until told to stop."""
    with EmbeddedServers(
        nats_url=settings.nats_url, redis_url=settings.redis_url, data_dir=settings.data_dir
    ) as servers:
        for line in servers.describe():
            print(line, flush=True)
        print(
            "The triggers service itself arrives in a later change; "
            "press Ctrl-C (or send SIGTERM) to stop.",
            flush=True,
        )
        received = wait_for_stop_signal()
        print(f"{received.name} received; stopping.", flush=True)
    print("Stopped.", flush=True)
    return 0


def _conformance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="scenario files, or folders of them"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only failures and the summary"
    )


def conformance(args: argparse.Namespace, settings: Settings) -> int:
    """Run scenario files through the engine in-process (fake clock, real Redis)."""
    from svc.conformance import run_files

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
    ),
    Command(
        name="conformance",
        help="run conformance scenario files through the engine in-process "
        "(fake clock, real Redis; embedded when REDIS_URL is not set)",
        run=conformance,
        add_arguments=_conformance_arguments,
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
