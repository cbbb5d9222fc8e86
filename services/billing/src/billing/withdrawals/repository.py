import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import Withdrawal


class WithdrawalRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, withdrawal: Withdrawal) -> None:
        self.session.add(withdrawal)
        await self.session.flush()
        await self.session.refresh(withdrawal)

    async def lock(self, withdrawal_id: uuid.UUID) -> Withdrawal | None:
        """The row, locked until the transaction ends: decisions on one withdrawal serialise."""
        return await self.session.scalar(
            select(Withdrawal)
            .where(Withdrawal.id == withdrawal_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )

    async def find(
        self, *, tenant_id: str | None, status: str | None, offset: int, limit: int
    ) -> tuple[list[Withdrawal], int]:
        stmt = select(Withdrawal)
        if tenant_id is not None:
            stmt = stmt.where(Withdrawal.tenant_id == tenant_id)
        if status is not None:
            stmt = stmt.where(Withdrawal.status == status)
        total = await self.session.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = await self.session.scalars(
            stmt.order_by(Withdrawal.created_at.desc(), Withdrawal.id).offset(offset).limit(limit)
        )
        return list(rows), int(total or 0)
