"""The two apps of the auth benchmark, served by uvicorn (bench/auth_scenario.py starts them):

  uvicorn apps:create_bare_app --factory --app-dir bench ...   GET /ping, no auth (and POST /send,
      the messaging scenario's baseline: a send request's JSON parsed, 202)
  uvicorn apps:create_auth_app --factory --app-dir bench ...   GET /ping, CurrentPrincipal
  uvicorn apps:create_header_app --factory --app-dir bench ... GET /ping, a dependency that only
      reads the bearer header (diagnostics: what auth would cost with a verified-token cache)

They differ only in the dependency: the same FastAPI app, the same error handlers, the same
response. The authenticated one verifies the bearer token with common.auth.TokenVerifier against
the auth service's JWKS (BENCH_JWKS_URL, default the local auth service), cached by JWKSCache.
No middleware: what is measured is the verification itself.
"""

from __future__ import annotations

import os
from typing import Annotated

from common.auth import CurrentPrincipal, Principal, TokenVerifier
from common.errors import Unauthorized, install_error_handlers
from common.settings import BaseServiceSettings
from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

JWKS_URL = os.environ.get("BENCH_JWKS_URL", "http://127.0.0.1:8101/.well-known/jwks.json")


def create_bare_app() -> FastAPI:
    app = FastAPI(title="bench bare", openapi_url=None)
    install_error_handlers(app)

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/send", status_code=202)
    async def send(body: SendBody) -> dict[str, object]:
        """The messaging scenario's baseline: the send request's shape, parsed and answered."""
        return {"success": True, "data": {"count": len(body.recipients)}}

    return app


class SendBody(BaseModel):
    message: str
    recipients: list[str]


def create_auth_app() -> FastAPI:
    settings = BaseServiceSettings(service_name="bench-auth", jwks_url=JWKS_URL)
    app = FastAPI(title="bench auth", openapi_url=None)
    install_error_handlers(app)
    app.state.token_verifier = TokenVerifier(settings)

    @app.get("/ping")
    async def ping(principal: CurrentPrincipal) -> dict[str, bool]:
        return {"ok": True}

    return app


_FIXED = Principal(user_id="bench", tenant_id="bench")


async def header_only(request: Request) -> Principal:
    """Reads the bearer header like common.auth does, then skips the JWT work (as a cache hit
    would, apart from one dict lookup)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Missing bearer token")
    return _FIXED


def create_header_app() -> FastAPI:
    app = FastAPI(title="bench header only", openapi_url=None)
    install_error_handlers(app)

    @app.get("/ping")
    async def ping(principal: Annotated[Principal, Depends(header_only)]) -> dict[str, bool]:
        return {"ok": True}

    return app
