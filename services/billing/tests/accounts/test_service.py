"""Opening accounts: once per tenant, announced once, readable only by that tenant."""

import uuid

import pytest
from billing.accounts import service
from billing.settings import BillingSettings
from common.errors import NotFound
from sqlalchemy import text

from tests.support import rollback_session


async def test_an_account_opens_once_per_tenant_and_is_announced_once():
    tenant = str(uuid.uuid4())
    async with rollback_session(BillingSettings()) as session:
        assert await service.open_account(session, tenant, "USD", "evt-1") is True
        assert await service.open_account(session, tenant, "USD", "evt-2") is False
        credits = await service.credits_for(session, tenant)
        assert (credits.balance, credits.held, credits.available, credits.currency) == (0, 0, 0, "USD")
        announced = await session.scalar(
            text(
                "SELECT count(*) FROM outbox WHERE event_type = 'billing.account.opened.v1' "
                "AND envelope->>'tenantid' = :t"
            ),
            {"t": tenant},
        )
        assert announced == 1


async def test_another_tenants_balance_is_not_found():
    async with rollback_session(BillingSettings()) as session:
        await service.open_account(session, str(uuid.uuid4()), "USD", None)
        with pytest.raises(NotFound):
            await service.credits_for(session, str(uuid.uuid4()))
