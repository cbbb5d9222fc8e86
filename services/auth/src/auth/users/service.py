from __future__ import annotations

import uuid

from common.contracts.auth.v1 import UserRegisteredV1
from common.errors import Conflict, Unauthorized
from common.messaging import emit
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth.keys.service import active_key, sign_access_token
from auth.models import Membership, User
from auth.settings import AuthSettings
from auth.users.passwords import hash_password, verify_password
from auth.users.repository import UserRepository
from auth.users.schemas import LoginRequest, RegisterRequest, TokenRead, UserRead


async def _tokens(session: AsyncSession, settings: AuthSettings, user: User, m: Membership) -> TokenRead:
    key = await active_key(session)
    token = sign_access_token(
        key,
        settings,
        user_id=str(user.id),
        tenant_id=str(m.tenant_id),
        roles=[m.role],
        is_platform_admin=user.is_platform_admin,
    )
    return TokenRead(
        user=UserRead(
            id=str(user.id), email=user.email, phone=user.phone, name=user.name,
            tenant_id=str(m.tenant_id), role=m.role,
        ),
        access_token=token,
        expires_in=settings.access_token_ttl_s,
    )


async def register(session: AsyncSession, settings: AuthSettings, req: RegisterRequest) -> TokenRead:
    repo = UserRepository(session)
    email = req.email.lower()
    if await repo.by_email(email) is not None:
        raise Conflict("An account with this email exists", code="EMAIL_TAKEN")
    personal = req.tenant_name is None
    tenant = repo.new_tenant(req.tenant_name or f"{req.name}'s workspace", personal)
    user = User(
        id=uuid.uuid4(), email=email, name=req.name,
        password_hash=await hash_password(settings, req.password),
    )
    try:
        await repo.add(tenant, user)
        membership = Membership(user_id=user.id, tenant_id=tenant.id, role="OWNER")
        await repo.add(membership)
    except IntegrityError as exc:  # a concurrent registration of the same email won the race
        raise Conflict("An account with this email exists", code="EMAIL_TAKEN") from exc
    await emit(
        session,
        UserRegisteredV1(
            user_id=str(user.id), tenant_id=str(tenant.id), email=email, name=req.name,
            role="OWNER", personal_tenant=personal,
        ),
        subject=str(user.id),
        tenant_id=str(tenant.id),
    )
    return await _tokens(session, settings, user, membership)


async def login(session: AsyncSession, settings: AuthSettings, req: LoginRequest) -> TokenRead:
    repo = UserRepository(session)
    user = await repo.by_email(req.email)
    valid = await verify_password(settings, user.password_hash if user else None, req.password)
    if not valid or user is None:
        raise Unauthorized("Wrong email or password", code="INVALID_CREDENTIALS")
    membership = await repo.first_membership(user)
    if membership is None:
        raise Unauthorized("Wrong email or password", code="INVALID_CREDENTIALS")
    return await _tokens(session, settings, user, membership)
