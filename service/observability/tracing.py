"""OpenTelemetry traces: one trace from ``POST /v1/jobs`` through the Celery message to the worker's
training spans, and one per sampled inference request with its batched forward pass.

Off unless an exporter is configured by the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or ``OTEL_TRACES_EXPORTER``); ``OTEL_SDK_DISABLED=true`` turns it
off again. With it off, the spans below are OpenTelemetry's no-op spans.

What is traced is decided before any span exists, by :func:`decide`, before FastAPI's own telemetry
(service/observability/telemetry.py's ``TracedFastAPI``): inference requests (``/predict``, ``/forecast``, ``/v2/``) at ``TRAINSERVE_TRACE_INFERENCE_SHARE``
(and always when the caller sent a sampled ``traceparent``), every other request, and no probe or scrape.
An untraced request never meets OpenTelemetry. The sampler then
follows the parent, starts traces only at requests and Celery messages, and drops spans that would begin a
trace of their own (a reconciler's SQL query, say).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind

log = logging.getLogger(__name__)
tracer = trace.get_tracer("trainserve")

INFERENCE_PREFIXES = ("/predict", "/forecast", "/v2/")
NEVER_TRACED = frozenset({"/healthz", "/readyz", "/metrics"})
_provider = None  # this process's TracerProvider, once configured


def exporter_configured(environ=os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporter(name: str):
    if name in ("", "otlp"):
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL",
                                                                                     "http/protobuf"))
        if protocol != "http/protobuf":
            raise SystemExit(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: trainserve sends OTLP over HTTP; set it to "
                             "http/protobuf (the collector's port 4318)")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    # Any other exporter that registers itself under OpenTelemetry's entry point group, such as Azure
    # Monitor's (docs/observability.md).
    from importlib.metadata import entry_points

    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise SystemExit(f"OTEL_TRACES_EXPORTER={name}: no such exporter is installed; use otlp or console, or "
                         "install the package that provides it")
    return next(iter(found)).load()()


def configure(service_name: str, exporter=None):
    """Set this process's tracer provider when an exporter is configured (or given: the tests' in-memory
    one); returns the provider, or None when tracing is off. Once per process."""
    global _provider
    if _provider is not None:
        return _provider
    if exporter is None and not exporter_configured():
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name})
    provider = TracerProvider(resource=resource, sampler=RequestsAndMessages())
    # A BatchSpanProcessor restarts its thread in a forked child (Celery's prefork pool).
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if n.strip()]
    for one in [exporter] if exporter is not None else [_exporter(n) for n in names]:
        provider.add_span_processor(BatchSpanProcessor(one))
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    CeleryInstrumentor().instrument(tracer_provider=provider)
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider, enable_commenter=False)
    _provider = provider
    log.info("tracing on: %s, sampled by trainserve (docs/observability.md)", ", ".join(names) or "in memory")
    return provider


def flush(timeout_ms: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_ms)


class RequestsAndMessages(Sampler):
    """A sampler: follow the parent; with none, trace the requests the middleware let through and the Celery
    messages (server, producer and consumer spans), and nothing else."""

    ROOTS = (SpanKind.SERVER, SpanKind.PRODUCER, SpanKind.CONSUMER)

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None):
        parent = trace.get_current_span(parent_context).get_span_context()
        if parent.is_valid:
            sampled = parent.trace_flags.sampled
        else:
            sampled = kind in self.ROOTS
        return SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP, attributes,
                              parent.trace_state if parent.is_valid else None)

    def get_description(self) -> str:
        return "trainserve.RequestsAndMessages"


def decide(path: str, headers, inference_share: float) -> bool:
    """Whether the API traces this request (asked before any span exists)."""
    if path in NEVER_TRACED:
        return False
    if not path.startswith(INFERENCE_PREFIXES):
        return True
    for name, value in headers:
        if name == b"traceparent":
            return value.endswith(b"-01")  # the caller's sampling decision
    return random.random() < inference_share


def fastapi_telemetry(provider) -> dict:
    """FastAPI's own OpenTelemetry support (``FastAPI(telemetry=...)``): the request's server span. Metrics
    stay Prometheus's (service/observability/metrics.py) and logs stay lines (service/observability/logs.py); FastAPI's spans for each
    dependency, endpoint and serialization are left out (they doubled a traced request's cost)."""
    return {"tracing": provider is not None, "tracer_provider": provider, "metrics": False, "logs": False,
            "operation_spans": False}


@contextlib.contextmanager
def span(name: str, **attributes) -> Iterator[trace.Span]:
    """A child span of the current one (a no-op span when tracing is off or this trace is not sampled)."""
    with tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


def record_span(name: str, start_ns: int, end_ns: int | None = None, parent: trace.Span | None = None,
                **attributes) -> None:
    """A finished span from times measured elsewhere: an epoch (timed by the training loop), or the
    forward pass a batched request shared."""
    context = trace.set_span_in_context(parent) if parent is not None else None
    done = tracer.start_span(name, context=context, start_time=start_ns, attributes=attributes)
    done.end(end_time=end_ns or time.time_ns())
