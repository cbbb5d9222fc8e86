"""The FastAPI app every service starts from: lifespan-built state, middleware, health, metrics."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.auth import CurrentPrincipal, TokenVerifier
from common.context import request_id_var
from common.db import create_engine, create_session_factory
from common.errors import error_body, install_error_handlers
from common.messaging.kafka import KafkaProbe
from common.observability import metrics
from common.observability.logging import setup_logging
from common.observability.tracing import server_span, setup_tracing
from common.runtime import freeze_startup_heap
from common.settings import BaseServiceSettings

access_log = logging.getLogger("switchboard.access")
_QUIET_PATHS = {"/health", "/ready", "/metrics"}
Hook = Callable[[FastAPI], Awaitable[Any]]
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
_RID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _request_id(header: str | None) -> str:
    if header and len(header) <= 128 and set(header) <= _RID_OK:
        return header
    return uuid.uuid4().hex


def _url_path(scope: Scope) -> str:
    """What `Request(scope).url.path` is, without building the URL."""
    return scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def _trace_headers(headers: Any) -> dict[str, str]:
    """The headers trace context propagation reads (first value of each, as Request.headers)."""
    out: dict[str, str] = {}
    for key, value in headers:
        if key in _TRACE_HEADERS:
            name = key.decode("latin-1")
            if name not in out:
                out[name] = value.decode("latin-1")
    return out


class ObserveMiddleware:
    """Per HTTP request: the request id (the caller's `X-Request-ID` if sane, else a new one) in
    the context and on the response, a server span (continuing the caller's trace), the access
    log line, the HTTP metrics, and a 500 in the error envelope for an unhandled error.

    Plain ASGI (not BaseHTTPMiddleware): no extra task, no response re-streaming per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                header = value.decode("latin-1")
                break
        rid = _request_id(header)
        rid_header = (b"x-request-id", rid.encode("latin-1"))
        token = request_id_var.set(rid)
        start = time.perf_counter()
        method = scope["method"]
        path = _url_path(scope)
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                headers.append(rid_header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            with server_span(f"{method} {path}", _trace_headers(scope["headers"])):
                try:
                    await self.app(scope, receive, send_wrapper)
                except Exception:  # noqa: BLE001 - rendered here, while the request id is known
                    access_log.exception("unhandled error")
                    if started:
                        raise
                    status = 500
                    response = JSONResponse(error_body("Internal server error", "INTERNAL_ERROR"), status_code=500)
                    await response(scope, receive, send_wrapper)
                if path not in _QUIET_PATHS:
                    access_log.info(
                        "request",
                        extra={
                            "method": method,
                            "path": path,
                            "status": status,
                            "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                        },
                    )
        finally:
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            metrics.HTTP_REQUESTS.labels(method, route_path, str(status)).inc()
            metrics.HTTP_LATENCY.labels(method, route_path).observe(time.perf_counter() - start)
            request_id_var.reset(token)


def redis_client(settings: BaseServiceSettings, *, timeout_s: float = 2.0, retries: int = 3) -> aioredis.Redis:
    """A Redis client that reconnects by itself: after a Redis restart the pooled connections
    are stale, and the first command on each would otherwise fail. A caller with a fallback of
    its own (messaging's provider buckets) asks for a short timeout and no retries."""
    return aioredis.from_url(
        settings.redis_url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def metrics_registry() -> CollectorRegistry:
    """What /metrics reports: this process's metrics, or, when the API runs several processes
    (uvicorn --workers, with PROMETHEUS_MULTIPROC_DIR set and emptied before they start), the
    sum over all of them, whichever process answers the scrape."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


async def app_settings(request: Request) -> Any:
    """Dependency: the settings the service's app was built with. (Dependencies are `async def`
    on purpose: FastAPI runs a plain `def` dependency in the thread pool, a thread hop per call.)"""
    return request.app.state.settings


def create_service_app(
    settings: BaseServiceSettings,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter] = (),
    on_startup: Sequence[Hook] = (),
) -> FastAPI:
    """Build a service app. State (engine, sessions, redis, verifier) is created in lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        setup_logging(settings)
        setup_tracing(settings)
        engine = create_engine(settings)
        app.state.settings = settings
        app.state.engine = engine
        app.state.session_factory = create_session_factory(engine, settings)
        app.state.redis = redis_client(settings)
        app.state.kafka_probe = KafkaProbe(settings)
        app.state.token_verifier = TokenVerifier(settings)
        try:
            # The hooks' closers run first, while the engine and redis still serve them.
            async with AsyncExitStack() as stack:
                for hook in on_startup:
                    result = await hook(app)
                    if hasattr(result, "__aexit__"):
                        await stack.enter_async_context(result)
                freeze_startup_heap()  # full collections would stall every request in flight
                yield
        finally:
            await app.state.kafka_probe.close()
            await app.state.redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        # FastAPI's own OpenTelemetry layer would add a second server span (and metrics and
        # log hooks) per request next to ours (the middleware below): 5-8 % of a request's CPU.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_error_handlers(app)

    app.add_middleware(ObserveMiddleware)

    @app.get("/health", tags=["ops"], include_in_schema=False)
    async def health() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"success": True, "data": {"status": "ok", "service": settings.service_name}}

    @app.get("/ready", tags=["ops"], include_in_schema=False)
    async def ready(request: Request) -> JSONResponse:
        """Readiness: the service's schema is migrated, Redis and Kafka answer."""
        checks: dict[str, str] = {}
        try:
            async with request.app.state.engine.connect() as conn:
                await conn.execute(
                    text(f'SELECT version_num FROM "{settings.db_schema}".alembic_version')
                )
            checks["postgres"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["postgres"] = f"error: {type(exc).__name__}"
        try:
            await request.app.state.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {type(exc).__name__}"
        try:
            await request.app.state.kafka_probe.check()
            checks["kafka"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["kafka"] = f"error: {type(exc).__name__}"
        healthy = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if healthy else "not_ready", "checks": checks}
        if healthy:
            return JSONResponse({"success": True, "data": body})
        return JSONResponse(
            {"success": False, "message": "Not ready", "code": "NOT_READY", "details": body},
            status_code=503,
        )

    @app.get("/whoami", tags=["ops"])
    async def whoami(principal: CurrentPrincipal) -> dict[str, Any]:
        """The caller as this service sees their token (every service verifies tokens itself)."""
        return {
            "success": True,
            "data": {
                "userId": principal.user_id,
                "tenantId": principal.tenant_id,
                "roles": list(principal.roles),
                "isPlatformAdmin": principal.is_platform_admin,
            },
        }

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app
