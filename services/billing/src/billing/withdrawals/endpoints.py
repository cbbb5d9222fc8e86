import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from common import idempotency
from common.api import Envelope, Page, Pagination, ok, paginate
from common.auth import CurrentPrincipal, PlatformAdmin, Principal, require_roles
from common.db.session import SessionDep
from common.idempotency import OptionalIdempotencyKey
from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import Withdrawal
from billing.withdrawals import service
from billing.withdrawals.payouts import PayoutDep
from billing.withdrawals.schemas import (
    AdminWithdrawalRead,
    WithdrawalCreate,
    WithdrawalRead,
    WithdrawalReject,
    WithdrawalStatus,
)

router = APIRouter(prefix="/api/v1", tags=["withdrawals"])

Manager = Annotated[Principal, require_roles("OWNER", "ADMIN")]


@router.post("/payments/withdraw", status_code=201, response_model=Envelope[WithdrawalRead])
async def withdraw(body: WithdrawalCreate, principal: Manager, session: SessionDep, key: idempotency.IdempotencyKeyHeader):
    """Ask to withdraw credit (OWNER or ADMIN): the amount is held at once and paid out when a
    platform admin approves it. Requires `Idempotency-Key`."""
    async def work() -> dict:
        withdrawal = await service.request(session, principal, body.amount, body.note)
        return ok(service.to_read(withdrawal).model_dump(mode="json", by_alias=True))

    scope = f"withdraw:{principal.tenant_id}:{principal.user_id}"
    return await idempotency.answer_once(session, scope, key, body.model_dump(), 201, work)


@router.get("/payments/withdrawals", response_model=Envelope[Page[WithdrawalRead]])
async def my_withdrawals(
    principal: CurrentPrincipal, session: SessionDep, page: Pagination, status: WithdrawalStatus | None = None
):
    """Your tenant's withdrawals, newest first."""
    rows, total = await service.list_withdrawals(
        session, tenant_id=principal.tenant_id, status=status, offset=page.offset, limit=page.limit
    )
    items = [service.to_read(w).model_dump(mode="json", by_alias=True) for w in rows]
    return ok(paginate(items, total, page))


@router.get("/admin/payments/withdrawals", response_model=Envelope[Page[AdminWithdrawalRead]])
async def all_withdrawals(
    _: PlatformAdmin,
    session: SessionDep,
    page: Pagination,
    status: WithdrawalStatus | None = None,
    tenant_id: Annotated[str | None, Query(alias="tenantId", max_length=64)] = None,
):
    """Every tenant's withdrawals, newest first; `status=requested` is the queue to decide."""
    rows, total = await service.list_withdrawals(
        session, tenant_id=tenant_id, status=status, offset=page.offset, limit=page.limit
    )
    items = [service.to_admin_read(w).model_dump(mode="json", by_alias=True) for w in rows]
    return ok(paginate(items, total, page))


async def _decide(
    session: AsyncSession,
    admin: Principal,
    key: str | None,
    request: dict[str, Any],
    decide: Callable[[], Awaitable[Withdrawal]],
) -> Any:
    async def work() -> dict:
        return ok(service.to_admin_read(await decide()).model_dump(mode="json", by_alias=True))

    return await idempotency.answer_once(session, f"withdrawal-decision:{admin.user_id}", key, request, 200, work)


@router.post("/admin/payments/withdrawals/{withdrawal_id}/approve", response_model=Envelope[AdminWithdrawalRead])
async def approve(
    withdrawal_id: uuid.UUID, admin: PlatformAdmin, session: SessionDep, payout: PayoutDep,
    key: OptionalIdempotencyKey = None,
):
    """Pay a requested withdrawal out (refunds to the tenant's card top-ups, newest first, as far
    as they go; the rest by hand) and capture its hold; `409` once it is decided, `403
    SELF_APPROVAL` for a withdrawal you requested yourself."""
    return await _decide(
        session, admin, key, {"approve": str(withdrawal_id)},
        lambda: service.approve(session, withdrawal_id, admin, payout),
    )


@router.post("/admin/payments/withdrawals/{withdrawal_id}/reject", response_model=Envelope[AdminWithdrawalRead])
async def reject(
    withdrawal_id: uuid.UUID, body: WithdrawalReject, admin: PlatformAdmin, session: SessionDep,
    key: OptionalIdempotencyKey = None,
):
    """Refuse a requested withdrawal, with a reason: its hold is released; `409` once decided."""
    return await _decide(
        session, admin, key, {"reject": str(withdrawal_id), "reason": body.reason},
        lambda: service.reject(session, withdrawal_id, admin, body.reason),
    )
