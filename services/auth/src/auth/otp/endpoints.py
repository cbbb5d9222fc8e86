from common.api import Envelope, ok
from common.db.session import SessionDep
from fastapi import APIRouter

from auth.deps import ClientIpDep, LimiterDep, SettingsDep
from auth.otp import service
from auth.otp.schemas import SendOtpRead, SendOtpRequest, VerifyOtpRequest
from auth.sessions.schemas import TokenRead

router = APIRouter(prefix="/api/v1/auth", tags=["otp"])


@router.post("/send-otp", status_code=202, response_model=Envelope[SendOtpRead])
async def send_otp(body: SendOtpRequest, session: SessionDep, settings: SettingsDep, limiter: LimiterDep, ip: ClientIpDep):
    """Text a six-digit code to the phone (never returned here); resends are throttled."""
    return ok(await service.send(session, settings, limiter, ip, body))


@router.post("/verify-otp", response_model=Envelope[TokenRead])
async def verify_otp(body: VerifyOtpRequest, session: SessionDep, settings: SettingsDep):
    """Check the code; signs in, creating the account on first use (`newUser`)."""
    return ok(await service.verify(session, settings, body))
