from datetime import datetime
from typing import Annotated

from common import idempotency
from common.api import Pagination, ok, paginate
from common.auth import CurrentPrincipal, PlatformAdmin
from common.db.session import SessionDep
from common.errors import Unprocessable
from fastapi import APIRouter, Query

from billing.ledger import service
from billing.ledger.repository import LedgerRepository
from billing.ledger.schemas import AdjustmentCreate, MovementRead

router = APIRouter(prefix="/api/v1", tags=["ledger"])


@router.get("/payments/history")
async def history(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: Pagination,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
):
    """Every movement of your balance, newest first, with its reason; `from`/`to` filter by time."""
    if start is not None and end is not None and end <= start:
        raise Unprocessable("`to` must be after `from`", code="BAD_RANGE")
    account = await service.require_account(session, principal.tenant_id)
    rows, total = await LedgerRepository(session).history(
        account.id, start=start, end=end, offset=page.offset, limit=page.limit
    )
    items = [
        MovementRead(
            id=e.id, transaction_id=str(t.id), kind=t.kind, description=t.description, reference=t.reference,
            amount=e.amount_minor, balance_after=e.balance_after_minor, created_at=e.created_at,
        ).model_dump(mode="json", by_alias=True)
        for e, t in rows
    ]
    return ok(paginate(items, total, page))


@router.post("/admin/payments/adjustments", status_code=201)
async def adjust(
    body: AdjustmentCreate,
    admin: PlatformAdmin,
    session: SessionDep,
    key: idempotency.IdempotencyKeyHeader,
):
    """Credit (amount > 0) or debit (< 0) a tenant by hand, with a reason; never below zero."""
    scope = f"adjust:{admin.user_id}"

    async def work() -> dict:
        if body.amount == 0:
            raise Unprocessable("amount must not be zero", code="ZERO_AMOUNT")
        account = await service.require_account(session, body.tenant_id)
        tx = await service.credit(
            session, account, body.amount, business_key=f"adjustment:{scope}:{key}", kind="adjustment",
            counter_account="adjustments", description=f"Adjustment: {body.reason}",
        )
        account = await LedgerRepository(session).refreshed(account.id)
        return ok({"transactionId": str(tx), "balance": account.balance_minor})

    return await idempotency.answer_once(session, scope, key, body.model_dump(), 201, work)
