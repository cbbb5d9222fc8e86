"""How an approved withdrawal's money leaves the platform.

Approval captures the hold and calls `PayoutAdapter.pay` in the same database transaction, with
the withdrawal row locked; if `pay` raises, the transaction rolls back and the withdrawal stays
`requested`. `pay` can therefore run again for the same withdrawal after a rollback or a lost
response (the admin retries), so an adapter that moves real money must be idempotent per
withdrawal id: a Stripe refund payout (refunding the tenant's card payments, to be built on
`billing/payments/`) passes `idempotency_key=f"withdrawal:{withdrawal.id}"` to Stripe and plugs
in through `payout_adapter` below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated

from common.errors import AppError
from fastapi import Depends

from billing.models import Withdrawal


class PayoutFailed(AppError):
    status_code, code, message = 502, "PAYOUT_FAILED", "The payout provider refused the payout"


class PayoutAdapter(ABC):
    @abstractmethod
    async def pay(self, withdrawal: Withdrawal) -> tuple[str, str]:
        """Pay `withdrawal.amount_minor` out to its tenant; returns (method, reference).
        Raises PayoutFailed when the money did not leave."""


class ManualPayout(PayoutAdapter):
    """Finance transfers the money by hand; the reference, derived from the withdrawal id (so a
    retry gives the same one), is what they quote on the transfer."""

    async def pay(self, withdrawal: Withdrawal) -> tuple[str, str]:
        return "manual", f"MAN-{withdrawal.id.hex[:16].upper()}"


def payout_adapter() -> PayoutAdapter:
    """The adapter approvals pay through (a FastAPI dependency: tests and the Stripe payout
    override it here)."""
    return ManualPayout()


PayoutDep = Annotated[PayoutAdapter, Depends(payout_adapter)]
