"""The `explain`, `why` and `replay` subcommands (registered in svc/cli.py's COMMANDS).

- `explain`: one event against one automation's current state, through the admin API's
  ExplainEvent (a dry run: nothing changes);
- `why`: an automation's recorded decisions, from the decisions stream;
- `replay`: the EVENTS stream's history through automations from files, in isolation.

Heavy imports happen inside the functions, so `python -m svc --help` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svc.config import Settings

if TYPE_CHECKING:
    from svc.domain.automations import Automation

# How long `why` waits for the admin API to name the automation's triggers before it shows
# their ids instead.
ADMIN_LOOKUP_TIMEOUT_S = 2.0


def _read_json(path: str) -> Any:
    return json.loads(sys.stdin.read() if path == "-" else Path(path).read_text())


# ---------------------------------------------------------------- explain


def explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--automation", required=True, metavar="ID", help="the automation's id")
    parser.add_argument(
        "--event",
        required=True,
        metavar="FILE",
        help="the event as JSON ('-' reads stdin); a missing id or occurred is filled in",
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def explain(args: argparse.Namespace, settings: Settings) -> int:
    """Ask the admin API (TRIGGERS_GRPC_ADDRESS) what the event would do; nothing changes."""
    import grpc
    from google.protobuf.json_format import MessageToJson

    from svc.client import AdminClient

    try:
        event = _read_json(args.event)
    except (OSError, ValueError) as error:
        print(f"error: {args.event}: {error}", file=sys.stderr)
        return 2

    async def ask() -> Any:
        async with AdminClient.from_settings(settings) as admin:
            return await admin.explain(args.automation, event)

    try:
        answer = asyncio.run(ask())
    except grpc.aio.AioRpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(MessageToJson(answer) if args.json else answer.text)
    return 0


# ---------------------------------------------------------------- why


def why_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--automation", required=True, metavar="ID", help="the automation's id")
    parser.add_argument(
        "--since",
        default="1h",
        help="how far back: a duration ago (90m, 1h, 2d) or an ISO 8601 time (default 1h)",
    )
    parser.add_argument("--event-id", metavar="ID", help="only the decisions about this event")
    parser.add_argument("--json", action="store_true", help="one JSON record per line")


def why(args: argparse.Namespace, settings: Settings) -> int:
    """List what the automation's triggers decided, and why, from the decisions stream."""
    from svc.replay import ReplayError, parse_moment

    if settings.nats_url is None:
        print("error: why needs NATS_URL (and TRIGGERS_GRPC_ADDRESS to name triggers)",
              file=sys.stderr)
        return 2
    try:
        since = parse_moment(args.since, datetime.now(UTC))
    except ReplayError as error:
        print(f"error: --since: {error}", file=sys.stderr)
        return 2
    return asyncio.run(_why(args, settings, since))


async def _why(args: argparse.Namespace, settings: Settings, since: datetime) -> int:
    import nats

    from svc.bus.decisions import read_decisions
    from svc.why import render_decisions

    nc = await nats.connect(settings.nats_url, name="triggers-why")
    try:
        records = [
            r
            async for r in read_decisions(
                nc.jetstream(), settings, args.automation, since=since, event_id=args.event_id
            )
        ]
    finally:
        await nc.drain()
    if args.json:
        for record in records:
            print(json.dumps(record.to_json()))
        return 0
    automation = await _automation(settings, args.automation)
    print(render_decisions(records, automation, event_id=args.event_id))
    return 0


async def _automation(settings: Settings, automation_id: str) -> Automation | None:
    """The automation's definition from the admin API, or None when it cannot be had."""
    import grpc

    from svc.client import AdminClient
    from svc.domain.automations import parse_automation
    from svc.domain.errors import InvalidAutomation

    async with AdminClient.from_settings(settings) as admin:
        try:
            await admin.wait_ready(ADMIN_LOOKUP_TIMEOUT_S)
            return parse_automation(await admin.get(automation_id))
        except (TimeoutError, grpc.aio.AioRpcError, InvalidAutomation):
            return None


# ---------------------------------------------------------------- replay


def replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--automation",
        required=True,
        action="append",
        metavar="FILE",
        help="an automation as JSON (Prefect's shape); repeat for several",
    )
    parser.add_argument(
        "--since",
        help="where the history starts: a duration ago (24h) or an ISO 8601 time "
        "(default: the stream's first event)",
    )
    parser.add_argument(
        "--until",
        help="where it ends, likewise (default: its last event, so that two runs over the "
        "same history print the same)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--redis-url",
        help="replay on this Redis, under a fresh key prefix deleted afterwards "
        "(default: an embedded redis-server of its own)",
    )


def replay(args: argparse.Namespace, settings: Settings) -> int:
    """Run the EVENTS stream's history through automations in isolation; print the firings
    that would have happened. Reads NATS only; never publishes, never touches live state."""
    from svc.domain.errors import InvalidAutomation
    from svc.embedded import RedisServer
    from svc.replay import (
        ReplayError,
        load_automation_file,
        parse_moment,
        render,
        replay_history,
    )

    if settings.nats_url is None:
        print("error: replay needs NATS_URL (it reads the events stream)", file=sys.stderr)
        return 2
    now = datetime.now(UTC)
    try:
        automations = [load_automation_file(Path(p).read_text()) for p in args.automation]
        since = None if args.since is None else parse_moment(args.since, now)
        until = None if args.until is None else parse_moment(args.until, now)
    except (OSError, ReplayError, InvalidAutomation) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        redis_url = args.redis_url or stack.enter_context(RedisServer()).url
        result = asyncio.run(
            replay_history(settings, automations, redis_url, since=since, until=until)
        )
    print(json.dumps(result.to_json(), indent=2) if args.json else render(result))
    return 0
