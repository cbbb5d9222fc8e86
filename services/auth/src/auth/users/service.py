from __future__ import annotations

import uuid

from common.auth import Principal
from common.contracts.auth.v1 import UserRegisteredV1, UserUpdatedV1
from common.errors import Conflict, NotFound, Unauthorized
from common.messaging import emit
from common.phones import to_e164
from common.ratelimit import Limit, RateLimiter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import Membership, User
from auth.sessions import service as sessions
from auth.sessions.schemas import TokenRead, UserRead
from auth.settings import AuthSettings
from auth.users.passwords import hash_password, verify_password
from auth.users.repository import UserRepository
from auth.users.schemas import LoginRequest, ProfileUpdate, PublicUser, RegisterRequest


def _login_limits(settings: AuthSettings) -> tuple[Limit, Limit]:
    window = settings.login_failure_window_s
    return (
        Limit("login-fail-account", settings.login_failures_per_account, window),
        Limit("login-fail-ip", settings.login_failures_per_ip, window),
    )


async def create_user_with_tenant(
    session: AsyncSession,
    *,
    name: str,
    email: str | None = None,
    phone: str | None = None,
    password_hash: str | None = None,
    tenant_name: str | None = None,
) -> tuple[User, Membership]:
    """A new user, OWNER of a new tenant (a personal one without a name), announced by event."""
    repo = UserRepository(session)
    personal = tenant_name is None
    tenant = repo.new_tenant(tenant_name or f"{name}'s workspace", personal)
    user = User(id=uuid.uuid4(), email=email, phone=phone, name=name, password_hash=password_hash)
    try:
        async with session.begin_nested():
            await repo.add(tenant, user)
            membership = Membership(user_id=user.id, tenant_id=tenant.id, role="OWNER")
            await repo.add(membership)
    except IntegrityError as exc:  # a concurrent registration of the same email/phone won
        raise Conflict("An account with this email or phone exists", code="ACCOUNT_EXISTS") from exc
    await emit(
        session,
        UserRegisteredV1(
            user_id=str(user.id), tenant_id=str(tenant.id), email=email, phone=phone, name=name,
            role="OWNER", personal_tenant=personal,
        ),
        subject=str(user.id),
        tenant_id=str(tenant.id),
    )
    return user, membership


async def register(
    session: AsyncSession, settings: AuthSettings, limiter: RateLimiter, ip: str, req: RegisterRequest
) -> TokenRead:
    await limiter.hit(Limit("register-ip-hour", settings.registrations_per_ip_per_hour, 3600), ip)
    email = req.email.lower()
    if await UserRepository(session).by_email(email) is not None:
        raise Conflict("An account with this email exists", code="EMAIL_TAKEN")
    user, membership = await create_user_with_tenant(
        session, name=req.name, email=email,
        password_hash=await hash_password(settings, req.password), tenant_name=req.tenant_name,
    )
    return await sessions.issue(session, settings, user, membership, new_user=True)


async def login(
    session: AsyncSession, settings: AuthSettings, limiter: RateLimiter, ip: str, req: LoginRequest
) -> TokenRead:
    per_account, per_ip = _login_limits(settings)
    email = req.email.lower()
    # Every attempt is counted before the password is checked (so parallel guesses cannot slip
    # past the limit); a successful one is given back.
    await limiter.hit(per_ip, ip)
    await limiter.hit(per_account, email)
    repo = UserRepository(session)
    user = await repo.by_email(email)
    # Verified even when the account does not exist (against a dummy hash): same time either way.
    valid = await verify_password(settings, user.password_hash if user else None, req.password)
    membership = await repo.first_membership(user) if valid and user else None
    if membership is None or user is None:
        raise Unauthorized("Wrong email or password", code="INVALID_CREDENTIALS")
    await limiter.reset(per_account, email)
    await limiter.undo(per_ip, ip)
    return await sessions.issue(session, settings, user, membership)


async def me(session: AsyncSession, principal: Principal) -> UserRead:
    repo = UserRepository(session)
    user = await repo.get(principal.user_uuid)
    membership = await repo.membership(principal.user_uuid, principal.tenant_uuid)
    if user is None or membership is None:
        raise NotFound("Account not found", code="ACCOUNT_NOT_FOUND")
    return sessions.user_read(user, membership)


async def update_profile(session: AsyncSession, principal: Principal, req: ProfileUpdate) -> UserRead:
    repo = UserRepository(session)
    user = await repo.get(principal.user_uuid)
    if user is None:
        raise NotFound("Account not found", code="ACCOUNT_NOT_FOUND")
    changes = req.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if field == "name" and value is None:
            continue  # a name cannot be removed
        setattr(user, field, value)
    await session.flush()
    if changes:
        await emit(
            session,
            UserUpdatedV1(
                user_id=str(user.id), tenant_id=principal.tenant_id, name=user.name,
                about=user.about, avatar_media_id=user.avatar_media_id,
            ),
            subject=str(user.id),
            tenant_id=principal.tenant_id,
        )
    return await me(session, principal)


async def search(
    session: AsyncSession, settings: AuthSettings, limiter: RateLimiter, principal: Principal, q: str, limit: int
) -> list[PublicUser]:
    """A full phone number finds that user anywhere (to start a chat); a name only finds members
    of the caller's own tenant. Limited per user, against harvesting the phone directory."""
    await limiter.hit(Limit("search-user-minute", settings.searches_per_user_per_minute, 60), principal.user_id)
    repo = UserRepository(session)
    looks_like_phone = q.startswith("+") or q.replace(" ", "").isdigit()
    if looks_like_phone:
        user = await repo.by_phone(to_e164(q))
        found = [user] if user is not None else []
    else:
        found = await repo.search_members(principal.tenant_uuid, q, limit)
    return [
        PublicUser(id=str(u.id), name=u.name, phone=u.phone, about=u.about, avatar_media_id=u.avatar_media_id)
        for u in found
    ]
