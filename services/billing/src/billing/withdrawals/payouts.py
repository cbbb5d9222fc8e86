"""How an approved withdrawal's money leaves the platform.

Approval locks the withdrawal and its hold, calls `PayoutAdapter.pay`, then captures the hold, all
in one database transaction; if anything raises, the transaction rolls back and the withdrawal
stays `requested`. `pay` can therefore run again for the same withdrawal after a rollback or a
lost response (the admin retries), so an adapter that moves real money must be idempotent per
withdrawal: StripeRefundPayout gives Stripe the key `withdrawal:<id>:<payment id>` for each
refund, so a replay gets the first refund back instead of a second one.

What approvals use (`payout_adapter`): refunds to the tenant's own card payments when it has
refundable ones (money goes back where it came from, and Stripe needs no bank details), and a
manual payout (finance transfers it by hand) for the rest or when there are none.
"""

from __future__ import annotations

import logging
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Annotated

from common.errors import AppError
from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession

from billing.deps import StripeGatewayDep
from billing.models import Withdrawal
from billing.payments import service as payments
from billing.payments.repository import PaymentRepository
from billing.payments.stripe_gateway import RefundRefused, StripeGateway

log = logging.getLogger("billing.withdrawals.payouts")

# payout_reference holds the refund ids joined (500 characters): beyond this many card payments
# the rest of a withdrawal is paid by hand.
MAX_REFUNDED_PAYMENTS = 10


class PayoutFailed(AppError):
    status_code, code, message = 502, "PAYOUT_FAILED", "The payout provider refused the payout"


@dataclass(frozen=True)
class Payout:
    method: str  # manual | stripe_refund | stripe_refund+manual
    reference: str
    refunded_minor: int = 0  # what went back to cards; the rest of the amount is paid by hand


class PayoutAdapter(ABC):
    @abstractmethod
    async def pay(self, session: AsyncSession, withdrawal: Withdrawal) -> Payout:
        """Pay `withdrawal.amount_minor` out to its tenant, recording what it did through
        `session` (the approval's transaction). Raises (PayoutFailed, ServiceUnavailable) when
        the money did not leave, or when it cannot tell: then the approval rolls back and can be
        retried."""


class ManualPayout(PayoutAdapter):
    """Finance transfers the money by hand; the reference, derived from the withdrawal id (so a
    retry gives the same one), is what they quote on the transfer."""

    async def pay(self, session: AsyncSession, withdrawal: Withdrawal) -> Payout:
        return Payout("manual", manual_reference(withdrawal.id))


def manual_reference(withdrawal_id: uuid.UUID) -> str:
    return f"MAN-{withdrawal_id.hex[:16].upper()}"


class StripeRefundPayout(PayoutAdapter):
    """Refunds the tenant's succeeded card payments, newest first, each up to what is left of it
    to refund, until the withdrawal is covered; what they cannot cover is paid by `fallback`.

    Partial rather than all-or-nothing: once one refund has gone through, that money has left
    and must be recorded, so a later payment that Stripe refuses (disputed meanwhile, too old)
    can only be made up another way. A refusal (nothing moved) skips the payment; any other
    failure (Stripe unreachable: the refund may or may not exist) raises, rolling the approval
    back, and a retry replays the same idempotency keys."""

    def __init__(self, gateway: StripeGateway, fallback: PayoutAdapter | None = None) -> None:
        self.gateway = gateway
        self.fallback = fallback or ManualPayout()

    async def pay(self, session: AsyncSession, withdrawal: Withdrawal) -> Payout:
        candidates = await PaymentRepository(session).lock_refundable(
            withdrawal.tenant_id, withdrawal.currency, limit=MAX_REFUNDED_PAYMENTS
        )
        remaining = withdrawal.amount_minor
        refund_ids: list[str] = []
        for payment in candidates:
            amount = min(payments.refundable(payment), remaining)
            if amount <= 0:
                continue
            assert payment.stripe_payment_intent_id is not None
            try:
                refund = await self.gateway.refund(
                    payment_intent=payment.stripe_payment_intent_id,
                    amount=amount,
                    metadata={
                        "withdrawal_id": str(withdrawal.id), "kind": "payout",
                        "tenant_id": withdrawal.tenant_id, "payment_id": str(payment.id),
                    },
                    idempotency_key=f"withdrawal:{withdrawal.id}:{payment.id}",
                )
            except RefundRefused:
                log.warning("payout refund refused", extra={"withdrawal_id": str(withdrawal.id), "payment_id": str(payment.id)})
                continue
            await payments.record_payout_refund(session, payment, refund, withdrawal.id)
            refund_ids.append(refund.id)
            remaining -= refund.amount
            if remaining <= 0:
                break
        refunded = withdrawal.amount_minor - remaining
        if not refund_ids:
            return await self.fallback.pay(session, withdrawal)
        if remaining <= 0:
            return Payout("stripe_refund", ",".join(refund_ids), refunded)
        rest = await self.fallback.pay(session, withdrawal)
        return Payout(f"stripe_refund+{rest.method}", ",".join([*refund_ids, rest.reference]), refunded)


class RefundOrManualPayout(PayoutAdapter):
    """What approvals use: StripeRefundPayout when Stripe is configured and the tenant has card
    payments left to refund, otherwise ManualPayout."""

    def __init__(self, gateway: StripeGateway) -> None:
        self.gateway = gateway
        self.manual = ManualPayout()

    async def pay(self, session: AsyncSession, withdrawal: Withdrawal) -> Payout:
        if self.gateway.configured and await PaymentRepository(session).has_refundable(
            withdrawal.tenant_id, withdrawal.currency
        ):
            return await StripeRefundPayout(self.gateway, self.manual).pay(session, withdrawal)
        return await self.manual.pay(session, withdrawal)


async def payout_adapter(gateway: StripeGatewayDep) -> PayoutAdapter:
    """The adapter approvals pay through (a FastAPI dependency: an app can override it; async,
    as a plain `def` dependency would cost a thread-pool hop per approval)."""
    return RefundOrManualPayout(gateway)


PayoutDep = Annotated[PayoutAdapter, Depends(payout_adapter)]
