"""The triggers engine: Prefect's trigger semantics over atomic Redis state."""

from svc.engine.clock import Clock, FakeClock, SystemClock
from svc.engine.engine import Engine, EngineSettings, IntakeResult, Outcome, Publisher

__all__ = [
    "Clock",
    "Engine",
    "EngineSettings",
    "FakeClock",
    "IntakeResult",
    "Outcome",
    "Publisher",
    "SystemClock",
]
