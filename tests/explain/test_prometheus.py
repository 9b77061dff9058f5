"""Metrics served for Prometheus scraping (TRIGGERS_PROMETHEUS_ADDRESS) by the real service,
and the Grafana dashboard in deploy/ asking only for metrics that are served."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

import pytest

from svc.telemetry import configure_telemetry
from tests.explain.support import (
    automation,
    event,
    reactive,
    running_service,
    settings_for,
)
from tests.helpers import eventually

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"

pytestmark = pytest.mark.timeout(120)


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        return answer.read().decode()


async def test_the_service_serves_its_metrics_for_prometheus(
    nats_url: str, redis_url: str, suffix: str
) -> None:
    telemetry = configure_telemetry(prometheus_address="127.0.0.1:0", set_global=False)
    try:
        settings = settings_for(nats_url, redis_url, suffix)
        async with running_service(settings, telemetry.instruments) as live:
            await live.admin.load(automation(reactive()))
            await live.publish(event())
            await live.publish({"event": "bad"})  # no resource: dead-lettered
            await live.settled()
            address = telemetry.prometheus.address  # type: ignore[union-attr]

            async def counted() -> bool:
                text = await asyncio.to_thread(scrape, address)
                return "triggers_firings_total" in text and 'decision="fired"' in text

            await eventually(counted)
            text = await asyncio.to_thread(scrape, address)
    finally:
        telemetry.shutdown()
    # the event, and the automation's own triggered event back from the bus
    assert re.search(r'triggers_events_total\{[^}]*outcome="evaluated"[^}]*\} [12]\.0', text)
    assert re.search(r'triggers_events_total\{[^}]*outcome="dead_letter"[^}]*\} 1\.0', text)
    assert re.search(r"triggers_events_dead_lettered_total\{[^}]*\} 1\.0", text)
    assert re.search(r"triggers_firings_total\{[^}]*\} 1\.0", text)
    assert re.search(r'triggers_decisions_total\{decision="counted"', text)
    assert 'triggers_evaluation_duration_seconds_bucket{le="0.005"' in text
    assert "triggers_consumer_lag" in text
    served = set(re.findall(r"^(triggers_\w+?)(?:_bucket|_count|_sum)?\{", text, re.MULTILINE))
    asked = set(re.findall(r"triggers_\w+", DASHBOARD.read_text()))
    asked = {re.sub(r"_(bucket|count|sum)$", "", name) for name in asked}
    assert asked <= served, asked - served


def test_the_dashboard_is_valid_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    assert all(panel["targets"] for panel in dashboard["panels"])
