"""One-time codes: six digits, stored only as an HMAC, bound to phone and purpose, single use,
five minutes, five wrong tries lock the challenge. Attempt counts live in Postgres, so losing
Redis (which only throttles sending) never unlocks anything. The code leaves this service only
sealed inside `auth.otp.requested.v2` (`common.sealed`, a key only auth and messaging hold) for
messaging to deliver; it is never logged or answered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from common.contracts.auth.v2 import OtpRequestedV2
from common.errors import AppError, Unauthorized, Unprocessable
from common.messaging import emit
from common.phones import region_of, to_e164
from common.ratelimit import Limit, RateLimiter
from common.sealed import code_hash, code_matches, new_code, seal
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import OtpChallenge
from auth.otp.repository import OtpRepository
from auth.otp.schemas import SendOtpRead, SendOtpRequest, VerifyOtpRequest
from auth.sessions import service as sessions
from auth.sessions.schemas import TokenRead
from auth.settings import AuthSettings
from auth.users.repository import UserRepository
from auth.users.service import create_user_with_tenant


class OtpLocked(AppError):
    status_code, code, message = 423, "OTP_LOCKED", "Too many wrong codes: request a new one"


def _phone_for_otp(settings: AuthSettings, raw: str) -> str:
    phone = to_e164(raw)
    if region_of(phone) not in settings.otp_allowed_countries:
        raise Unprocessable("We do not send codes to this country", code="COUNTRY_NOT_ALLOWED")
    return phone


async def send(
    session: AsyncSession, settings: AuthSettings, limiter: RateLimiter, ip: str, req: SendOtpRequest
) -> SendOtpRead:
    phone = _phone_for_otp(settings, req.phone)
    # The caller's own limit first, so a refused caller spends nothing of the phone's quota.
    await limiter.hit(Limit("otp-ip-hour", settings.otp_per_ip_per_hour, 3600), ip)
    await limiter.hit(Limit("otp-cooldown", 1, settings.otp_resend_cooldown_s), f"{phone}:{req.purpose}")
    await limiter.hit(Limit("otp-phone-hour", settings.otp_per_phone_per_hour, 3600), phone)
    now = datetime.now(UTC)
    repo = OtpRepository(session)
    await repo.supersede_open(phone, req.purpose, now)
    challenge_id = uuid.uuid4()
    code = new_code()
    expires = now + timedelta(seconds=settings.otp_ttl_s)
    await repo.add(
        OtpChallenge(
            id=challenge_id, phone=phone, purpose=req.purpose,
            code_hash=code_hash(settings.otp_pepper, challenge_id, code), expires_at=expires, requested_ip=ip,
        )
    )
    await emit(
        session,
        OtpRequestedV2(
            challenge_id=str(challenge_id), phone=phone, sealed_code=seal(settings.otp_seal_keys, code),
            purpose=req.purpose,
            expires_at=expires.isoformat(),
        ),
        subject=phone,
    )
    return SendOtpRead(
        challenge_id=str(challenge_id), phone=phone, expires_in=settings.otp_ttl_s,
        resend_in=settings.otp_resend_cooldown_s,
    )


async def verify(session: AsyncSession, settings: AuthSettings, req: VerifyOtpRequest) -> TokenRead:
    phone = to_e164(req.phone)
    now = datetime.now(UTC)
    challenge = await OtpRepository(session).latest_open(phone, req.purpose)
    if challenge is None or challenge.expires_at <= now:
        raise Unauthorized("Code invalid or expired", code="OTP_INVALID")
    # The attempt is spent before comparing, under the row lock, so parallel guesses queue and
    # cannot exceed the limit; a wrong code's refusal commits the spent attempt.
    attempts = await OtpRepository(session).claim_attempt(challenge.id, settings.otp_max_attempts, now)
    if attempts is None:
        raise OtpLocked()
    if not code_matches(settings.otp_pepper, challenge.id, req.code, challenge.code_hash):
        if attempts >= settings.otp_max_attempts:
            raise OtpLocked(commit=True)
        raise Unauthorized(
            "Code invalid or expired", code="OTP_INVALID",
            details={"attemptsLeft": settings.otp_max_attempts - attempts}, commit=True,
        )
    if not await OtpRepository(session).consume(challenge.id, now):
        raise Unauthorized("Code invalid or expired", code="OTP_INVALID")
    users = UserRepository(session)
    user = await users.by_phone(phone)
    new_user = user is None
    if user is None:
        user, membership = await create_user_with_tenant(session, name=req.name or phone, phone=phone)
    else:
        membership = await users.first_membership(user)
        if membership is None:
            raise Unauthorized("Account has no workspace", code="NO_MEMBERSHIP")
    user.phone_verified_at = now
    return await sessions.issue(session, settings, user, membership, new_user=new_user)
