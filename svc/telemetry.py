"""OpenTelemetry for the service: providers, exporters and the few instruments it records.

The engine and the bus use only the OpenTelemetry API (a no-op until a provider is set);
this module sets the providers up, once, in `svc run`, from the standard OTEL_* choices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

INSTRUMENTATION = "svc"
EXPORTERS = ("otlp", "console", "none")
# Bucket bounds of the evaluation-duration histogram: a batch takes milliseconds to seconds
# (the SDK's default bounds are meant for milliseconds).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class TelemetryError(ValueError):
    """An exporter choice the service does not know."""


def _span_exporter(name: str) -> SpanExporter | None:
    if name == "otlp":
        # The exporter reads OTEL_EXPORTER_OTLP_* (endpoint, headers, protocol) itself.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        return ConsoleSpanExporter()
    return None


def _metric_reader(name: str, interval_ms: int) -> MetricReader | None:
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return PeriodicExportingMetricReader(OTLPMetricExporter(), interval_ms)
    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter(), interval_ms)
    return None


@dataclass
class Instruments:
    """The service's metrics (SEMANTICS-independent names, `triggers.` prefixed)."""

    meter: metrics.Meter
    events: metrics.Counter = field(init=False)
    dead_lettered: metrics.Counter = field(init=False)
    firings: metrics.Counter = field(init=False)
    decisions: metrics.Counter = field(init=False)
    evaluation_latency_s: metrics.Histogram = field(init=False)
    _lag_sources: list[Callable[[], int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events = self.meter.create_counter(
            "triggers.events", unit="{event}", description="event messages taken in, by outcome"
        )
        self.dead_lettered = self.meter.create_counter(
            "triggers.events.dead_lettered",
            unit="{event}",
            description="event messages that could not be decoded or validated",
        )
        self.firings = self.meter.create_counter(
            "triggers.firings", unit="{firing}", description="top-level firings acted upon"
        )
        self.decisions = self.meter.create_counter(
            "triggers.decisions",
            unit="{step}",
            description="steps of the bucket state machine decided (counted, fired, too_early, "
            "duplicate...), by step; recorded while decision records are on",
        )
        self.evaluation_latency_s = self.meter.create_histogram(
            "triggers.evaluation.duration",
            unit="s",
            description="time to evaluate one fetched batch, from fetch to durable effects",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.meter.create_observable_gauge(
            "triggers.consumer.lag",
            callbacks=[self._observe_lag],
            unit="{message}",
            description="messages in the events stream not yet delivered to the consumer",
        )

    def observe_lag(self, source: Callable[[], int]) -> None:
        self._lag_sources.append(source)

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(source()) for source in self._lag_sources]


class PrometheusEndpoint:
    """`/metrics` for Prometheus scraping, on its own registry (no process-wide state) and
    its own HTTP server thread; `address` is where it listens (port 0 picks a free one)."""

    def __init__(self, address: str):
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server

        host, _, port = address.rpartition(":")
        self.registry = CollectorRegistry()
        self.reader = PrometheusMetricReader(registry=self.registry)
        self._server, self._thread = start_http_server(int(port), host, registry=self.registry)
        self.address = f"{host}:{self._server.server_port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    instruments: Instruments
    prometheus: PrometheusEndpoint | None = None

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        if self.prometheus is not None:
            self.prometheus.stop()


def configure_telemetry(
    *,
    service_name: str = "triggers",
    traces_exporter: str = "none",
    metrics_exporter: str = "none",
    metric_interval_ms: int = 10_000,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
    set_global: bool = True,
    prometheus_address: str | None = None,
) -> Telemetry:
    """Build the providers; extra exporters/readers (tests: in-memory ones) are added as is.
    With `prometheus_address` (`host:port`), metrics are also served there for scraping."""
    for choice in (traces_exporter, metrics_exporter):
        if choice not in EXPORTERS:
            raise TelemetryError(f"unknown exporter {choice!r}; use one of {', '.join(EXPORTERS)}")
    resource = Resource.create({"service.name": service_name})
    exporter = _span_exporter(traces_exporter)
    # Spans nothing exports are sampled out, and the engine, seeing ALWAYS_OFF, makes none:
    # an event's own trace context carries on to its actions (docs/performance.md).
    exported = exporter is not None or bool(span_exporters)
    tracer_provider = TracerProvider(resource=resource, sampler=None if exported else ALWAYS_OFF)
    if exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    for extra in span_exporters:
        tracer_provider.add_span_processor(SimpleSpanProcessor(extra))
    readers = list(metric_readers)
    reader = _metric_reader(metrics_exporter, metric_interval_ms)
    if reader is not None:
        readers.append(reader)
    prometheus = None if prometheus_address is None else PrometheusEndpoint(prometheus_address)
    if prometheus is not None:
        readers.append(prometheus.reader)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    instruments = Instruments(meter_provider.get_meter(INSTRUMENTATION))
    return Telemetry(tracer_provider, meter_provider, instruments, prometheus)
