import uuid

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import Membership, User


class MemberRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list(self, tenant_id: uuid.UUID) -> list[tuple[User, Membership]]:
        rows = await self.session.execute(
            select(User, Membership)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.tenant_id == tenant_id)
            .order_by(Membership.created_at)
        )
        return [(u, m) for u, m in rows.all()]

    async def lock_tenant(self, tenant_id: uuid.UUID) -> None:
        """Serialise membership changes of one tenant (two demotions cannot race, nor deadlock)."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('auth.members'), hashtext(:t))"),
            {"t": str(tenant_id)},
        )

    async def get_for_update(self, tenant_id: uuid.UUID, user_id: uuid.UUID) -> Membership | None:
        return await self.session.scalar(
            select(Membership)
            .where(Membership.tenant_id == tenant_id, Membership.user_id == user_id)
            .with_for_update()
        )

    async def owners_for_update(self, tenant_id: uuid.UUID) -> int:
        # Locks the tenant's OWNER rows so two demotions cannot both leave it ownerless.
        rows = await self.session.scalars(
            select(Membership.user_id)
            .where(Membership.tenant_id == tenant_id, Membership.role == "OWNER")
            .with_for_update()
        )
        return len(list(rows))

    async def add(self, membership: Membership) -> None:
        self.session.add(membership)
        await self.session.flush()

    async def delete(self, membership: Membership) -> None:
        await self.session.delete(membership)
        await self.session.flush()
