from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

from common.contracts.auth.v2 import PasswordResetRequestedV2
from common.errors import BadRequest
from common.messaging import emit
from common.ratelimit import Limit, RateLimiter
from common.sealed import seal
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import PasswordReset
from auth.resets.repository import ResetRepository
from auth.resets.schemas import ResetConfirm, ResetRequest
from auth.sessions.service import revoke_all, token_hash
from auth.settings import AuthSettings
from auth.users.passwords import hash_password
from auth.users.repository import UserRepository


async def request_reset(
    session: AsyncSession, settings: AuthSettings, limiter: RateLimiter, req: ResetRequest
) -> None:
    """Always the same answer, whether or not the email has an account (no enumeration)."""
    email = req.email.lower()
    await limiter.hit(Limit("reset-email-hour", settings.password_resets_per_hour, 3600), email)
    user = await UserRepository(session).by_email(email)
    if user is None:
        return
    await send_reset_link(
        session, settings, user.id, email, timedelta(seconds=settings.password_reset_ttl_s), purpose="password_reset"
    )


async def send_reset_link(
    session: AsyncSession,
    settings: AuthSettings,
    user_id: uuid.UUID,
    email: str,
    ttl: timedelta,
    *,
    purpose: Literal["password_reset", "invitation"],
    tenant_id: str | None = None,
) -> None:
    """A single-use set-your-password link (a reset, or an invitation): only the token's SHA-256
    is stored; the token itself leaves sealed in `auth.password_reset.requested.v2`, for whoever
    delivers the email (it holds the seal keys) to open."""
    token = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + ttl
    await ResetRepository(session).add(PasswordReset(user_id=user_id, token_hash=token_hash(token), expires_at=expires))
    await emit(
        session,
        PasswordResetRequestedV2(
            user_id=str(user_id), email=email, sealed_token=seal(settings.otp_seal_keys, token),
            purpose=purpose, expires_at=expires.isoformat(),
        ),
        subject=str(user_id),
        tenant_id=tenant_id,
    )


async def confirm_reset(session: AsyncSession, settings: AuthSettings, req: ResetConfirm) -> None:
    now = datetime.now(UTC)
    reset = await ResetRepository(session).use(token_hash(req.token), now)
    if reset is None:
        raise BadRequest("Reset link invalid, used or expired", code="RESET_TOKEN_INVALID")
    user = await UserRepository(session).get(reset.user_id)
    if user is None:
        raise BadRequest("Reset link invalid, used or expired", code="RESET_TOKEN_INVALID")
    user.password_hash = await hash_password(settings, req.new_password)
    await revoke_all(session, user.id)  # every existing session ends with the old password
