"""`python -m svc crash-test`: the crash harness from the command line, for longer runs than
the test's; prints the figures and exits 1 if anything was lost or published twice."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from svc.config import Settings
from svc.crash.options import CrashOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = CrashOptions()
    parser.add_argument("--seed", type=int, default=d.seed, help="workload and fault seed")
    parser.add_argument("--replicas", type=int, default=d.replicas)
    parser.add_argument("--automations", type=int, default=d.automations)
    parser.add_argument("--duration", type=float, default=d.duration_s,
                        help="seconds over which events are published")
    parser.add_argument("--proactive-within", type=float, default=d.proactive_within_s,
                        help="window of the proactive automations, in seconds")
    parser.add_argument("--kills", type=int, default=d.kills, help="replica SIGKILLs")
    parser.add_argument("--redis-restarts", type=int, default=d.redis_restarts)
    parser.add_argument("--nats-restarts", type=int, default=d.nats_restarts)
    parser.add_argument("--server-down", type=float, default=d.server_down_s,
                        help="seconds a killed server stays down")
    parser.add_argument("--settle-timeout", type=float, default=d.settle_timeout_s)
    parser.add_argument("--data-dir", type=Path, help="keep servers' data and replicas' logs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the harness (it starts its own servers; NATS_URL and REDIS_URL are not used)."""
    from svc.crash.harness import run_crash_test

    options = CrashOptions(
        seed=args.seed,
        replicas=args.replicas,
        automations=args.automations,
        duration_s=args.duration,
        proactive_within_s=args.proactive_within,
        kills=args.kills,
        redis_restarts=args.redis_restarts,
        nats_restarts=args.nats_restarts,
        server_down_s=args.server_down,
        settle_timeout_s=args.settle_timeout,
        data_dir=args.data_dir,
    )
    figures = asyncio.run(run_crash_test(options, say=lambda line: print(line, flush=True)))
    if args.json is not None:
        args.json.write_text(json.dumps(figures.to_json(), indent=2) + "\n")
    return 0 if figures.ok else 1
