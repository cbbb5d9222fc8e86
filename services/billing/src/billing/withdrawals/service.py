"""requested (amount held) -> paid (hold captured to `payouts`) | rejected (hold released).

A decision locks the withdrawal row, so two admins deciding at once serialise and the second
gets 409; the hold's business key (`withdrawal:<id>`) keeps the ledger side at most once too."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from common.auth import Principal
from common.errors import Conflict, Forbidden, NotFound, PaymentRequired
from sqlalchemy.ext.asyncio import AsyncSession

from billing.ledger import service as ledger
from billing.models import Withdrawal
from billing.withdrawals.payouts import PayoutAdapter
from billing.withdrawals.repository import WithdrawalRepository
from billing.withdrawals.schemas import AdminWithdrawalRead, WithdrawalRead

# withdrawals has no column for the rejection reason yet: it is kept after the requester's note,
# behind this marker, and split off again when read.
_REJECTED = "\n[rejected] "


def hold_key(withdrawal_id: uuid.UUID) -> str:
    return f"withdrawal:{withdrawal_id}"


def _split_note(withdrawal: Withdrawal) -> tuple[str | None, str | None]:
    if withdrawal.status != "rejected" or not withdrawal.note or _REJECTED not in withdrawal.note:
        return withdrawal.note, None
    note, _, reason = withdrawal.note.rpartition(_REJECTED)
    return note or None, reason


def to_read(withdrawal: Withdrawal) -> WithdrawalRead:
    note, reason = _split_note(withdrawal)
    return WithdrawalRead(
        id=withdrawal.id, amount=withdrawal.amount_minor, currency=withdrawal.currency,
        status=withdrawal.status, note=note, rejection_reason=reason,  # type: ignore[arg-type]
        payout_method=withdrawal.payout_method, payout_reference=withdrawal.payout_reference,
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
    return withdrawal


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
    """Capture the hold (customer -> payouts), pay out through `payout`, mark it paid."""
    withdrawal = await _undecided(session, withdrawal_id)
    if withdrawal.requested_by == admin.user_id:
        # Four eyes on money leaving: an admin who asked for a payout for their own tenant
        # cannot also approve it (rejecting it, which moves nothing, stays allowed).
        raise Forbidden("Another platform admin must approve your own withdrawal", code="SELF_APPROVAL")
    # Capture first: if the ledger refuses, no money has left; if the payout then fails, the
    # whole transaction (capture included) rolls back and the withdrawal stays requested.
    if not await ledger.capture(session, hold_key(withdrawal.id), f"Withdrawal {withdrawal.id}"):
        raise _settled_elsewhere(withdrawal)
    method, reference = await payout.pay(withdrawal)
    withdrawal.status = "paid"
    withdrawal.payout_method = method
    withdrawal.payout_reference = reference
    withdrawal.decided_by = admin.user_id
    withdrawal.decided_at = datetime.now(UTC)
    await session.flush()
    return withdrawal


async def reject(session: AsyncSession, withdrawal_id: uuid.UUID, admin: Principal, reason: str) -> Withdrawal:
    """Release the hold (the credit is available again) and mark it rejected, with the reason."""
    withdrawal = await _undecided(session, withdrawal_id)
    if not await ledger.release(session, hold_key(withdrawal.id)):
        raise _settled_elsewhere(withdrawal)
    withdrawal.status = "rejected"
    withdrawal.note = f"{withdrawal.note or ''}{_REJECTED}{reason}"
    withdrawal.decided_by = admin.user_id
    withdrawal.decided_at = datetime.now(UTC)
    await session.flush()
    return withdrawal


async def list_withdrawals(
    session: AsyncSession, *, tenant_id: str | None, status: str | None, offset: int, limit: int
) -> tuple[list[Withdrawal], int]:
    return await WithdrawalRepository(session).find(tenant_id=tenant_id, status=status, offset=offset, limit=limit)
