import uuid

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import Membership, Tenant, User


def _literal(text: str) -> str:
    """`text` for a LIKE pattern (escape `\\`): its `%` and `_` match only themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def by_email(self, email: str) -> User | None:
        # Every writer stores emails lower-cased, so the unique index on `email` answers this;
        # comparing lower(email) would scan the whole table on every login.
        return await self.session.scalar(select(User).where(User.email == email.lower()))

    async def by_phone(self, phone: str) -> User | None:
        return await self.session.scalar(select(User).where(User.phone == phone))

    async def membership(self, user_id: uuid.UUID, tenant_id: uuid.UUID) -> Membership | None:
        return await self.session.get(Membership, (user_id, tenant_id))

    async def first_membership(self, user: User) -> Membership | None:
        return await self.session.scalar(
            select(Membership).where(Membership.user_id == user.id).order_by(Membership.created_at).limit(1)
        )

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    def new_tenant(self, name: str, personal: bool) -> Tenant:
        return Tenant(name=name, personal=personal)

    async def search_members(self, tenant_id: uuid.UUID, name_prefix: str, limit: int) -> list[User]:
        pattern = _literal(name_prefix.lower()) + "%"
        rows = await self.session.scalars(
            select(User)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.tenant_id == tenant_id, func.lower(User.name).like(pattern, escape="\\"))
            .order_by(User.name)
            .limit(limit)
        )
        return list(rows)

    async def list_all(
        self, *, query: str | None, is_admin: bool | None, offset: int, limit: int
    ) -> tuple[list[User], int]:
        stmt = select(User)
        if query:
            like = f"%{_literal(query.lower())}%"
            stmt = stmt.where(
                or_(
                    func.lower(User.email).like(like, escape="\\"),
                    func.lower(User.name).like(like, escape="\\"),
                    User.phone.like(like, escape="\\"),
                )
            )
        if is_admin is not None:
            stmt = stmt.where(User.is_platform_admin.is_(is_admin))
        total = await self.session.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = await self.session.scalars(stmt.order_by(User.created_at.desc()).offset(offset).limit(limit))
        return list(rows), int(total or 0)
