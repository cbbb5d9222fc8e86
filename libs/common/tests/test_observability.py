"""Trace context and request ids leave the process on outgoing HTTP and arrive in the logs."""

import json
import logging

import httpx
from common.context import request_id_var
from common.http import http_client
from common.observability.logging import JsonFormatter
from common.observability.tracing import current_traceparent, setup_tracing
from common.settings import BaseServiceSettings
from opentelemetry import trace

setup_tracing(BaseServiceSettings(service_name="test"))
tracer = trace.get_tracer("test")


async def test_outgoing_requests_carry_traceparent_and_request_id():
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    token = request_id_var.set("rid-123")
    try:
        with tracer.start_as_current_span("parent") as span:
            async with http_client(transport=httpx.MockTransport(record)) as client:
                await client.get("http://peer.invalid/x")
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        request_id_var.reset(token)
    assert seen[0].headers["x-request-id"] == "rid-123"
    assert seen[0].headers["traceparent"].split("-")[1] == trace_id


def test_json_log_lines_carry_trace_and_request_ids():
    formatter = JsonFormatter("svc")
    token = request_id_var.set("rid-9")
    try:
        with tracer.start_as_current_span("work") as span:
            record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
            record.order_id = "o-1"
            line = json.loads(formatter.format(record))
            assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
            assert current_traceparent().split("-")[1] == line["trace_id"]
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "hello you" and line["request_id"] == "rid-9"
    assert line["service"] == "svc" and line["order_id"] == "o-1"
