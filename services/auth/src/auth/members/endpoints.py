import uuid

from common.api import Envelope, ok
from common.auth import CurrentPrincipal, require_roles
from common.db.session import SessionDep
from fastapi import APIRouter

from auth.deps import SettingsDep
from auth.members import service
from auth.members.schemas import MemberInvite, MemberRead, MemberUpdate

router = APIRouter(prefix="/api/v1/auth/members", tags=["members"])
Managers = require_roles("OWNER", "ADMIN")


@router.get("", response_model=Envelope[list[MemberRead]])
async def list_members(principal: CurrentPrincipal, session: SessionDep):
    """Members of your tenant and their roles."""
    return ok(await service.list_members(session, principal))


@router.post("", status_code=201, response_model=Envelope[MemberRead], dependencies=[Managers])
async def invite_member(body: MemberInvite, principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep):
    """Add someone by email; a new person gets a set-your-password link."""
    return ok(await service.invite(session, settings, principal, body))


@router.patch("/{user_id}", response_model=Envelope[MemberRead], dependencies=[Managers])
async def change_role(user_id: uuid.UUID, body: MemberUpdate, principal: CurrentPrincipal, session: SessionDep):
    """Change a member's role (OWNER: anyone; ADMIN: agents only)."""
    return ok(await service.change_role(session, principal, user_id, body))


@router.delete("/{user_id}", dependencies=[Managers])
async def remove_member(user_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep):
    """Remove a member from your tenant."""
    await service.remove(session, principal, user_id)
    return ok({"removed": True})
