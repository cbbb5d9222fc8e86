from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import Membership, Tenant, User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_email(self, email: str) -> User | None:
        return await self.session.scalar(select(User).where(func.lower(User.email) == email.lower()))

    async def first_membership(self, user: User) -> Membership | None:
        return await self.session.scalar(
            select(Membership).where(Membership.user_id == user.id).order_by(Membership.created_at).limit(1)
        )

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    def new_tenant(self, name: str, personal: bool) -> Tenant:
        return Tenant(name=name, personal=personal)
