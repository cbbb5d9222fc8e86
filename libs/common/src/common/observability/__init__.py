"""Structured logs, OpenTelemetry tracing (HTTP + Kafka), Prometheus metrics."""
