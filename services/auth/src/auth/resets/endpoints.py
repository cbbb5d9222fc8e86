from common.api import ok
from common.db.session import SessionDep
from fastapi import APIRouter

from auth.deps import LimiterDep, SettingsDep
from auth.resets import service
from auth.resets.schemas import ResetConfirm, ResetRequest

router = APIRouter(prefix="/api/v1/auth/password-reset", tags=["password reset"])


@router.post("/request", status_code=202)
async def request_reset(body: ResetRequest, session: SessionDep, settings: SettingsDep, limiter: LimiterDep):
    """Send a reset link if the email has an account; the answer is the same either way."""
    await service.request_reset(session, settings, limiter, body)
    return ok({"requested": True})


@router.post("/confirm")
async def confirm_reset(body: ResetConfirm, session: SessionDep, settings: SettingsDep):
    """Set a new password with the token from the link; every session is logged out."""
    await service.confirm_reset(session, settings, body)
    return ok({"passwordChanged": True})
