"""Withdrawals in the ledger: requested holds, paid captures to `payouts`, rejected releases, and a
failed payout changes nothing. Each test runs in a transaction that is rolled back."""

import uuid

import pytest
from billing.ledger import service as ledger
from billing.ledger.repository import LedgerRepository
from billing.models import Account, Hold, LedgerEntry, LedgerTransaction, Withdrawal
from billing.settings import BillingSettings
from billing.withdrawals import service
from billing.withdrawals.payouts import ManualPayout, Payout, PayoutAdapter, PayoutFailed
from common.auth import Principal
from common.errors import Conflict, Forbidden, NotFound, PaymentRequired
from sqlalchemy import select

from tests.support import rollback_session

SETTINGS = BillingSettings()
ADMIN = Principal(user_id="admin-1", tenant_id="platform", is_platform_admin=True)


class RefusingPayout(PayoutAdapter):
    """A payout provider that says no (what a Stripe refusal looks like to the approval)."""

    async def pay(self, session, withdrawal: Withdrawal) -> Payout:  # noqa: ANN001
        raise PayoutFailed()


async def funded(session, amount: int) -> Principal:  # noqa: ANN001
    tenant = f"wd-{uuid.uuid4()}"
    await ledger.open_account(session, tenant, "USD", None)
    account = await ledger.require_account(session, tenant)
    await ledger.credit(session, account, amount, business_key=f"fund:{tenant}", kind="adjustment",
                        counter_account="adjustments", description="test funding")
    return Principal(user_id="owner-1", tenant_id=tenant, roles=("OWNER",))


async def amounts(session, tenant: str) -> tuple[int, int]:  # noqa: ANN001
    account = await LedgerRepository(session).customer(tenant)
    account = await LedgerRepository(session).refreshed(account.id)
    return account.balance_minor, account.held_minor


async def postings(session, tx_id) -> dict[str, int]:  # noqa: ANN001
    """A transaction's entries by account (system accounts by code, the customer as "customer")."""
    rows = await session.execute(
        select(Account.kind, Account.code, LedgerEntry.amount_minor)
        .join(Account, Account.id == LedgerEntry.account_id)
        .where(LedgerEntry.transaction_id == tx_id)
    )
    return {code or kind: amount for kind, code, amount in rows.all()}


async def test_a_paid_withdrawal_moves_the_held_amount_to_payouts_once():
    async with rollback_session(SETTINGS) as session:
        owner = await funded(session, 5_000)
        withdrawal = await service.request(session, owner, 2_000, "to my bank")
        assert await amounts(session, owner.tenant_id) == (5_000, 2_000)
        hold = await session.get(Hold, withdrawal.hold_id)
        assert (hold.kind, hold.business_key, hold.status) == ("withdrawal", f"withdrawal:{withdrawal.id}", "held")

        paid = await service.approve(session, withdrawal.id, ADMIN, ManualPayout())
        assert (paid.status, paid.payout_method, paid.decided_by) == ("paid", "manual", "admin-1")
        assert paid.payout_reference == f"MAN-{withdrawal.id.hex[:16].upper()}"
        assert await amounts(session, owner.tenant_id) == (3_000, 0)
        tx = await session.scalar(
            select(LedgerTransaction).where(LedgerTransaction.business_key == f"capture:withdrawal:{withdrawal.id}")
        )
        assert (tx.kind, tx.tenant_id, tx.reference) == ("withdrawal", owner.tenant_id, str(withdrawal.id))
        assert await postings(session, tx.id) == {"customer": -2_000, "payouts": 2_000}

        with pytest.raises(Conflict) as exc:
            await service.approve(session, withdrawal.id, ADMIN, ManualPayout())
        assert exc.value.code == "WITHDRAWAL_ALREADY_DECIDED" and exc.value.details == {"status": "paid"}
        with pytest.raises(Conflict):
            await service.reject(session, withdrawal.id, ADMIN, "changed my mind")
        assert await amounts(session, owner.tenant_id) == (3_000, 0)
        assert all(v == 0 for v in (await LedgerRepository(session).invariants()).values())


async def test_a_rejected_withdrawal_releases_its_hold_and_keeps_the_reason_apart_from_the_note():
    async with rollback_session(SETTINGS) as session:
        owner = await funded(session, 1_000)
        withdrawal = await service.request(session, owner, 1_000, "all of it")
        assert await amounts(session, owner.tenant_id) == (1_000, 1_000)
        rejected = await service.reject(session, withdrawal.id, ADMIN, "account under review")
        assert await amounts(session, owner.tenant_id) == (1_000, 0)
        read = service.to_read(rejected)
        assert (read.status, read.note, read.rejection_reason) == ("rejected", "all of it", "account under review")
        assert (await session.get(Hold, withdrawal.hold_id)).status == "released"
        with pytest.raises(Conflict):
            await service.approve(session, withdrawal.id, ADMIN, ManualPayout())


async def test_more_than_the_available_balance_is_refused_and_an_unknown_withdrawal_is_not_found():
    async with rollback_session(SETTINGS) as session:
        owner = await funded(session, 1_000)
        await service.request(session, owner, 600, None)
        with pytest.raises(PaymentRequired) as exc:
            await service.request(session, owner, 500, None)
        assert exc.value.details == {"requested": 500, "available": 400}
        assert await amounts(session, owner.tenant_id) == (1_000, 600)
        with pytest.raises(NotFound):
            await service.approve(session, uuid.uuid4(), ADMIN, ManualPayout())


async def test_an_admin_cannot_approve_a_withdrawal_they_requested():
    async with rollback_session(SETTINGS) as session:
        owner = await funded(session, 1_000)
        admin_owner = Principal(user_id=owner.user_id, tenant_id=owner.tenant_id, roles=("OWNER",), is_platform_admin=True)
        withdrawal = await service.request(session, admin_owner, 500, None)
        with pytest.raises(Forbidden) as exc:
            await service.approve(session, withdrawal.id, admin_owner, ManualPayout())
        assert exc.value.code == "SELF_APPROVAL"
        assert (await service.approve(session, withdrawal.id, ADMIN, ManualPayout())).status == "paid"


async def test_a_refused_payout_leaves_the_withdrawal_requested_and_the_money_held():
    async with rollback_session(SETTINGS) as session:
        owner = await funded(session, 1_000)
        withdrawal = await service.request(session, owner, 700, None)
        with pytest.raises(PayoutFailed):
            async with session.begin_nested():  # what the request's rollback does
                await service.approve(session, withdrawal.id, ADMIN, RefusingPayout())
        assert await amounts(session, owner.tenant_id) == (1_000, 700)
        await session.refresh(withdrawal)
        assert withdrawal.status == "requested"
        paid = await service.approve(session, withdrawal.id, ADMIN, ManualPayout())
        assert paid.status == "paid" and await amounts(session, owner.tenant_id) == (300, 0)
