from sqlalchemy.ext.asyncio import AsyncSession

from billing.accounts.schemas import CreditsRead
from billing.ledger import service as ledger


async def credits_for(session: AsyncSession, tenant_id: str) -> CreditsRead:
    account = await ledger.require_account(session, tenant_id)
    return CreditsRead(
        balance=account.balance_minor,
        held=account.held_minor,
        available=account.balance_minor - account.held_minor,
        currency=account.currency,
    )


async def open_account(session: AsyncSession, tenant_id: str, currency: str, event_id: str | None) -> bool:
    return await ledger.open_account(session, tenant_id, currency, event_id) is not None
