"""Traces and metrics of the running Service (DESIGN, "observability"; STYLE, telemetry):
trace context travels in NATS headers from the event, through its evaluation, to the
triggered action, and the instruments of svc.telemetry are recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from svc.service import Service
from svc.telemetry import Telemetry, configure_telemetry
from tests.helpers import eventually
from tests.service.support import (
    event_document,
    publish,
    reactive_automation,
    settle,
    stream_messages,
)

EVENT = "tele.happened"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
async def telemetry(
    exporter: InMemorySpanExporter, reader: InMemoryMetricReader
) -> AsyncIterator[Telemetry]:
    """The service's own providers with in-memory exporters; not installed globally."""
    telemetry = configure_telemetry(
        span_exporters=[exporter], metric_readers=[reader], set_global=False
    )
    try:
        yield telemetry
    finally:
        telemetry.shutdown()


@pytest.fixture
async def service(start_service, telemetry: Telemetry) -> Service:
    return await start_service(
        tracer_provider=telemetry.tracer_provider, instruments=telemetry.instruments
    )


def automations() -> dict[str, dict[str, Any]]:
    """One automation per decision the event below leads to."""
    return {
        "fired": reactive_automation(EVENT),
        "counted": reactive_automation(EVENT, threshold=2, within=600),
        "not_covered": reactive_automation(
            EVENT, trigger={"match": {"prefect.resource.id": "elsewhere.*"}}
        ),
        "armed": reactive_automation(
            "tele.done",
            trigger={"posture": "Proactive", "after": [EVENT], "within": 600},
        ),
    }


def only(spans: list[ReadableSpan], what: str, condition: Callable[[ReadableSpan], bool]):
    found = [s for s in spans if condition(s)]
    assert len(found) == 1, f"expected one {what}, found {len(found)}"
    return found[0]


async def test_trace_context_travels_from_the_event_to_the_triggered_action(
    service, admin_of, js, settings, exporter
) -> None:
    """The "evaluate event" span continues the producer's trace and records one "trigger
    decision" per candidate trigger; "act" and "publish" are under it, and the action
    message carries the trace on."""
    admin = admin_of(service)
    loaded = automations()
    trigger_ids = {}
    for decision, document in loaded.items():
        stored = await admin.load(document)
        trigger_ids[stored.document["trigger"]["id"]] = decision
    producer = TracerProvider().get_tracer("test producer")
    event = event_document(EVENT)
    headers: dict[str, str] = {}
    with producer.start_as_current_span("produce event") as produced:
        propagate.inject(headers)
        await publish(js, settings, event, headers=headers)
    trace_id = produced.get_span_context().trace_id

    def evaluation() -> ReadableSpan | None:
        spans = [
            s
            for s in exporter.get_finished_spans()
            if s.name == "evaluate event" and s.attributes.get("event.id") == event["id"]
        ]
        return spans[0] if spans else None

    evaluated = await eventually(evaluation, "the event's evaluation span")
    assert evaluated.context.trace_id == trace_id
    assert evaluated.parent is not None
    assert evaluated.parent.span_id == produced.get_span_context().span_id
    assert evaluated.attributes["event.name"] == EVENT
    assert evaluated.attributes["intake.outcome"] == "evaluated"
    decisions = {
        trigger_ids[e.attributes["trigger.id"]]: str(e.attributes["decision"]).split()
        for e in evaluated.events
        if e.name == "trigger decision"
    }
    assert sorted(decisions) == sorted(loaded)
    for expected, steps in decisions.items():
        assert expected in steps, f"{expected}: {steps}"

    spans = exporter.get_finished_spans()
    act = only(spans, "act span", lambda s: s.name == "act")
    assert act.parent is not None and act.parent.span_id == evaluated.context.span_id
    assert act.attributes["automation.id"] == loaded["fired"]["id"]
    published = only(spans, "publish span", lambda s: s.name == "publish")
    assert published.parent is not None and published.parent.span_id == act.context.span_id

    await settle(js, settings)
    (action,) = await stream_messages(js, settings.actions_stream)
    assert action.json()["automation"]["id"] == loaded["fired"]["id"]
    version, action_trace, parent_span, _ = action.headers["traceparent"].split("-")
    assert action_trace == format_trace_id(trace_id)
    assert parent_span == format_span_id(published.context.span_id)


async def test_with_traces_not_exported_the_action_still_carries_the_events_trace(
    start_service, admin_of, js, settings
) -> None:
    """Nothing exports spans, so the service makes none: the triggered action continues the
    producer's trace, as a child of the producer's span, with its flags."""
    telemetry = configure_telemetry(set_global=False)
    try:
        service = await start_service(tracer_provider=telemetry.tracer_provider)
        await admin_of(service).load(reactive_automation(EVENT))
        producer = TracerProvider().get_tracer("test producer")
        headers: dict[str, str] = {}
        with producer.start_as_current_span("produce event") as produced:
            propagate.inject(headers)
            await publish(js, settings, event_document(EVENT), headers=headers)
        await settle(js, settings)
        (action,) = await stream_messages(js, settings.actions_stream)
    finally:
        telemetry.shutdown()
    _, action_trace, parent_span, flags = action.headers["traceparent"].split("-")
    assert action_trace == format_trace_id(produced.get_span_context().trace_id)
    # no span of its own is made: the producer's is the parent
    assert parent_span == format_span_id(produced.get_span_context().span_id)
    assert flags == format(produced.get_span_context().trace_flags, "02x")


def points(data: MetricsData, name: str) -> list[Any]:
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def total(data: MetricsData, name: str, **attributes: str) -> int:
    return sum(
        p.value
        for p in points(data, name)
        if all(p.attributes.get(k) == v for k, v in attributes.items())
    )


async def test_the_service_records_its_metrics(service, admin_of, js, settings, reader) -> None:
    await admin_of(service).load(reactive_automation(EVENT))
    await publish(js, settings, event_document(EVENT))
    await publish(js, settings, b"not json at all")
    await settle(js, settings)

    data = reader.get_metrics_data()
    assert data is not None
    # the event, and the prefect.automation.triggered event its firing published back
    assert total(data, "triggers.events", outcome="evaluated") == 2
    assert total(data, "triggers.events", outcome="dead_letter") == 1
    assert total(data, "triggers.events.dead_lettered") == 1
    assert total(data, "triggers.firings") == 1
    (latency,) = points(data, "triggers.evaluation.duration")
    assert latency.count >= 1 and latency.sum > 0
    (lag,) = points(data, "triggers.consumer.lag")
    assert lag.value == 0
