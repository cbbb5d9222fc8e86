"""Prometheus metrics shared by every service (names are stable: dashboards use them)."""

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "sb_http_requests_total", "HTTP requests handled", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "sb_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_PUBLISHED = Counter("sb_events_published_total", "Outbox rows published", ["topic"])
EVENTS_CONSUMED = Counter(
    "sb_events_consumed_total",
    "Events seen by consumers, by outcome (handled, duplicate, dead_lettered)",
    ["group", "type", "outcome"],
)
