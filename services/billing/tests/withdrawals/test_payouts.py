"""Withdrawals paid out by refunding the tenant's card payments, against localstripe (the Stripe
fake of the local stack) and the real billing schema: the refunds are real localstripe refunds,
Stripe's later report of them debits nothing, what cards cannot cover is paid by hand, and a
charge.refunded racing the approval waits for it. Most tests run in a rolled-back transaction;
the race needs two real ones."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import stripe
from billing.ledger import service as ledger
from billing.ledger.repository import LedgerRepository
from billing.models import LedgerEntry, LedgerTransaction, Payment
from billing.payments import service as payments
from billing.payments.repository import PaymentRepository
from billing.payments.stripe_gateway import CreatedRefund, StripeGateway, VerifiedEvent
from billing.settings import BillingSettings
from billing.withdrawals import service
from billing.withdrawals.payouts import RefundOrManualPayout, StripeRefundPayout, manual_reference
from common.auth import Principal
from common.db import create_engine, create_session_factory
from sqlalchemy import func, select, text

from tests.support import rollback_session

STRIPE_API = "http://127.0.0.1:8420"
SETTINGS = BillingSettings(stripe_api_key="sk_test_local", stripe_api_base=STRIPE_API, db_pool_size=6)
ADMIN = Principal(user_id="admin-1", tenant_id="platform", is_platform_admin=True)


def stripe_client() -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_local", base_addresses={"api": STRIPE_API},
                               http_client=stripe.HTTPXClient(timeout=10))


def payout() -> RefundOrManualPayout:
    return RefundOrManualPayout(StripeGateway(SETTINGS))


async def open_tenant(session, adjustment: int = 0) -> Principal:  # noqa: ANN001
    tenant = f"payout-{uuid.uuid4()}"
    await ledger.open_account(session, tenant, "USD", None)
    if adjustment:
        account = await ledger.require_account(session, tenant)
        await ledger.credit(session, account, adjustment, business_key=f"fund:{tenant}", kind="adjustment",
                            counter_account="adjustments", description="test funding")
    return Principal(user_id="owner-1", tenant_id=tenant, roles=("OWNER",))


async def stripe_event(event_type: str, obj: dict) -> VerifiedEvent:
    event_id = f"evt_{uuid.uuid4().hex}"
    return VerifiedEvent(id=event_id, type=event_type, payload={"id": event_id, "type": event_type, "data": {"object": obj}})


async def reconcile(session, event: VerifiedEvent) -> None:  # noqa: ANN001
    assert await payments.reconcile(session, event.id, event.type, event.payload) is None


async def card_top_up(session, tenant: str, amount: int, *, pay: bool = True) -> Payment:  # noqa: ANN001
    """A real localstripe PaymentIntent paid with a test card, and its payment row, credited by
    the payment_intent.succeeded event (delivered here, inside the session)."""
    client = stripe_client()
    # Only the tenant in the metadata: localstripe's own webhook delivery then finds no payment
    # (this one is never committed) instead of waiting for one.
    intent = await client.v1.payment_intents.create_async(
        {"amount": amount, "currency": "usd", "metadata": {"tenant_id": tenant}})
    payment = Payment(id=uuid.uuid4(), tenant_id=tenant, stripe_payment_intent_id=intent.id, amount_minor=amount,
                      currency="USD", status="requires_payment_method")
    await PaymentRepository(session).add(payment)
    if pay:
        await pay_with_test_card(intent.id)
        paid = await client.v1.payment_intents.retrieve_async(intent.id)
        await reconcile(session, await stripe_event("payment_intent.succeeded", paid.to_dict()))
    return payment


async def pay_with_test_card(intent_id: str) -> None:
    client = stripe_client()
    method = await client.v1.payment_methods.create_async({
        "type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    await client.v1.payment_intents.update_async(intent_id, {"payment_method": method.id})
    assert (await client.v1.payment_intents.confirm_async(intent_id)).status == "succeeded"


async def charge_refunded(intent_id: str) -> VerifiedEvent:
    """charge.refunded as Stripe would send it now: the charge with every refund so far."""
    client = stripe_client()
    intent = await client.v1.payment_intents.retrieve_async(intent_id)
    charge = await client.v1.charges.retrieve_async(intent.latest_charge.id)
    return await stripe_event("charge.refunded", charge.to_dict())


async def refunds_of(intent_id: str) -> list[tuple[int, dict]]:
    listed = await stripe_client().v1.refunds.list_async({"payment_intent": intent_id})
    return [(r.amount, r.metadata.to_dict()) for r in listed.data]


async def amounts(session, tenant: str) -> tuple[int, int]:  # noqa: ANN001
    repo = LedgerRepository(session)
    account = await repo.refreshed((await repo.customer(tenant)).id)
    return account.balance_minor, account.held_minor


async def kinds(session, tenant: str) -> list[tuple[str, str]]:  # noqa: ANN001
    """(kind, business key prefix) of the tenant's movements, oldest first (by entry id: one
    transaction's rows all have the same created_at)."""
    first_entry = select(func.min(LedgerEntry.id)).where(LedgerEntry.transaction_id == LedgerTransaction.id)
    rows = await session.scalars(
        select(LedgerTransaction).where(LedgerTransaction.tenant_id == tenant).order_by(first_entry.scalar_subquery())
    )
    return [(t.kind, t.business_key.split(":")[0]) for t in rows]


async def outbox(session, subject: uuid.UUID | str) -> list[dict]:  # noqa: ANN001
    rows = await session.execute(
        text("SELECT event_type, envelope FROM outbox WHERE key = :k ORDER BY id"), {"k": str(subject)})
    return [{"type": t, **e["data"]} for t, e in rows.all()]


async def test_an_approval_refunds_the_newest_card_payments_first_and_stripes_report_of_it_debits_nothing():
    async with rollback_session(SETTINGS) as session:
        owner = await open_tenant(session)
        older = await card_top_up(session, owner.tenant_id, 300)
        older.created_at = datetime.now(UTC) - timedelta(days=1)  # one transaction: one now()
        newer = await card_top_up(session, owner.tenant_id, 500)
        assert await amounts(session, owner.tenant_id) == (800, 0)

        withdrawal = await service.request(session, owner, 600, None)
        paid = await service.approve(session, withdrawal.id, ADMIN, payout())
        assert (paid.status, paid.payout_method, paid.payout_refunded_minor) == ("paid", "stripe_refund", 600)
        assert await amounts(session, owner.tenant_id) == (200, 0)
        meta = {"withdrawal_id": str(withdrawal.id), "kind": "payout", "tenant_id": owner.tenant_id}
        assert await refunds_of(newer.stripe_payment_intent_id) == [(500, meta | {"payment_id": str(newer.id)})]
        assert await refunds_of(older.stripe_payment_intent_id) == [(100, meta | {"payment_id": str(older.id)})]
        assert len(paid.payout_reference.split(",")) == 2
        for payment, refunded in ((newer, 500), (older, 100)):
            assert (payment.refunded_minor, payment.payout_refunded_minor, payment.applied_minor) == (
                refunded, refunded, payment.amount_minor)

        # Stripe reports both refunds (each possibly twice): the withdrawal already took that money.
        for payment in (newer, older, newer):
            await reconcile(session, await charge_refunded(payment.stripe_payment_intent_id))
        assert await amounts(session, owner.tenant_id) == (200, 0)
        assert await kinds(session, owner.tenant_id) == [("topup", "stripe"), ("topup", "stripe"), ("withdrawal", "capture")]
        assert (older.status, newer.status) == ("partially_refunded", "refunded")

        # A refund the customer gets on top is theirs: debited, and announced as a reversal.
        await stripe_client().v1.refunds.create_async({"payment_intent": older.stripe_payment_intent_id, "amount": 50})
        await reconcile(session, await charge_refunded(older.stripe_payment_intent_id))
        assert await amounts(session, owner.tenant_id) == (150, 0)
        assert (older.refunded_minor, older.payout_refunded_minor, older.applied_minor) == (150, 100, 250)
        assert all(v == 0 for v in (await LedgerRepository(session).invariants()).values())

        assert [(e["type"], e.get("amountMinor"), e.get("reason")) for e in await outbox(session, older.id)] == [
            ("billing.payment.succeeded.v1", 300, None), ("billing.payment.reversed.v1", 50, "refund")]
        assert [e["type"] for e in await outbox(session, newer.id)] == ["billing.payment.succeeded.v1"]
        events = await outbox(session, withdrawal.id)
        assert [e["type"] for e in events] == ["billing.withdrawal.requested.v1", "billing.withdrawal.paid.v1"]
        assert {k: events[1][k] for k in ("method", "reference", "refundedMinor", "manualMinor", "amountMinor")} == {
            "method": "stripe_refund", "reference": paid.payout_reference, "refundedMinor": 600, "manualMinor": 0,
            "amountMinor": 600}


async def test_what_card_payments_cannot_cover_is_paid_by_hand_and_no_card_means_a_manual_payout():
    async with rollback_session(SETTINGS) as session:
        owner = await open_tenant(session, adjustment=1_000)
        card = await card_top_up(session, owner.tenant_id, 300)
        withdrawal = await service.request(session, owner, 500, None)
        paid = await service.approve(session, withdrawal.id, ADMIN, payout())
        [refund_id, manual] = paid.payout_reference.split(",")
        assert (paid.payout_method, paid.payout_refunded_minor) == ("stripe_refund+manual", 300)
        assert refund_id.startswith("re_") and manual == manual_reference(withdrawal.id)
        read = service.to_read(paid)
        assert (read.payout_refunded, read.payout_manual) == (300, 200)
        assert await refunds_of(card.stripe_payment_intent_id) == [(300, {
            "withdrawal_id": str(withdrawal.id), "kind": "payout", "tenant_id": owner.tenant_id,
            "payment_id": str(card.id)})]
        assert await amounts(session, owner.tenant_id) == (800, 0)

        # Nothing left to refund: the next withdrawal is paid by hand.
        second = await service.request(session, owner, 100, None)
        paid = await service.approve(session, second.id, ADMIN, payout())
        assert (paid.payout_method, paid.payout_reference, paid.payout_refunded_minor) == (
            "manual", manual_reference(second.id), 0)
        assert await amounts(session, owner.tenant_id) == (700, 0)

        # Stripe not configured: manual as well.
        third = await service.request(session, owner, 100, None)
        unconfigured = RefundOrManualPayout(StripeGateway(BillingSettings()))
        assert (await service.approve(session, third.id, ADMIN, unconfigured)).payout_method == "manual"


async def test_a_payment_stripe_refuses_to_refund_is_skipped_and_the_rest_paid_by_hand():
    async with rollback_session(SETTINGS) as session:
        owner = await open_tenant(session, adjustment=1_000)
        # Marked paid on our side, never paid at Stripe: Stripe answers "cannot refund" (400).
        unpaid = await card_top_up(session, owner.tenant_id, 400, pay=False)
        unpaid.succeeded, unpaid.status = True, "succeeded"
        await session.flush()
        withdrawal = await service.request(session, owner, 300, None)
        paid = await service.approve(session, withdrawal.id, ADMIN, StripeRefundPayout(StripeGateway(SETTINGS)))
        assert (paid.payout_method, paid.payout_reference, paid.payout_refunded_minor) == (
            "manual", manual_reference(withdrawal.id), 0)
        assert (unpaid.refunded_minor, unpaid.payout_refunded_minor) == (0, 0)
        assert await amounts(session, owner.tenant_id) == (700, 0)


async def test_a_payout_refund_reported_as_a_customer_refund_before_it_was_recorded_is_given_back():
    # An approval refunded, then rolled back; Stripe's charge.refunded came and was debited as a
    # customer refund (we knew of no payout). The replayed approval gets the same refund back
    # from Stripe (same idempotency key) and records it: the debit is given back, once.
    async with rollback_session(SETTINGS) as session:
        owner = await open_tenant(session)
        card = await card_top_up(session, owner.tenant_id, 1_000)
        withdrawal = await service.request(session, owner, 400, None)
        refund = await stripe_client().v1.refunds.create_async(
            {"payment_intent": card.stripe_payment_intent_id, "amount": 400, "expand": ["charge"]})
        await reconcile(session, await charge_refunded(card.stripe_payment_intent_id))
        assert await amounts(session, owner.tenant_id) == (600, 400)  # 200 available

        [locked] = await PaymentRepository(session).lock_refundable(owner.tenant_id, "USD", limit=10)
        replayed = CreatedRefund(id=refund.id, amount=400, status="succeeded", charge_id=refund.charge.id,
                                 charge_amount_refunded=refund.charge.amount_refunded)
        await payments.record_payout_refund(session, locked, replayed, withdrawal.id)
        assert (locked.refunded_minor, locked.payout_refunded_minor, locked.applied_minor) == (400, 400, 1_000)
        assert await amounts(session, owner.tenant_id) == (1_000, 400)
        assert await ledger.capture(session, service.hold_key(withdrawal.id), "Withdrawal")
        assert await amounts(session, owner.tenant_id) == (600, 0)
        assert [k for k, _ in await kinds(session, owner.tenant_id)] == ["topup", "refund", "reversal", "withdrawal"]


async def test_a_charge_refunded_racing_the_approval_waits_for_it_and_debits_nothing():
    engine = create_engine(SETTINGS)
    sessions = create_session_factory(engine, SETTINGS)
    try:
        tenant = f"payout-race-{uuid.uuid4()}"
        owner = Principal(user_id="owner-1", tenant_id=tenant, roles=("OWNER",))
        async with sessions.begin() as s:
            await ledger.open_account(s, tenant, "USD", None)
            card = await card_top_up(s, tenant, 1_000)
            withdrawal = await service.request(s, owner, 400, None)

        async def deliver(event: VerifiedEvent) -> str:
            async with sessions.begin() as s:
                await payments.store_event(s, event)
            async with sessions.begin() as s:
                return await payments.process_event(s, event.id)

        async with sessions.begin() as s:
            await service.approve(s, withdrawal.id, ADMIN, payout())
            # The refund exists at Stripe; its charge.refunded arrives before the approval commits.
            racing = asyncio.create_task(deliver(await charge_refunded(card.stripe_payment_intent_id)))
            await asyncio.sleep(0.5)
            assert not racing.done()  # waiting on the payment row the approval holds
        assert await racing == "processed"

        async with sessions() as s:
            assert await amounts(s, tenant) == (600, 0)
            payment = await s.get(Payment, card.id)
            assert (payment.refunded_minor, payment.payout_refunded_minor, payment.applied_minor) == (400, 400, 1_000)
            assert [k for k, _ in await kinds(s, tenant)] == ["topup", "withdrawal"]
    finally:
        await engine.dispose()
