"""What a crash run does: the workload's size, the replicas and the faults (no heavy imports,
so the command line can show the defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CrashOptions:
    """One crash run: the workload, the replicas and the faults."""

    seed: int = 1
    replicas: int = 3
    automations: int = 300
    duration_s: float = 30.0  # events are published over this long
    proactive_within_s: float = 20.0
    kills: int = 8  # replica SIGKILLs, at random moments while events flow
    redis_restarts: int = 1
    nats_restarts: int = 1
    server_down_s: float = 1.0  # how long a killed server stays down
    settle_timeout_s: float = 120.0
    data_dir: Path | None = None  # servers' data and replicas' logs (a temporary one if None)
