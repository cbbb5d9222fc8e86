from common.api import Envelope, ok
from common.db.session import SessionDep
from fastapi import APIRouter

from auth.deps import SettingsDep
from auth.sessions import service
from auth.sessions.schemas import LogoutRequest, RefreshRequest, TokenRead

router = APIRouter(prefix="/api/v1/auth", tags=["sessions"])


@router.post("/refresh", response_model=Envelope[TokenRead])
async def refresh(body: RefreshRequest, session: SessionDep, settings: SettingsDep):
    """Trade a refresh token for new tokens; each refresh token works once."""
    return ok(await service.refresh(session, settings, body.refresh_token))


@router.post("/logout")
async def logout(body: LogoutRequest, session: SessionDep):
    """End the session: the refresh token and every token rotated from it stop working."""
    await service.logout(session, body.refresh_token)
    return ok({"loggedOut": True})
