"""Who may do what to whom: OWNER manages everyone (a tenant always keeps one OWNER); ADMIN
manages AGENTs only. A new role shows in the member's next access token (at most 15 minutes)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from common.auth import Principal
from common.contracts.auth.v1 import MembershipChangedV1, UserRegisteredV1
from common.errors import Conflict, Forbidden, NotFound
from common.messaging import emit
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth.members.repository import MemberRepository
from auth.members.schemas import MemberInvite, MemberRead, MemberUpdate
from auth.models import Membership, User
from auth.resets.service import send_reset_link
from auth.settings import AuthSettings
from auth.users.repository import UserRepository

INVITE_TTL = timedelta(days=3)


def _read(user: User, m: Membership) -> MemberRead:
    return MemberRead(user_id=str(user.id), email=user.email, phone=user.phone, name=user.name, role=m.role)


def _may_manage(actor: Principal, target_role: str, new_role: str | None) -> None:
    if actor.has_role("OWNER"):
        return
    if actor.has_role("ADMIN") and target_role == "AGENT" and new_role in (None, "AGENT"):
        return
    raise Forbidden("Your role cannot manage this member", code="ROLE_FORBIDDEN")


async def list_members(session: AsyncSession, actor: Principal) -> list[MemberRead]:
    return [_read(u, m) for u, m in await MemberRepository(session).list(uuid.UUID(actor.tenant_id))]


async def invite(session: AsyncSession, settings: AuthSettings, actor: Principal, req: MemberInvite) -> MemberRead:
    _may_manage(actor, req.role, req.role)
    tenant_id = uuid.UUID(actor.tenant_id)
    users = UserRepository(session)
    email = req.email.lower()
    user = await users.by_email(email)
    if user is None:
        user = User(id=uuid.uuid4(), email=email, name=req.name)
        membership = Membership(user_id=user.id, tenant_id=tenant_id, role=req.role)
        try:
            async with session.begin_nested():
                await users.add(user)
                await MemberRepository(session).add(membership)
        except IntegrityError as exc:  # the same email registered meanwhile
            raise Conflict("An account with this email was just created; invite again", code="ACCOUNT_EXISTS") from exc
        await emit(
            session,
            UserRegisteredV1(
                user_id=str(user.id), tenant_id=actor.tenant_id, email=email, name=req.name,
                role=req.role, personal_tenant=False,
            ),
            subject=str(user.id), tenant_id=actor.tenant_id,
        )
        # The invitation is a set-your-password link, delivered like a password reset.
        await send_reset_link(
            session, settings, user.id, email, INVITE_TTL, purpose="invitation", tenant_id=actor.tenant_id
        )
    else:
        if await users.membership(user.id, tenant_id) is not None:
            raise Conflict("Already a member", code="ALREADY_MEMBER")
        membership = Membership(user_id=user.id, tenant_id=tenant_id, role=req.role)
        await MemberRepository(session).add(membership)
    await emit(
        session,
        MembershipChangedV1(user_id=str(user.id), tenant_id=actor.tenant_id, role=req.role),
        subject=str(user.id), tenant_id=actor.tenant_id,
    )
    return _read(user, membership)


async def _target(session: AsyncSession, actor: Principal, user_id: uuid.UUID) -> tuple[MemberRepository, Membership]:
    repo = MemberRepository(session)
    await repo.lock_tenant(uuid.UUID(actor.tenant_id))
    membership = await repo.get_for_update(uuid.UUID(actor.tenant_id), user_id)
    if membership is None:
        raise NotFound("No such member", code="MEMBER_NOT_FOUND")
    return repo, membership


async def change_role(session: AsyncSession, actor: Principal, user_id: uuid.UUID, req: MemberUpdate) -> MemberRead:
    repo, membership = await _target(session, actor, user_id)
    _may_manage(actor, membership.role, req.role)
    if membership.role == "OWNER" and req.role != "OWNER":
        if await repo.owners_for_update(membership.tenant_id) <= 1:
            raise Conflict("A workspace needs an owner", code="LAST_OWNER")
    membership.role = req.role
    await session.flush()
    await emit(
        session, MembershipChangedV1(user_id=str(user_id), tenant_id=actor.tenant_id, role=req.role),
        subject=str(user_id), tenant_id=actor.tenant_id,
    )
    user = await UserRepository(session).get(user_id)
    assert user is not None
    return _read(user, membership)


async def remove(session: AsyncSession, actor: Principal, user_id: uuid.UUID) -> None:
    repo, membership = await _target(session, actor, user_id)
    _may_manage(actor, membership.role, None)
    if membership.role == "OWNER" and await repo.owners_for_update(membership.tenant_id) <= 1:
        raise Conflict("A workspace needs an owner", code="LAST_OWNER")
    await repo.delete(membership)
    await emit(
        session, MembershipChangedV1(user_id=str(user_id), tenant_id=actor.tenant_id, role=None),
        subject=str(user_id), tenant_id=actor.tenant_id,
    )
