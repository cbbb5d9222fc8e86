"""The service app skeleton: error envelopes keep the request id, even for a crash."""

import logging

import httpx
from common.app import create_service_app
from common.context import request_id_var
from common.errors import Conflict
from common.settings import BaseServiceSettings
from fastapi import APIRouter

router = APIRouter()


@router.get("/boom")
async def boom():
    raise RuntimeError("secret internals")


@router.get("/conflict")
async def conflict():
    raise Conflict("Already there", code="DUPLICATE", details={"field": "email"})


async def call(path: str) -> httpx.Response:
    app = create_service_app(
        BaseServiceSettings(service_name="billing"), title="t", description="d", routers=[router]
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get(path, headers={"X-Request-ID": "rid-500-test"})


async def test_an_unexpected_error_is_a_500_envelope_with_the_request_id_and_no_internals():
    r = await call("/boom")
    assert r.status_code == 500
    body = r.json()
    assert body == {
        "success": False, "message": "Internal server error", "code": "INTERNAL_ERROR",
        "details": None, "requestId": "rid-500-test",
    }
    assert r.headers["x-request-id"] == "rid-500-test"
    assert "secret internals" not in r.text


async def test_an_app_error_renders_its_status_code_and_details():
    r = await call("/conflict")
    assert r.status_code == 409
    assert r.json()["code"] == "DUPLICATE" and r.json()["details"] == {"field": "email"}


@router.get("/hello")
async def hello():
    from common.observability.tracing import current_ids

    trace_id, _ = current_ids()
    return {"rid": request_id_var.get(), "trace": trace_id}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_request_ids_trace_context_access_log_and_metrics():
    from common.observability import metrics

    access = _Records()
    logging.getLogger("switchboard.access").addHandler(access)

    app = create_service_app(
        BaseServiceSettings(service_name="billing"), title="t", description="d", routers=[router]
    )
    parent = "0af7651916cd43dd8448eb211c80319c"
    served = metrics.HTTP_REQUESTS.labels("GET", "/hello", "200")
    before = served._value.get()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            given = await client.get(
                "/hello", headers={"X-Request-ID": "rid-ok.1", "traceparent": f"00-{parent}-b7ad6b7169203331-01"}
            )
            fresh = await client.get("/hello", headers={"X-Request-ID": "bad id!"})
            missing = await client.get("/nowhere")
    logging.getLogger("switchboard.access").removeHandler(access)
    # The caller's request id is kept and echoed once; a bad one is replaced by a new one.
    assert given.headers.get_list("x-request-id") == ["rid-ok.1"]
    assert given.json() == {"rid": "rid-ok.1", "trace": parent}
    assert fresh.json()["rid"] == fresh.headers["x-request-id"] != "bad id!"
    assert len(fresh.headers["x-request-id"]) == 32
    # Errors from the framework keep the envelope and the request id.
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    assert missing.json()["requestId"] == missing.headers["x-request-id"]
    assert [(r.method, r.path, r.status) for r in access.records] == [
        ("GET", "/hello", 200), ("GET", "/hello", 200), ("GET", "/nowhere", 404)
    ]
    assert served._value.get() == before + 2
