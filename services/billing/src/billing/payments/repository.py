import uuid
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import Account, LedgerEntry, LedgerTransaction, Payment, StripeEvent


class PaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- payments ----------------------------------------------------------------------------

    async def add(self, payment: Payment) -> None:
        self.session.add(payment)
        await self.session.flush()

    async def get_for_tenant(self, payment_id: uuid.UUID, tenant_id: str) -> Payment | None:
        return await self.session.scalar(
            select(Payment).where(Payment.id == payment_id, Payment.tenant_id == tenant_id)
        )

    async def list_for_tenant(self, tenant_id: str, *, offset: int, limit: int) -> tuple[list[Payment], int]:
        total = await self.session.scalar(select(func.count()).where(Payment.tenant_id == tenant_id))
        rows = await self.session.scalars(
            select(Payment)
            .where(Payment.tenant_id == tenant_id)
            .order_by(Payment.created_at.desc(), Payment.id)
            .offset(offset)
            .limit(limit)
        )
        return list(rows), int(total or 0)

    async def lock(
        self, *, intent_id: str | None, charge_id: str | None, payment_id: uuid.UUID | None
    ) -> Payment | None:
        """The payment an event is about, row-locked until commit (deliveries serialise on it)."""
        for column, value in (
            (Payment.stripe_payment_intent_id, intent_id),
            (Payment.id, payment_id),
            (Payment.stripe_charge_id, charge_id),
        ):
            if value is None:
                continue
            payment = await self.session.scalar(
                select(Payment).where(column == value).with_for_update().execution_options(populate_existing=True)
            )
            if payment is not None:
                return payment
        return None

    @staticmethod
    def _refundable(tenant_id: str, currency: str):  # noqa: ANN205
        return select(Payment).where(
            Payment.tenant_id == tenant_id,
            Payment.currency == currency,
            Payment.succeeded.is_(True),
            Payment.stripe_payment_intent_id.is_not(None),
            Payment.disputed_minor == 0,  # Stripe refuses refunds on a disputed charge
            Payment.refunded_minor < Payment.amount_minor,
        )

    async def has_refundable(self, tenant_id: str, currency: str) -> bool:
        found = await self.session.scalar(self._refundable(tenant_id, currency).with_only_columns(Payment.id).limit(1))
        return found is not None

    async def lock_refundable(self, tenant_id: str, currency: str, *, limit: int) -> list[Payment]:
        """The tenant's card payments that can still be refunded, newest first, row-locked in that
        order (so concurrent payouts and webhook deliveries for them serialise)."""
        rows = await self.session.scalars(
            self._refundable(tenant_id, currency)
            .order_by(Payment.created_at.desc(), Payment.id.desc())
            .limit(limit)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return list(rows)

    async def lock_account(self, account_id: uuid.UUID) -> Account:
        account = await self.session.scalar(
            select(Account).where(Account.id == account_id).with_for_update()
            .execution_options(populate_existing=True)
        )
        assert account is not None
        return account

    async def outstanding_receivable(self, tenant_id: str, business_key_prefix: str, receivables_id: uuid.UUID) -> int:
        """What the movements under `business_key_prefix` have put on the receivables account and
        not yet repaid (positive: the customer owes it)."""
        posted = await self.session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(
                LedgerTransaction.tenant_id == tenant_id,
                LedgerTransaction.business_key.startswith(business_key_prefix, autoescape=True),
                LedgerEntry.account_id == receivables_id,
            )
        )
        return -int(posted or 0)

    # -- stripe events -----------------------------------------------------------------------

    async def store_event(self, event_id: str, event_type: str, payload: dict[str, Any]) -> bool:
        """Keep the raw event; False when it was already stored (a redelivery)."""
        stored = await self.session.scalar(
            pg_insert(StripeEvent)
            .values(id=event_id, type=event_type, payload=payload)
            .on_conflict_do_nothing(index_elements=[StripeEvent.id])
            .returning(StripeEvent.id)
        )
        return stored is not None

    async def lock_event(self, event_id: str) -> StripeEvent | None:
        return await self.session.scalar(
            select(StripeEvent).where(StripeEvent.id == event_id).with_for_update()
            .execution_options(populate_existing=True)
        )

    async def finish_event(self, event_id: str, error: str | None) -> None:
        await self.session.execute(
            update(StripeEvent)
            .where(StripeEvent.id == event_id)
            .values(processed_at=func.now(), error=error)
            .execution_options(synchronize_session=False)
        )

    async def record_event_error(self, event_id: str, error: str) -> None:
        """Leave the event unprocessed (Stripe redelivers it) but say why."""
        await self.session.execute(
            update(StripeEvent)
            .where(StripeEvent.id == event_id, StripeEvent.processed_at.is_(None))
            .values(error=error[:2000])
            .execution_options(synchronize_session=False)
        )

    async def dispute_won(self, dispute_id: str) -> bool:
        """Whether Stripe has reported this dispute won (final: a won dispute stays won), so an
        older event about it delivered late cannot withdraw the money again."""
        found = await self.session.scalar(
            text(
                "SELECT 1 FROM stripe_events WHERE type LIKE 'charge.dispute.%' "
                "AND payload->'data'->'object'->>'id' = :d "
                "AND payload->'data'->'object'->>'status' = 'won' LIMIT 1"
            ),
            {"d": dispute_id},
        )
        return found is not None
