"""Auth API process: `uvicorn auth.app:create_app --factory`."""

from common.app import create_service_app
from fastapi import FastAPI

from auth.keys.endpoints import router as keys_router
from auth.keys.service import ensure_signing_key
from auth.settings import AuthSettings
from auth.users.endpoints import router as users_router


async def _signing_key(app: FastAPI) -> None:
    async with app.state.session_factory() as session, session.begin():
        await ensure_signing_key(session)


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or AuthSettings(),
        title="Switchboard auth",
        description="Accounts, tenants, roles, phone OTP and tokens.",
        routers=[users_router, keys_router],
        on_startup=[_signing_key],
    )
