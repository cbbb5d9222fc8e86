"""Outgoing HTTP: one httpx client factory that carries the trace and request id downstream."""

from __future__ import annotations

from typing import Any

import httpx

from common.context import request_id_var
from common.observability.tracing import current_traceparent


async def _propagate(request: httpx.Request) -> None:
    traceparent = current_traceparent()
    if traceparent and "traceparent" not in request.headers:
        request.headers["traceparent"] = traceparent
    rid = request_id_var.get()
    if rid and "x-request-id" not in request.headers:
        request.headers["X-Request-ID"] = rid


def http_client(**kwargs: Any) -> httpx.AsyncClient:
    """An AsyncClient whose requests carry `traceparent` and `X-Request-ID` from the context."""
    hooks = kwargs.pop("event_hooks", {}) or {}
    hooks = {**hooks, "request": [_propagate, *hooks.get("request", [])]}
    kwargs.setdefault("timeout", 10.0)
    return httpx.AsyncClient(event_hooks=hooks, **kwargs)
