from typing import Annotated

from common.api import Envelope, Pagination, ok, paginate
from common.auth import PlatformAdmin
from common.db.session import SessionDep
from fastapi import APIRouter, Query

from auth.admin.schemas import AdminUserRead, RotatedKeyRead
from auth.deps import SettingsDep
from auth.keys import service as keys
from auth.users.repository import UserRepository

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.get("/users")
async def list_users(
    _: PlatformAdmin,
    session: SessionDep,
    page: Pagination,
    q: Annotated[str | None, Query(max_length=100)] = None,
    is_admin: Annotated[bool | None, Query(alias="isAdmin")] = None,
):
    """Every user on the platform, newest first; filter by email/name/phone text or admin flag."""
    users, total = await UserRepository(session).list_all(
        query=q, is_admin=is_admin, offset=page.offset, limit=page.limit
    )
    items = [
        AdminUserRead(
            id=str(u.id), email=u.email, phone=u.phone, name=u.name,
            is_platform_admin=u.is_platform_admin, created_at=u.created_at,
        ).model_dump(mode="json", by_alias=True)
        for u in users
    ]
    return ok(paginate(items, total, page))


@router.post("/keys/rotate", response_model=Envelope[RotatedKeyRead])
async def rotate_key(_: PlatformAdmin, session: SessionDep, settings: SettingsDep):
    """Start signing with a new key; the previous one stays published for the token lifetime."""
    key = await keys.rotate(session, settings)
    return ok(RotatedKeyRead(kid=key.kid))
