"""Auth API process: `uvicorn auth.app:create_app --factory`."""

from common.app import create_service_app
from common.ratelimit import RateLimiter
from fastapi import FastAPI

from auth.admin.endpoints import router as admin_router
from auth.keys.endpoints import router as keys_router
from auth.keys.service import ensure_signing_key
from auth.members.endpoints import router as members_router
from auth.otp.endpoints import router as otp_router
from auth.resets.endpoints import router as resets_router
from auth.sessions.endpoints import router as sessions_router
from auth.settings import AuthSettings
from auth.users.endpoints import router as users_router


async def _startup(app: FastAPI) -> None:
    app.state.limiter = RateLimiter(app.state.redis, "auth")
    async with app.state.session_factory() as session, session.begin():
        await ensure_signing_key(session)


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or AuthSettings(),
        title="Switchboard auth",
        description="Accounts, tenants, roles, phone OTP and tokens.",
        routers=[
            users_router, sessions_router, otp_router, resets_router, members_router,
            admin_router, keys_router,
        ],
        on_startup=[_startup],
    )
