"""The two apps of the auth benchmark, served by uvicorn (bench/auth_scenario.py starts them):

  uvicorn apps:create_bare_app --factory --app-dir bench ...   GET /ping, no auth (and POST /send,
      the messaging scenario's baseline: a send request's JSON parsed, 202)
  uvicorn apps:create_auth_app --factory --app-dir bench ...   GET /ping, CurrentPrincipal
  uvicorn apps:create_header_app --factory --app-dir bench ... GET /ping, a dependency that only
      reads the bearer header (diagnostics: what auth would cost with a verified-token cache)
  uvicorn apps:create_floor_app --factory --app-dir bench ...  POST /send: the messaging
      scenario's floor, the least a send endpoint can do (token verified, body parsed, one row
      written and committed durably), nothing else

They differ only in the dependency: the same FastAPI app, the same error handlers, the same
response. The authenticated one verifies the bearer token with common.auth.TokenVerifier against
the auth service's JWKS (BENCH_JWKS_URL, default the local auth service), cached by JWKSCache.
No middleware: what is measured is the verification itself.
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
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


FLOOR_DSN = os.environ.get("BENCH_FLOOR_DSN", "postgresql://bench:bench@127.0.0.1:55432/switchboard")


def create_floor_app() -> FastAPI:
    """The least a single send can cost on this stack: the bearer token verified (as
    create_auth_app), the body parsed (as create_bare_app), one row inserted and committed
    (durably, over TCP, from a pool of 8), the id answered. No idempotency, contact or opt-out
    check, outbox event, access log, tracing or metrics: a ceiling for what any send endpoint
    built from these parts could reach, not a design."""
    settings = BaseServiceSettings(service_name="bench-floor", jwks_url=JWKS_URL)
    pool: list[asyncpg.Pool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        pool.append(await asyncpg.create_pool(FLOOR_DSN, min_size=8, max_size=8))
        async with pool[0].acquire() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS bench.send_floor (id uuid PRIMARY KEY, tenant_id text "
                "NOT NULL, recipient text NOT NULL, body text NOT NULL, created_at timestamptz NOT "
                "NULL DEFAULT now())"
            )
            await conn.execute("TRUNCATE bench.send_floor")
        yield
        await pool[0].close()

    app = FastAPI(title="bench floor", openapi_url=None, lifespan=lifespan)
    install_error_handlers(app)
    app.state.token_verifier = TokenVerifier(settings)

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/send", status_code=202)
    async def send(body: SendBody, principal: CurrentPrincipal) -> dict[str, object]:
        message_id = uuid.uuid4()
        await pool[0].execute(
            "INSERT INTO bench.send_floor (id, tenant_id, recipient, body) VALUES ($1, $2, $3, $4)",
            message_id, principal.tenant_id, body.recipients[0], body.message,
        )
        return {"success": True, "data": {"id": str(message_id)}}

    return app
