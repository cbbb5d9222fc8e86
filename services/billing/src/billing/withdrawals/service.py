"""requested (amount held) -> paid (hold captured to `payouts`) | rejected (hold released).

A decision locks the withdrawal row, so two admins deciding at once serialise and the second
gets 409; the hold's business key (`withdrawal:<id>`) keeps the ledger side at most once too.
Each step emits its event (`billing.withdrawal.requested|paid|rejected.v1`) in its transaction.

Lock order of an approval: withdrawal, hold, the tenant's card payments (the payout), then the
customer account (the capture). The webhook's reconcile locks a payment, then the account, so
the two never wait on each other in opposite orders."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from common.auth import Principal
from common.contracts.base import Payload
from common.contracts.billing.v1 import (
    WithdrawalPaidV1,
    WithdrawalRejectedV1,
    WithdrawalRequestedV1,
)
from common.errors import Conflict, Forbidden, NotFound, PaymentRequired
from common.messaging import emit
from sqlalchemy.ext.asyncio import AsyncSession

from billing.ledger import service as ledger
from billing.models import Withdrawal
from billing.withdrawals.payouts import PayoutAdapter
from billing.withdrawals.repository import WithdrawalRepository
from billing.withdrawals.schemas import AdminWithdrawalRead, WithdrawalRead


def hold_key(withdrawal_id: uuid.UUID) -> str:
    return f"withdrawal:{withdrawal_id}"


def to_read(withdrawal: Withdrawal) -> WithdrawalRead:
    refunded = withdrawal.payout_refunded_minor
    return WithdrawalRead(
        id=withdrawal.id, amount=withdrawal.amount_minor, currency=withdrawal.currency,
        status=withdrawal.status, note=withdrawal.note,  # type: ignore[arg-type]
        rejection_reason=withdrawal.rejection_reason,
        payout_method=withdrawal.payout_method, payout_reference=withdrawal.payout_reference,
        payout_refunded=refunded, payout_manual=None if refunded is None else withdrawal.amount_minor - refunded,
        requested_by=withdrawal.requested_by, created_at=withdrawal.created_at, decided_at=withdrawal.decided_at,
    )


def to_admin_read(withdrawal: Withdrawal) -> AdminWithdrawalRead:
    return AdminWithdrawalRead(
        **to_read(withdrawal).model_dump(), tenant_id=withdrawal.tenant_id, decided_by=withdrawal.decided_by
    )


async def request(session: AsyncSession, principal: Principal, amount: int, note: str | None) -> Withdrawal:
    """Hold `amount` of the caller's tenant's available balance and record the request."""
    account = await ledger.require_account(session, principal.tenant_id)
    withdrawal_id = uuid.uuid4()
    outcome = await ledger.place_hold(
        session, tenant_id=principal.tenant_id, currency=account.currency, business_key=hold_key(withdrawal_id),
        kind="withdrawal", reference=str(withdrawal_id), amount=amount,
    )
    if outcome.status != "held" or outcome.hold is None:
        available = account.balance_minor - account.held_minor
        raise PaymentRequired(
            "Not enough available credit to withdraw that much",
            details={"requested": amount, "available": max(available, 0)},
        )
    withdrawal = Withdrawal(
        id=withdrawal_id, tenant_id=principal.tenant_id, requested_by=principal.user_id, amount_minor=amount,
        currency=account.currency, status="requested", hold_id=outcome.hold.id, note=note,
    )
    await WithdrawalRepository(session).add(withdrawal)
    await _announce(session, withdrawal, WithdrawalRequestedV1(
        **_facts(withdrawal), requested_by=withdrawal.requested_by,
    ))
    return withdrawal


def _facts(withdrawal: Withdrawal) -> dict[str, Any]:
    return {
        "tenant_id": withdrawal.tenant_id, "withdrawal_id": str(withdrawal.id),
        "amount_minor": withdrawal.amount_minor, "currency": withdrawal.currency,
    }


async def _announce(session: AsyncSession, withdrawal: Withdrawal, payload: Payload) -> None:
    await emit(session, payload, subject=str(withdrawal.id), tenant_id=withdrawal.tenant_id)


async def _undecided(session: AsyncSession, withdrawal_id: uuid.UUID) -> Withdrawal:
    withdrawal = await WithdrawalRepository(session).lock(withdrawal_id)
    if withdrawal is None:
        raise NotFound("No such withdrawal", code="WITHDRAWAL_NOT_FOUND")
    if withdrawal.status != "requested":
        raise Conflict(
            f"This withdrawal was already {withdrawal.status}",
            code="WITHDRAWAL_ALREADY_DECIDED",
            details={"status": withdrawal.status},
        )
    return withdrawal


def _settled_elsewhere(withdrawal: Withdrawal) -> Conflict:
    # The hold was captured or released outside this flow: never pay out or decide on it blind.
    return Conflict("The withdrawal's hold is no longer held", code="WITHDRAWAL_HOLD_SETTLED",
                    details={"withdrawalId": str(withdrawal.id)})


async def approve(
    session: AsyncSession, withdrawal_id: uuid.UUID, admin: Principal, payout: PayoutAdapter
) -> Withdrawal:
    """Pay out through `payout`, capture the hold (customer -> payouts), mark it paid."""
    withdrawal = await _undecided(session, withdrawal_id)
    if withdrawal.requested_by == admin.user_id:
        # Four eyes on money leaving: an admin who asked for a payout for their own tenant
        # cannot also approve it (rejecting it, which moves nothing, stays allowed).
        raise Forbidden("Another platform admin must approve your own withdrawal", code="SELF_APPROVAL")
    # The hold is locked and checked first, so the capture after the payout cannot fail: money
    # never leaves for a withdrawal whose hold is gone. The capture comes after the payout
    # because it locks the customer account, which the payout's locks must precede.
    if not await ledger.still_held(session, hold_key(withdrawal.id)):
        raise _settled_elsewhere(withdrawal)
    paid = await payout.pay(session, withdrawal)
    if not await ledger.capture(session, hold_key(withdrawal.id), f"Withdrawal {withdrawal.id}"):
        raise _settled_elsewhere(withdrawal)  # not reachable while the hold is locked
    withdrawal.status = "paid"
    withdrawal.payout_method = paid.method
    withdrawal.payout_reference = paid.reference
    withdrawal.payout_refunded_minor = paid.refunded_minor
    withdrawal.decided_by = admin.user_id
    withdrawal.decided_at = datetime.now(UTC)
    await session.flush()
    await _announce(session, withdrawal, WithdrawalPaidV1(
        **_facts(withdrawal), method=paid.method, reference=paid.reference,
        refunded_minor=paid.refunded_minor, manual_minor=withdrawal.amount_minor - paid.refunded_minor,
    ))
    return withdrawal


async def reject(session: AsyncSession, withdrawal_id: uuid.UUID, admin: Principal, reason: str) -> Withdrawal:
    """Release the hold (the credit is available again) and mark it rejected, with the reason."""
    withdrawal = await _undecided(session, withdrawal_id)
    if not await ledger.release(session, hold_key(withdrawal.id)):
        raise _settled_elsewhere(withdrawal)
    withdrawal.status = "rejected"
    withdrawal.rejection_reason = reason
    withdrawal.decided_by = admin.user_id
    withdrawal.decided_at = datetime.now(UTC)
    await session.flush()
    await _announce(session, withdrawal, WithdrawalRejectedV1(**_facts(withdrawal), reason=reason))
    return withdrawal


async def list_withdrawals(
    session: AsyncSession, *, tenant_id: str | None, status: str | None, offset: int, limit: int
) -> tuple[list[Withdrawal], int]:
    return await WithdrawalRepository(session).find(tenant_id=tenant_id, status=status, offset=offset, limit=limit)
