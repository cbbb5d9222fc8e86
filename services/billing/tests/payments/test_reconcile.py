"""The webhook's reconcile against the real billing schema: whatever Stripe sends, in whatever
order, however often, the payment ends at one balance (and a receivable when the customer's
balance could not cover a reversal). Events go through the same two steps as the endpoint:
stored in one transaction, processed in the next."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from billing.ledger import service as ledger
from billing.ledger.repository import LedgerRepository
from billing.models import Payment
from billing.payments import service
from billing.payments.repository import PaymentRepository
from billing.payments.stripe_gateway import VerifiedEvent
from billing.settings import BillingSettings
from common.db import create_engine, create_session_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

SETTINGS = BillingSettings(db_pool_size=12)


class Scenario:
    """One payment and the Stripe events that can arrive about it (one id per event)."""

    def __init__(self, amount: int, refunds: tuple[int, int], dispute: int) -> None:
        self.tenant = f"test-pay-{uuid.uuid4()}"
        self.payment_id = uuid.uuid4()
        self.intent = f"pi_{uuid.uuid4().hex[:20]}"
        self.charge = f"ch_{uuid.uuid4().hex[:20]}"
        self.dispute = f"dp_{uuid.uuid4().hex[:20]}"
        self.amount, self.refunds, self.dispute_amount = amount, refunds, dispute
        self.ids: dict[str, str] = {}

    def event(self, name: str) -> VerifiedEvent:
        event_id = self.ids.setdefault(name, f"evt_{uuid.uuid4().hex}")
        intent = {"id": self.intent, "object": "payment_intent", "amount": self.amount, "currency": "usd",
                  "latest_charge": self.charge, "metadata": {"tenant_id": self.tenant, "payment_id": str(self.payment_id)}}
        charge = {"id": self.charge, "object": "charge", "amount": self.amount, "currency": "usd", "paid": True,
                  "captured": True, "status": "succeeded", "payment_intent": self.intent, "amount_refunded": 0}
        dispute = {"id": self.dispute, "object": "dispute", "amount": self.dispute_amount, "charge": self.charge,
                   "payment_intent": self.intent, "status": "needs_response"}
        event_type, obj = {
            "succeeded": ("payment_intent.succeeded", intent | {"status": "succeeded"}),
            "failed": ("payment_intent.payment_failed", intent | {"status": "requires_payment_method"}),
            "created": ("payment_intent.created", intent | {"status": "requires_payment_method"}),
            "charge_succeeded": ("charge.succeeded", charge),
            "refund_1": ("charge.refunded", charge | {"amount_refunded": self.refunds[0]}),
            "refund_2": ("charge.refunded", charge | {"amount_refunded": self.refunds[1]}),
            "dispute_created": ("charge.dispute.created", dispute),
            "dispute_withdrawn": ("charge.dispute.funds_withdrawn", dispute),
            "dispute_won": ("charge.dispute.closed", dispute | {"status": "won"}),
            "dispute_lost": ("charge.dispute.closed", dispute | {"status": "lost"}),
        }[name]
        payload = {"id": event_id, "object": "event", "type": event_type, "data": {"object": obj}}
        return VerifiedEvent(id=event_id, type=event_type, payload=payload)

    def expected(self, names: set[str]) -> int:
        succeeded = bool(names - {"failed", "created"})
        refunded = max([r for n, r in (("refund_1", self.refunds[0]), ("refund_2", self.refunds[1])) if n in names],
                       default=0)
        opened = names & {"dispute_created", "dispute_withdrawn", "dispute_lost"}
        disputed = 0 if "dispute_won" in names or not opened else self.dispute_amount
        return (self.amount if succeeded else 0) - refunded - disputed


async def open_payment(sessions, scenario: Scenario) -> None:  # noqa: ANN001
    async with sessions.begin() as s:
        await ledger.account_for(s, scenario.tenant, "USD", create=True)
        await PaymentRepository(s).add(Payment(
            id=scenario.payment_id, tenant_id=scenario.tenant, stripe_payment_intent_id=scenario.intent,
            amount_minor=scenario.amount, currency="USD", status="requires_payment_method"))


async def deliver(sessions, event: VerifiedEvent) -> str:  # noqa: ANN001
    async with sessions.begin() as s:
        await service.store_event(s, event)
    async with sessions.begin() as s:
        return await service.process_event(s, event.id)


async def outcome(sessions, scenario: Scenario) -> tuple[int, int, int]:  # noqa: ANN001
    """(customer balance, what the customer owes on receivables, what the payment applied)."""
    async with sessions() as s:
        account = await LedgerRepository(s).customer(scenario.tenant)
        receivables = await LedgerRepository(s).system_account_id("receivables")
        owed = await PaymentRepository(s).outstanding_receivable(
            scenario.tenant, f"stripe:{scenario.payment_id}:", receivables)
        payment = await s.get(Payment, scenario.payment_id)
        return account.balance_minor, owed, payment.applied_minor


EVENTS = ["succeeded", "failed", "created", "charge_succeeded", "refund_1", "refund_2",
          "dispute_created", "dispute_withdrawn", "dispute_won", "dispute_lost"]


@st.composite
def scenarios(draw):  # noqa: ANN001, ANN201
    amount = draw(st.integers(min_value=100, max_value=10_000))
    first = draw(st.integers(min_value=1, max_value=amount))
    second = draw(st.integers(min_value=first, max_value=amount))
    dispute = draw(st.integers(min_value=1, max_value=amount))
    outcome = draw(st.sampled_from(["dispute_won", "dispute_lost"]))  # a dispute ends one way
    names = [n for n in EVENTS if n != ({"dispute_won": "dispute_lost", "dispute_lost": "dispute_won"}[outcome])]
    plan = draw(st.lists(st.sampled_from(names), min_size=1, max_size=10))  # repeats = redeliveries
    return Scenario(amount, (first, second), dispute), plan


def test_any_order_and_any_redelivery_end_at_the_same_balance():
    loop = asyncio.new_event_loop()
    engine = create_engine(SETTINGS)
    sessions = create_session_factory(engine, SETTINGS)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(scenarios())
    def check(drawn: tuple[Scenario, list[str]]) -> None:
        scenario, plan = drawn

        async def run() -> None:
            await open_payment(sessions, scenario)
            for name in plan:
                await deliver(sessions, scenario.event(name))
            target = scenario.expected(set(plan))
            assert await outcome(sessions, scenario) == (max(target, 0), max(-target, 0), target), plan

        loop.run_until_complete(run())

    try:
        check()
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()


async def test_concurrent_deliveries_serialise_on_the_payment():
    engine = create_engine(SETTINGS)
    sessions = create_session_factory(engine, SETTINGS)
    try:
        scenario = Scenario(5_000, (2_000, 2_000), 5_000)
        await open_payment(sessions, scenario)
        events = [scenario.event("succeeded"), scenario.event("refund_1"), scenario.event("charge_succeeded")]
        results = await asyncio.gather(*(deliver(sessions, e) for e in events for _ in range(4)))
        assert sorted(results).count("processed") == 3
        assert await outcome(sessions, scenario) == (3_000, 0, 3_000)
        async with sessions() as s:
            movements = await s.scalar(
                text("SELECT count(*) FROM ledger_transactions WHERE business_key LIKE :p"),
                {"p": f"stripe:{scenario.payment_id}:%"},
            )
        assert movements in (1, 2)  # one credit (net, if the refund came first), maybe one reversal
    finally:
        await engine.dispose()


async def test_an_event_for_a_payment_not_committed_yet_is_kept_for_redelivery():
    engine = create_engine(SETTINGS)
    sessions = create_session_factory(engine, SETTINGS)
    try:
        scenario = Scenario(1_000, (0, 0), 0)
        event = scenario.event("succeeded")
        with pytest.raises(service.PaymentNotKnownYet):
            await deliver(sessions, event)
        await open_payment(sessions, scenario)  # the top-up's transaction commits
        assert await deliver(sessions, event) == "processed"  # Stripe's retry
        assert await outcome(sessions, scenario) == (1_000, 0, 1_000)
    finally:
        await engine.dispose()
