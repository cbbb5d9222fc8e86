"""OpenTelemetry tracing, propagated over HTTP headers and the event envelope's `traceparent`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from common.settings import BaseServiceSettings

_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("switchboard")


def setup_tracing(settings: BaseServiceSettings) -> TracerProvider:
    """Install a TracerProvider (idempotent). It has no exporter: spans give the trace and span
    ids in logs and the `traceparent` in events (an exporter is a span processor added here)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    trace.set_tracer_provider(provider)
    return provider


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def current_ids() -> tuple[str | None, str | None]:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


@contextmanager
def server_span(name: str, headers: dict[str, str]) -> Iterator[Any]:
    ctx = _propagator.extract(headers)
    with _tracer.start_as_current_span(name, context=ctx, kind=trace.SpanKind.SERVER) as span:
        yield span


@contextmanager
def consume_span(envelope: Any, group: str) -> Iterator[Any]:
    """A consumer span, child of the span that wrote the event (its envelope's traceparent)."""
    carrier = {"traceparent": envelope.traceparent} if envelope.traceparent else {}
    ctx = _propagator.extract(carrier)
    with _tracer.start_as_current_span(
        f"consume {envelope.type}",
        context=ctx,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.consumer.group.name": group,
            "cloudevents.event_id": envelope.id,
            "cloudevents.event_type": envelope.type,
        },
    ) as span:
        yield span
