"""Top-ups and the Stripe webhook.

A top-up creates a PaymentIntent and a `payments` row; the balance does not change until Stripe
says so. Each webhook event is a *reconcile*: it can only move the payment's state forward
(succeeded, refunded so far, disputed so far), then the ledger is brought from what was applied
to what the state is worth, in one movement keyed by the event. So a redelivery moves nothing
(its event is already processed, and its business key already posted), and events in any order
end at the same balance.

A reversal the customer's available balance cannot cover takes what is available and puts the
rest on the `receivables` system account; money coming back for that payment repays it first.

Refunds are also how withdrawals are paid out (billing/withdrawals/payouts.py). Such a refund
is recorded in `payout_refunded_minor` (and counted in `refunded_minor`) in the approval's
transaction, with the payment row locked; the withdrawal's capture has already taken that money
from the balance, so what a payment is worth (`worth`) subtracts only the customer's refunds.
The row lock orders an approval and the charge.refunded event about its refund: the refund
exists at Stripe only while the approval holds the lock, so the event's reconcile runs after the
approval commits (and sees the payout) or after it rolls back (and then, the refund being
unknown to us, debits it as a customer refund; a replayed approval gives it back).

Events: `billing.payment.succeeded.v1` when a payment is first known paid (and credited),
`billing.payment.reversed.v1` whenever a refund or dispute takes credit back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from common.contracts.billing.v1 import PaymentReversedV1, PaymentSucceededV1
from common.errors import NotFound, ServiceUnavailable, Unprocessable
from common.ids import parse_uuid
from common.messaging import emit
from sqlalchemy.ext.asyncio import AsyncSession

from billing.ledger import service as ledger
from billing.ledger.repository import LedgerRepository
from billing.models import Payment
from billing.payments.repository import PaymentRepository
from billing.payments.schemas import PaymentRead, TopupCreate, TopupRead
from billing.payments.stripe_gateway import CreatedRefund, StripeGateway, VerifiedEvent

log = logging.getLogger("billing.payments")

CLEARING = "stripe_clearing"
# Not a Stripe event type: the movement (if any) that recording a payout refund makes.
PAYOUT_REFUND = "switchboard.payout_refund"
RECEIVABLES = "receivables"
DISPUTE_WON = "won"
# Inquiries (`warning_*`) move no money; only a real dispute withdraws the funds.
INQUIRY_PREFIX = "warning_"
# The events that can change a payment; any other type is stored and marked processed.
ACTED_ON = frozenset({
    "payment_intent.succeeded", "payment_intent.processing", "payment_intent.requires_action",
    "payment_intent.payment_failed", "payment_intent.canceled",
    "charge.succeeded", "charge.refunded",
    "charge.dispute.created", "charge.dispute.updated", "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated", "charge.dispute.closed",
})


class PaymentNotKnownYet(ServiceUnavailable):
    """An event for one of our PaymentIntents whose row is not committed yet: Stripe retries."""

    code, message = "PAYMENT_NOT_KNOWN_YET", "The payment this event is about is not recorded yet"


# -- top-ups ---------------------------------------------------------------------------------


async def create_topup(
    session: AsyncSession, gateway: StripeGateway, tenant_id: str, body: TopupCreate
) -> TopupRead:
    account = await ledger.require_account(session, tenant_id)
    if body.currency != account.currency:
        raise Unprocessable(
            f"Your balance is in {account.currency}; top up in {account.currency}", code="CURRENCY_MISMATCH"
        )
    payment_id = uuid.uuid4()
    intent = await gateway.create_payment_intent(
        amount=body.amount,
        currency=body.currency,
        metadata={"tenant_id": tenant_id, "payment_id": str(payment_id)},
        idempotency_key=f"switchboard-topup-{payment_id}",
    )
    await PaymentRepository(session).add(
        Payment(
            id=payment_id, tenant_id=tenant_id, stripe_payment_intent_id=intent.id,
            amount_minor=body.amount, currency=body.currency, status=intent.status,
        )
    )
    return TopupRead(
        payment_id=str(payment_id), payment_intent_id=intent.id, client_secret=intent.client_secret,
        amount=body.amount, currency=body.currency, status=intent.status,
    )


def payment_read(payment: Payment) -> PaymentRead:
    return PaymentRead(
        payment_id=str(payment.id), payment_intent_id=payment.stripe_payment_intent_id,
        amount=payment.amount_minor, currency=payment.currency, status=payment.status,
        succeeded=payment.succeeded, refunded=payment.refunded_minor, payout_refunded=payment.payout_refunded_minor,
        disputed=payment.disputed_minor,
        credited=payment.applied_minor, created_at=payment.created_at, updated_at=payment.updated_at,
    )


async def get_payment(session: AsyncSession, tenant_id: str, payment_id: uuid.UUID) -> PaymentRead:
    payment = await PaymentRepository(session).get_for_tenant(payment_id, tenant_id)
    if payment is None:
        raise NotFound("No such payment", code="PAYMENT_NOT_FOUND")
    return payment_read(payment)


# -- webhook ---------------------------------------------------------------------------------


async def store_event(session: AsyncSession, event: VerifiedEvent) -> bool:
    """Keep the raw event before acting on it; False when it was stored before."""
    return await PaymentRepository(session).store_event(event.id, event.type, event.payload)


async def process_event(session: AsyncSession, event_id: str) -> Literal["processed", "duplicate"]:
    """Act on a stored event once: the event row is locked, so concurrent deliveries of it wait
    and then find it processed."""
    repo = PaymentRepository(session)
    stored = await repo.lock_event(event_id)
    if stored is None:
        raise RuntimeError(f"stripe event {event_id} was not stored")
    if stored.processed_at is not None:
        return "duplicate"
    note = await reconcile(session, event_id, stored.type, stored.payload)
    await repo.finish_event(event_id, note)
    return "processed"


async def record_failure(session: AsyncSession, event_id: str, error: str) -> None:
    await PaymentRepository(session).record_event_error(event_id, error)


@dataclass
class _Facts:
    """What one event says about a payment (None: it says nothing about that)."""

    intent_id: str | None = None
    charge_id: str | None = None
    payment_id: uuid.UUID | None = None
    tenant_id: str | None = None
    intent_status: str | None = None
    succeeded: bool = False
    refunded: int | None = None
    dispute_id: str | None = None
    dispute_amount: int | None = None
    dispute_status: str | None = None
    amount: int | None = None
    currency: str | None = None


def _facts(event_type: str, obj: dict[str, Any]) -> _Facts | None:
    if event_type not in ACTED_ON:
        return None
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    facts = _Facts(tenant_id=_str(metadata.get("tenant_id")))
    facts.payment_id = parse_uuid(metadata.get("payment_id"))
    if event_type.startswith("payment_intent.") and obj.get("object") == "payment_intent":
        facts.intent_id = _str(obj.get("id"))
        facts.intent_status = _str(obj.get("status"))
        facts.charge_id = _id_of(obj.get("latest_charge"))
        facts.succeeded = event_type == "payment_intent.succeeded" or obj.get("status") == "succeeded"
        facts.amount = _int(obj.get("amount"))
        facts.currency = _str(obj.get("currency"))
    elif event_type.startswith("charge.dispute.") and obj.get("object") == "dispute":
        facts.intent_id = _id_of(obj.get("payment_intent"))
        facts.charge_id = _id_of(obj.get("charge"))
        facts.dispute_id = _str(obj.get("id"))
        facts.dispute_amount = _int(obj.get("amount"))
        facts.dispute_status = _str(obj.get("status"))
        facts.succeeded = True  # only a paid charge can be disputed
    elif event_type.startswith("charge.") and obj.get("object") == "charge":
        facts.intent_id = _id_of(obj.get("payment_intent"))
        facts.charge_id = _str(obj.get("id"))
        # A captured, paid charge proves the payment succeeded even if that event is late.
        facts.succeeded = obj.get("status") == "succeeded" and bool(obj.get("paid")) and obj.get("captured") is not False
        if event_type == "charge.refunded":
            facts.refunded = _int(obj.get("amount_refunded"))
        facts.amount = _int(obj.get("amount"))
        facts.currency = _str(obj.get("currency"))
    else:
        return None
    return facts


async def reconcile(session: AsyncSession, event_id: str, event_type: str, payload: dict[str, Any]) -> str | None:
    """Apply one event; returns a note kept on the event (None when it simply applied)."""
    obj = payload.get("data", {}).get("object", {})
    facts = _facts(event_type, obj) if isinstance(obj, dict) else None
    if facts is None:
        return None  # a type we do not act on: stored, and processed as nothing to do
    repo = PaymentRepository(session)
    payment = await repo.lock(intent_id=facts.intent_id, charge_id=facts.charge_id, payment_id=facts.payment_id)
    if payment is None:
        if facts.payment_id is not None:
            raise PaymentNotKnownYet()  # ours (our metadata), but its row is not committed yet
        return "no matching payment"
    if facts.intent_id is not None and facts.intent_id != payment.stripe_payment_intent_id:
        log.error("stripe event intent mismatch", extra={"event_id": event_id, "payment_id": str(payment.id)})
        return "payment intent does not match the payment"
    if facts.tenant_id is not None and facts.tenant_id != payment.tenant_id:
        log.error("stripe event tenant mismatch", extra={"event_id": event_id, "payment_id": str(payment.id)})
        return "tenant in metadata does not match the payment"
    if facts.currency is not None and facts.currency.upper() != payment.currency:
        log.error("stripe event currency mismatch", extra={"event_id": event_id, "payment_id": str(payment.id)})
        return f"currency {facts.currency} does not match the payment"
    if facts.amount is not None and facts.amount != payment.amount_minor:
        # We created the intent for exactly this amount; anything else needs a person.
        log.error("stripe event amount mismatch", extra={"event_id": event_id, "payment_id": str(payment.id)})
        return f"amount {facts.amount} does not match the payment"

    # -- the payment's state only moves forward ----------------------------------------------
    was_succeeded = payment.succeeded
    if facts.charge_id and facts.succeeded and payment.stripe_charge_id is None:
        payment.stripe_charge_id = facts.charge_id
    if facts.succeeded:
        payment.succeeded = True
    # Stripe never refunds or disputes more than the charge; capped all the same.
    if facts.refunded is not None:
        payment.refunded_minor = max(payment.refunded_minor, min(facts.refunded, payment.amount_minor))
    if facts.dispute_id is not None and facts.dispute_amount is not None:
        if facts.dispute_status == DISPUTE_WON or event_type == "charge.dispute.funds_reinstated":
            payment.disputed_minor = 0  # a charge has at most one dispute
        elif not (facts.dispute_status or "").startswith(INQUIRY_PREFIX) and not await repo.dispute_won(facts.dispute_id):
            payment.disputed_minor = max(payment.disputed_minor, min(facts.dispute_amount, payment.amount_minor))
    payment.status = _status(payment, facts.intent_status)

    # -- bring the ledger to what that state is worth ----------------------------------------
    await _apply(session, payment, event_id=event_id, event_type=event_type, facts=facts)
    if payment.succeeded and not was_succeeded:
        await emit(
            session,
            PaymentSucceededV1(
                tenant_id=payment.tenant_id, payment_id=str(payment.id), amount_minor=payment.amount_minor,
                currency=payment.currency,
            ),
            subject=str(payment.id),
            tenant_id=payment.tenant_id,
        )
    await session.flush()
    return None


def worth(payment: Payment) -> int:
    """What the payment is worth to the customer's balance now: its amount once it succeeded, less
    the refunds the customer got and any dispute. Refunds we made to pay out a withdrawal are
    part of refunded_minor but not subtracted: that money already left the balance when the
    withdrawal's hold was captured (customer -> payouts), so debiting it here would take it twice.
    """
    customer_refunds = max(payment.refunded_minor - payment.payout_refunded_minor, 0)
    return (payment.amount_minor if payment.succeeded else 0) - customer_refunds - payment.disputed_minor


def refundable(payment: Payment) -> int:
    """What can still be refunded to the card. refunded_minor counts our payout refunds from the
    moment we make them (record_payout_refund), not only once Stripe reports them, so it is not
    subtracted twice nor missed while the charge.refunded event is on its way."""
    if not payment.succeeded or payment.disputed_minor or payment.stripe_payment_intent_id is None:
        return 0
    return max(payment.amount_minor - payment.refunded_minor, 0)


async def record_payout_refund(
    session: AsyncSession, payment: Payment, refund: CreatedRefund, withdrawal_id: uuid.UUID
) -> None:
    """Record a refund that pays out (part of) a withdrawal, in the transaction that captures the
    withdrawal's hold. `payment` must be row-locked (PaymentRepository.lock_refundable): a
    charge.refunded event about this refund waits on that lock until this commits, and then finds
    it counted as a payout, so it debits nothing.

    refunded_minor becomes Stripe's own total for the charge after the refund (it includes every
    earlier refund, reported to us or not). If the refund had already been reported as a
    customer refund (an earlier approval that refunded, then rolled back, and is now replayed
    with the same idempotency key), the reconcile below gives that debit back."""
    payment.payout_refunded_minor += refund.amount
    stripe_total = refund.charge_amount_refunded
    if stripe_total is None:
        stripe_total = payment.refunded_minor + refund.amount
    payment.refunded_minor = min(
        max(payment.refunded_minor, stripe_total, payment.payout_refunded_minor), payment.amount_minor
    )
    payment.status = _status(payment, None)
    await _apply(session, payment, event_id=f"payout:{withdrawal_id}", event_type=PAYOUT_REFUND, facts=_Facts())
    await session.flush()


async def _apply(session: AsyncSession, payment: Payment, *, event_id: str, event_type: str, facts: _Facts) -> None:
    """Post what the payment's state is worth minus what was applied, as one movement."""
    target = worth(payment)
    delta = target - payment.applied_minor
    if delta == 0:
        return
    await _move(session, payment, delta, event_id=event_id, event_type=event_type, facts=facts)
    payment.applied_minor = target
    if delta < 0:
        await emit(
            session,
            PaymentReversedV1(
                tenant_id=payment.tenant_id, payment_id=str(payment.id), amount_minor=-delta,
                currency=payment.currency, reason="dispute" if event_type.startswith("charge.dispute.") else "refund",
            ),
            subject=str(payment.id),
            tenant_id=payment.tenant_id,
        )


def _status(payment: Payment, intent_status: str | None) -> str:
    if payment.succeeded:
        if payment.disputed_minor:
            return "disputed"
        if payment.refunded_minor >= payment.amount_minor:
            return "refunded"
        if payment.refunded_minor:
            return "partially_refunded"
        return "succeeded"
    if intent_status and intent_status != "succeeded":
        return intent_status[:24]
    return payment.status


async def _move(
    session: AsyncSession, payment: Payment, delta: int, *, event_id: str, event_type: str, facts: _Facts
) -> None:
    """Post `delta` (positive: to the customer) as one balanced movement."""
    ledger_repo = LedgerRepository(session)
    repo = PaymentRepository(session)
    account = await ledger.account_for(session, payment.tenant_id, payment.currency, create=True)
    assert account is not None
    account = await repo.lock_account(account.id)  # what is available must not change under us
    clearing = await ledger_repo.system_account_id(CLEARING)
    receivables = await ledger_repo.system_account_id(RECEIVABLES)
    key_prefix = f"stripe:{payment.id}:"
    kind, description = _describe(delta, event_type, payment, facts)
    if delta > 0:
        owed = await repo.outstanding_receivable(payment.tenant_id, key_prefix, receivables)
        repay = min(delta, max(owed, 0))
        postings = [(receivables, repay), (account.id, delta - repay), (clearing, -delta)]
    else:
        available = max(account.balance_minor - account.held_minor, 0)
        take = min(-delta, available)
        postings = [(account.id, -take), (receivables, delta + take), (clearing, -delta)]
    postings = [(a, m) for a, m in postings if m != 0]
    key = f"{key_prefix}{event_id}"
    if len(postings) == 2 and postings[0][0] == account.id:
        # Only the customer and the clearing account: the ledger's own credit (which announces it).
        tx = await ledger.credit(
            session, account, postings[0][1], business_key=key, kind=kind, counter_account=CLEARING,
            description=description, reference=payment.stripe_payment_intent_id,
        )
        _posted(tx, event_id, payment)
        return
    tx = await ledger.post(
        session, business_key=key, kind=kind, tenant_id=payment.tenant_id,
        description=description, reference=payment.stripe_payment_intent_id,
        postings=postings, details={"paymentId": str(payment.id), "stripeEventId": event_id, "delta": delta},
    )
    _posted(tx, event_id, payment)
    if any(a == account.id for a, _ in postings):
        await ledger.balance_changed(session, account.id, kind)


def _posted(tx: uuid.UUID | None, event_id: str, payment: Payment) -> None:
    if tx is None:
        # The event row is locked and unprocessed, so its movement cannot exist yet.
        raise RuntimeError(f"stripe event {event_id} was already posted for payment {payment.id}")


def _describe(delta: int, event_type: str, payment: Payment, facts: _Facts) -> tuple[ledger.Kind, str]:
    intent = payment.stripe_payment_intent_id
    if event_type == PAYOUT_REFUND and delta > 0:
        return "reversal", f"A refund of top-up {intent} was a withdrawal payout, not a customer refund: restored"
    if event_type.startswith("charge.dispute."):
        if delta > 0:
            return "dispute", f"Card dispute {facts.dispute_id} won: top-up {intent} restored"
        return "dispute", f"Card dispute {facts.dispute_id} on top-up {intent}"
    if delta < 0:
        return "refund", f"Top-up {intent} refunded"
    return "topup", f"Top-up by card ({intent})"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _id_of(value: Any) -> str | None:
    """A Stripe reference: an id, or the expanded object carrying one."""
    if isinstance(value, dict):
        return _str(value.get("id"))
    return _str(value)
