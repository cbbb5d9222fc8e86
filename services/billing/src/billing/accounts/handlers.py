import logging

from common.contracts import EventEnvelope
from common.contracts.auth.v1 import UserRegisteredV1
from sqlalchemy.ext.asyncio import AsyncSession

from billing.accounts import service

log = logging.getLogger("billing.accounts")


def make_handlers(default_currency: str):
    async def on_user_registered(session: AsyncSession, event: EventEnvelope[UserRegisteredV1]) -> None:
        # Tenants share one balance: only the first registration for a tenant opens it.
        if await service.open_account(session, event.data.tenant_id, default_currency, event.id):
            # Logged inside the event's span and request id (the consumer sets both).
            log.info("account opened", extra={"tenant_id": event.data.tenant_id, "currency": default_currency})

    return {"auth.user.registered.v1": on_user_registered}
