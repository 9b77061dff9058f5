"""`python -m svc bench`: run the benchmark, print its table, write its figures as JSON.

Imports stay light at module level: the CLI registry imports this module for every command.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svc.config import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from svc.bench.runner import Report

WORKLOAD_NAMES = ("no-match", "one-match", "sla", "composite")
# Columns of the report when it does not go to a terminal (a file, a pipe, a test's capture).
REPORT_WIDTH = 190


def bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: proves the benchmark works, in a minute"
    )
    parser.add_argument("--out", metavar="FILE", help="write the figures as JSON to FILE")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="WORKLOAD",
        help="run only this workload (repeatable): "
        + ", ".join(WORKLOAD_NAMES)
        + " (all no-match sizes), or one size, e.g. no-match-1000; one-match runs with "
        "decision records on (the default) and again off (one-match-no-decisions)",
    )
    parser.add_argument(
        "--fetch-batch", type=int, help="override TRIGGERS_FETCH_BATCH for service and ceiling"
    )


def bench(args: argparse.Namespace, settings: Settings) -> int:
    """Run the benchmark on embedded NATS and Redis unless NATS_URL / REDIS_URL are set."""
    from rich.console import Console

    from svc.bench.runner import run_bench
    from svc.bench.workloads import FULL, QUICK
    from svc.embedded import EmbeddedServers

    if args.fetch_batch:
        settings = dataclasses.replace(settings, fetch_batch=args.fetch_batch)
    console = Console(stderr=True)
    # the workloads create and delete many streams: their INFO lines would drown the progress
    logging.getLogger("svc").setLevel(logging.WARNING)
    sizes = QUICK if args.quick else FULL
    with EmbeddedServers(nats_url=settings.nats_url, redis_url=settings.redis_url) as servers:
        settings = dataclasses.replace(
            settings, nats_url=servers.nats_url, redis_url=servers.redis_url
        )
        pids = {
            name: server.pid
            for name, server in (("nats", servers.nats), ("redis", servers.redis))
            if server is not None and server.pid
        }
        report = asyncio.run(
            run_bench(settings, sizes, console, quick=args.quick, only=args.only, server_pids=pids)
        )
    out = Console()
    if not out.is_terminal:
        out = Console(width=REPORT_WIDTH)
    print_report(report, out)
    if args.out:
        Path(args.out).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        console.print(f"figures written to {args.out}")
    return 0


def _fmt(value: float | None, digits: int = 0, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    return f"{value * scale:,.{digits}f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+,.1f}"


def print_report(report: Report, console: Console) -> None:
    from rich.table import Table

    machine = report.machine
    console.print(
        f"{machine['cpu']} x{machine['cpus']}, {machine['memory_gb']} GB, {machine['os']}, "
        f"Python {machine['python']}, nats-server {machine['nats_server']}, "
        f"redis {machine['redis_server']}; fetch batch {report.settings['fetch_batch']}"
        + (" (quick sizes)" if report.quick else "")
    )
    default = report.settings.get("decisions_default")
    if default is not None:
        paired = [f.workload for f in report.figures if f.decisions_enabled != default]
        console.print(
            f"decision records {'on' if default else 'off'} (the default of "
            "TRIGGERS_DECISIONS_ENABLED) in every workload"
            + (f" but {', '.join(paired)} ({'off' if default else 'on'})" if paired else "")
        )
    table = Table(title="triggers service benchmark")
    for column in (
        "workload", "automations", "events/s", "ceiling/s", "ratio", "pull ceiling/s",
        "p50 ms", "p99 ms", "RT/event", "CPU us/event", "NATS us", "Redis us", "peak RSS MB",
        "start s",
    ):  # fmt: skip
        if column == "workload":  # whole names: one-match-no-decisions is the longest
            longest = max((len(f.workload) for f in report.figures), default=8)
            table.add_column(column, no_wrap=True, min_width=longest)
        else:
            table.add_column(column, justify="right")
    for f in report.figures:
        table.add_row(
            f.workload,
            f"{f.automations:,}",
            _fmt(f.events_per_s),
            _fmt(f.ceiling_per_s),
            _fmt(f.ratio_to_ceiling, 2),
            _fmt(f.pull_ceiling_per_s),
            _fmt(f.latency_p50_ms, 1),
            _fmt(f.latency_p99_ms, 1),
            _fmt(f.round_trips_per_event, 3),
            _fmt(f.cpu_us_per_event),
            _fmt(f.nats_cpu_us_per_event),
            _fmt(f.redis_cpu_us_per_event),
            _fmt(f.peak_rss_mb),
            _fmt(f.start_s, 1),
        )
    console.print(table)
    cost = report.decisions
    if cost:
        on, off = cost["on"], cost["off"]
        console.print(
            f"decision records: {on['workload']} (on) {_fmt(on['events_per_s'])} events/s, "
            f"{_fmt(on['cpu_us_per_event'])} CPU us/event; {off['workload']} (off) "
            f"{_fmt(off['events_per_s'])} events/s, {_fmt(off['cpu_us_per_event'])} CPU "
            f"us/event. On against off: rate {_signed(cost['events_per_s_change_pct'])} %, "
            f"service CPU {_signed(cost['cpu_us_per_event_cost'])} us/event, NATS CPU "
            f"{_signed(cost['nats_cpu_us_per_event_cost'])} us/event"
            + (" (quick sizes: too small a backlog to tell them apart from noise)"
               if report.quick else "")
        )
    for f in report.figures:
        if f.ticks:
            console.print(
                f"{f.workload}: {f.ticks} periodic ticks over {f.open_buckets:,} open buckets: "
                f"slowest {_fmt(f.tick_max_s, 3)} s, mean {_fmt(f.tick_mean_s, 3)} s, "
                f"{_fmt(f.due_per_tick)} due and {_fmt(f.bucket_reads_per_tick, 1)} bucket reads "
                f"(HGETs of the proactive scripts) per tick; {_fmt(f.hgets_per_tick, 1)} HGETs "
                "in all, the events clock's included"
            )
        if f.admin_api_loads_per_s:
            console.print(
                f"{f.workload}: the admin API loads {_fmt(f.admin_api_loads_per_s)} "
                f"automations/s one by one; the bulk KV write took {_fmt(f.kv_write_s, 1)} s"
            )
    targets = Table(title="targets")
    for column in ("target", "value", "limit", "met"):
        targets.add_column(column)
    for t in report.targets:
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}[t["met"]]
        limit = "-" if t["limit"] is None else f"{t['limit']:,} {t['unit']}".strip()
        targets.add_row(t["target"], _value(t), limit, met)
    console.print(targets)


def _value(target: dict[str, Any]) -> str:
    value = target["value"]
    if value is None:
        return "-"
    if abs(value) < 100:
        return f"{value:,.3g} {target['unit']}".strip()
    return f"{value:,.0f}"
