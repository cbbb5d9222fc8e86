"""Events published by the billing service, version 1."""

from __future__ import annotations

from typing import Literal

from common.contracts.base import Payload
from common.contracts.registry import event


@event("billing.account.opened.v1")
class AccountOpenedV1(Payload):
    account_id: str
    tenant_id: str
    currency: str


@event("billing.credits.reserved.v1")
class CreditsReservedV1(Payload):
    """A hold covers the message or order: messaging may dispatch it."""

    reference: str
    reference_kind: str
    tenant_id: str
    hold_id: str
    amount_minor: int
    currency: str


@event("billing.credits.rejected.v1")
class CreditsRejectedV1(Payload):
    """No hold: `reason` is insufficient_credits (a tenant without an account gets one, empty)."""

    reference: str
    reference_kind: str
    tenant_id: str
    reason: str
    amount_minor: int | None = None


@event("billing.balance.changed.v1")
class BalanceChangedV1(Payload):
    tenant_id: str
    balance_minor: int
    held_minor: int
    available_minor: int
    currency: str
    reason: str


# -- payments (topic billing.payment, key = payment id) ----------------------------------------


@event("billing.payment.succeeded.v1")
class PaymentSucceededV1(Payload):
    """A card top-up succeeded (once per payment: when Stripe is first known to have been paid)
    and the balance was credited with it, less whatever had been refunded or disputed by then."""

    tenant_id: str
    payment_id: str
    amount_minor: int
    currency: str


@event("billing.payment.reversed.v1")
class PaymentReversedV1(Payload):
    """Money a top-up had credited was taken back: a refund the customer got (never the refunds
    that pay out a withdrawal: those are `billing.withdrawal.paid.v1`) or a card dispute.
    `amount_minor` is what this reversal took (partly owed as a receivable when the balance could
    not cover it)."""

    tenant_id: str
    payment_id: str
    amount_minor: int
    currency: str
    reason: Literal["refund", "dispute"]


# -- withdrawals (topic billing.withdrawal, key = withdrawal id) -------------------------------


@event("billing.withdrawal.requested.v1")
class WithdrawalRequestedV1(Payload):
    """A tenant asked to take credit out; the amount is held until a platform admin decides."""

    tenant_id: str
    withdrawal_id: str
    amount_minor: int
    currency: str
    requested_by: str


@event("billing.withdrawal.paid.v1")
class WithdrawalPaidV1(Payload):
    """Approved and paid out; the hold was captured. `method` is `stripe_refund` (refunds to the
    tenant's card payments), `manual` (finance transfers it) or `stripe_refund+manual`;
    `reference` lists the Stripe refund ids and/or the manual reference, comma-separated;
    `refunded_minor` went back to cards, `manual_minor` is left for finance to transfer."""

    tenant_id: str
    withdrawal_id: str
    amount_minor: int
    currency: str
    method: str
    reference: str
    refunded_minor: int = 0
    manual_minor: int = 0


@event("billing.withdrawal.rejected.v1")
class WithdrawalRejectedV1(Payload):
    """Refused by a platform admin; the hold was released (the credit is available again)."""

    tenant_id: str
    withdrawal_id: str
    amount_minor: int
    currency: str
    reason: str
