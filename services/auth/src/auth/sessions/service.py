"""Issue, rotate and revoke sessions.

Refresh tokens are opaque random strings; only their SHA-256 is stored. Each use rotates the
token (the old one is marked used, a new one joins the same family). Presenting a token that was
already used means it leaked: the whole family is revoked, so neither the thief nor the owner can
go on with it, and the owner logs in again.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from common.errors import Unauthorized
from sqlalchemy.ext.asyncio import AsyncSession

from auth.keys.service import active_key, sign_access_token
from auth.models import Membership, RefreshToken, User
from auth.sessions.repository import RefreshTokenRepository
from auth.sessions.schemas import TokenRead, UserRead
from auth.settings import AuthSettings
from auth.users.repository import UserRepository


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def user_read(user: User, membership: Membership) -> UserRead:
    return UserRead(
        id=str(user.id), email=user.email, phone=user.phone, name=user.name, about=user.about,
        avatar_media_id=user.avatar_media_id, tenant_id=str(membership.tenant_id),
        role=membership.role, is_platform_admin=user.is_platform_admin,
    )


async def issue(
    session: AsyncSession,
    settings: AuthSettings,
    user: User,
    membership: Membership,
    *,
    family_id: uuid.UUID | None = None,
    new_user: bool = False,
) -> TokenRead:
    key = await active_key(session)
    access = sign_access_token(
        key, settings, user_id=str(user.id), tenant_id=str(membership.tenant_id),
        roles=[membership.role], is_platform_admin=user.is_platform_admin,
    )
    refresh = secrets.token_urlsafe(32)
    await RefreshTokenRepository(session).add(
        RefreshToken(
            family_id=family_id or uuid.uuid4(),
            user_id=user.id,
            tenant_id=membership.tenant_id,
            token_hash=token_hash(refresh),
            expires_at=datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_s),
        )
    )
    return TokenRead(
        user=user_read(user, membership),
        access_token=access,
        refresh_token=refresh,
        expires_in=settings.access_token_ttl_s,
        new_user=new_user,
    )


async def refresh(session: AsyncSession, settings: AuthSettings, presented: str) -> TokenRead:
    repo = RefreshTokenRepository(session)
    now = datetime.now(UTC)
    hashed = token_hash(presented)
    row = await repo.use(hashed, now)  # atomic: two concurrent refreshes cannot both win
    if row is None:
        seen = await repo.by_hash(hashed)
        if seen is not None and seen.expires_at > now and seen.used_at is not None:
            # Reuse of a rotated token: it leaked. The family is revoked and that is kept (commit)
            # although the request is refused.
            await repo.revoke_family(seen.family_id, now)
            raise Unauthorized(
                "Refresh token reused; please log in again", code="REFRESH_TOKEN_REUSED", commit=True
            )
        raise Unauthorized("Refresh token invalid or expired", code="INVALID_REFRESH_TOKEN")
    users = UserRepository(session)
    user = await users.get(row.user_id)
    membership = await users.membership(row.user_id, row.tenant_id)
    if user is None or membership is None:
        raise Unauthorized("Refresh token invalid or expired", code="INVALID_REFRESH_TOKEN")
    return await issue(session, settings, user, membership, family_id=row.family_id)


async def logout(session: AsyncSession, presented: str) -> None:
    """Revoke the family of the presented token; unknown tokens are ignored (nothing to reveal)."""
    repo = RefreshTokenRepository(session)
    row = await repo.by_hash_for_update(token_hash(presented))
    if row is not None:
        await repo.revoke_family(row.family_id, datetime.now(UTC))


async def revoke_all(session: AsyncSession, user_id: uuid.UUID) -> None:
    await RefreshTokenRepository(session).revoke_user(user_id, datetime.now(UTC))
