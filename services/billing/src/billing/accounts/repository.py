from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import Account


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_tenant(self, tenant_id: str) -> Account | None:
        return await self.session.scalar(select(Account).where(Account.tenant_id == tenant_id))

    async def open(self, tenant_id: str, currency: str, event_id: str | None) -> Account | None:
        """Open the tenant's account; None when it was already open."""
        stmt = (
            insert(Account)
            .values(tenant_id=tenant_id, currency=currency, opened_by_event=event_id)
            .on_conflict_do_nothing(index_elements=[Account.tenant_id])
            .returning(Account)
        )
        return await self.session.scalar(stmt)
