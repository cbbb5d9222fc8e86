"""The service app skeleton: error envelopes keep the request id, even for a crash."""

import httpx
from common.app import create_service_app
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
