"""messaging.sms.requested / messaging.order.created -> hold -> billing.credits.reserved|rejected;
the outcome events capture (sent, delivered, received) or release (failed, expired, ...) it.
Idempotent by business key on top of the consumer's inbox."""

from __future__ import annotations

from common.contracts import EventEnvelope
from common.contracts.billing.v1 import CreditsRejectedV1, CreditsReservedV1
from common.contracts.messaging.v1 import (
    OrderCreatedV1,
    OrderUpdatedV1,
    SmsRequestedV1,
    SmsStatusV1,
)
from common.messaging import emit, emit_many
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from billing.ledger import service as ledger
from billing.pricing.service import order_price, sms_segment_price
from billing.settings import BillingSettings

CAPTURE_SMS = {"sent", "delivered"}
RELEASE_SMS = {"failed", "rejected", "undelivered"}


async def _reserve(
    session: AsyncSession, settings: BillingSettings, *, kind: str, reference: str, tenant_id: str, amount: int
) -> None:
    outcome = await ledger.place_hold(
        session, tenant_id=tenant_id, currency=settings.default_currency, business_key=f"{kind}:{reference}",
        kind=kind, reference=reference, amount=amount,  # type: ignore[arg-type]
    )
    if outcome.already:
        return  # answered when it was placed
    if outcome.status == "held":
        assert outcome.hold is not None and outcome.account is not None
        reply = CreditsReservedV1(
            reference=reference, reference_kind=kind, tenant_id=tenant_id, hold_id=str(outcome.hold.id),
            amount_minor=amount, currency=outcome.account.currency,
        )
    else:
        reply = CreditsRejectedV1(
            reference=reference, reference_kind=kind, tenant_id=tenant_id, reason=outcome.status, amount_minor=amount
        )
    await emit(session, reply, subject=reference, tenant_id=tenant_id)


async def on_sms_requested(
    session: AsyncSession, settings: BillingSettings, events: list[EventEnvelope[SmsRequestedV1]]
) -> None:
    """A batch of send requests (a bulk send arrives as thousands): one price lookup per
    (country, route), the holds placed together per tenant, the replies emitted together."""
    prices: dict[tuple[str, str], int] = {}
    requests: list[ledger.HoldRequest] = []
    for event in events:
        sms = event.data
        key = (sms.country.upper(), sms.route)
        if key not in prices:
            prices[key] = await sms_segment_price(session, settings, *key)
        requests.append(
            ledger.HoldRequest(
                tenant_id=sms.tenant_id, business_key=f"sms:{sms.message_id}", kind="sms",
                reference=sms.message_id, amount=prices[key] * sms.segments,
            )
        )
    outcomes = await ledger.place_holds(session, requests, settings.default_currency)
    replies: dict[str, list[tuple[BaseModel, str]]] = {}
    for request, outcome in zip(requests, outcomes, strict=True):
        if outcome is None:
            continue  # answered when it was placed
        if outcome.status == "held":
            reply: BaseModel = CreditsReservedV1(
                reference=request.reference, reference_kind="sms", tenant_id=request.tenant_id,
                hold_id=str(outcome.hold_id), amount_minor=request.amount, currency=outcome.currency,
            )
        else:
            reply = CreditsRejectedV1(
                reference=request.reference, reference_kind="sms", tenant_id=request.tenant_id,
                reason=outcome.status, amount_minor=request.amount,
            )
        replies.setdefault(request.tenant_id, []).append((reply, request.reference))
    for tenant_id, batch in replies.items():
        await emit_many(session, batch, tenant_id=tenant_id)


async def on_sms_status(session: AsyncSession, events: list[EventEnvelope[SmsStatusV1]]) -> None:
    """A batch of status changes: captures on sent/delivered, releases on failed/rejected, each
    run of one kind settled together (in the order they came, so a capture before a release of
    the same message wins, as one by one)."""
    run: list[str] = []
    action: str | None = None
    for event in events:
        status = event.data.status
        wanted = "capture" if status in CAPTURE_SMS else "release" if status in RELEASE_SMS else None
        if wanted is None:
            continue
        if wanted != action and run:
            await ledger.settle_many(session, run, action)  # type: ignore[arg-type]
            run = []
        action = wanted
        run.append(f"sms:{event.data.message_id}")
    if run:
        await ledger.settle_many(session, run, action)  # type: ignore[arg-type]


def make_batch_handlers(settings: BillingSettings):
    async def sms_requested(session: AsyncSession, events: list[EventEnvelope[SmsRequestedV1]]) -> None:
        await on_sms_requested(session, settings, events)

    return {"messaging.sms.requested.v1": sms_requested, "messaging.sms.status.v1": on_sms_status}


def make_handlers(settings: BillingSettings):

    async def on_order_created(session: AsyncSession, event: EventEnvelope[OrderCreatedV1]) -> None:
        order = event.data
        price = await order_price(session, settings, order.provider, order.service, order.country)
        await _reserve(session, settings, kind="order", reference=order.order_id, tenant_id=order.tenant_id, amount=price)

    async def on_order_updated(session: AsyncSession, event: EventEnvelope[OrderUpdatedV1]) -> None:
        order = event.data
        if order.status == "received":
            await ledger.capture(session, f"order:{order.order_id}", f"Number order {order.order_id}")
        else:
            await ledger.release(session, f"order:{order.order_id}")

    return {
        "messaging.order.created.v1": on_order_created,
        "messaging.order.updated.v1": on_order_updated,
    }
