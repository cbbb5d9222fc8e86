"""Top-ups by card through Stripe (seed 000 `/payments/topup`, seed 001 `/payments/deposit`) and
the Stripe webhook that credits them."""

import logging
import uuid
from typing import Annotated

from common import idempotency
from common.api import Envelope, Pagination, ok, paginate
from common.auth import CurrentPrincipal
from common.db.session import SessionDep
from common.errors import AppError
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.deps import StripeGatewayDep
from billing.payments import service
from billing.payments.repository import PaymentRepository
from billing.payments.schemas import PaymentRead, TopupCreate, TopupRead
from billing.payments.stripe_gateway import StripeGateway

log = logging.getLogger("billing.payments")

router = APIRouter(prefix="/api/v1/payments", tags=["payments"])


GatewayDep = StripeGatewayDep


async def _topup(
    endpoint: str, principal: CurrentPrincipal, session: AsyncSession, gateway: StripeGateway,
    key: str, body: TopupCreate,
) -> JSONResponse:
    async def work() -> dict:
        return ok(await service.create_topup(session, gateway, principal.tenant_id, body))

    scope = f"payments.{endpoint}:{principal.tenant_id}"
    return await idempotency.answer_once(session, scope, key, body.model_dump(), 201, work)


@router.post("/topup", status_code=201, response_model=Envelope[TopupRead])
async def topup(
    body: TopupCreate, principal: CurrentPrincipal, session: SessionDep, gateway: GatewayDep,
    key: idempotency.IdempotencyKeyHeader,
):
    """Start a card top-up: a Stripe PaymentIntent to confirm with `clientSecret`. The balance grows
    when Stripe confirms the payment (webhook). Requires an `Idempotency-Key`."""
    return await _topup("topup", principal, session, gateway, key, body)


@router.post("/deposit", status_code=201, response_model=Envelope[TopupRead])
async def deposit(
    body: TopupCreate, principal: CurrentPrincipal, session: SessionDep, gateway: GatewayDep,
    key: idempotency.IdempotencyKeyHeader,
):
    """Seed 001's name for a top-up: the same as `POST /payments/topup`."""
    return await _topup("deposit", principal, session, gateway, key, body)


@router.get("/topups")
async def list_topups(principal: CurrentPrincipal, session: SessionDep, page: Pagination):
    """Your tenant's top-ups, newest first, with what Stripe reported about each."""
    rows, total = await PaymentRepository(session).list_for_tenant(
        principal.tenant_id, offset=page.offset, limit=page.limit
    )
    items = [service.payment_read(p).model_dump(mode="json", by_alias=True) for p in rows]
    return ok(paginate(items, total, page))


@router.get("/topups/{payment_id}", response_model=Envelope[PaymentRead])
async def get_topup(payment_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep):
    """One of your tenant's top-ups."""
    return ok(await service.get_payment(session, principal.tenant_id, payment_id))


@router.post("/webhook")
async def stripe_webhook(
    request: Request,
    gateway: GatewayDep,
    signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
):
    """Stripe's webhook (no token: the `Stripe-Signature` is checked against every configured
    secret). Each event is stored raw, then applied once; redeliveries answer 200 and change
    nothing."""
    event = gateway.verify(await request.body(), signature)
    sessions: async_sessionmaker[AsyncSession] = request.app.state.session_factory
    # Two transactions on purpose: the raw event is kept even if acting on it fails (Stripe then
    # redelivers, and the stored copy records why it failed).
    async with sessions.begin() as session:
        await service.store_event(session, event)
    try:
        async with sessions.begin() as session:
            outcome = await service.process_event(session, event.id)
    except Exception as exc:
        reason = f"{exc.code}: {exc.message}" if isinstance(exc, AppError) else repr(exc)
        log.warning("stripe event not processed", extra={"event_id": event.id, "type": event.type, "error": reason})
        async with sessions.begin() as session:
            await service.record_failure(session, event.id, reason)
        raise
    return ok({"received": True, "eventId": event.id, "duplicate": outcome == "duplicate"})
