"""A tenant's SMS numbers: `/api/v1/sms/numbers`. Every member may list them; owners and
admins add and remove them."""

from typing import Annotated

from common.api import Envelope, Page, Pagination, ok, paginate
from common.auth import CurrentPrincipal, Principal, require_roles
from common.db.session import SessionDep
from fastapi import APIRouter

from messaging.deps import SettingsDep
from messaging.numbers import service
from messaging.numbers.schemas import NumberCreate, NumberRead

router = APIRouter(prefix="/api/v1/sms/numbers", tags=["sms numbers"])

Manager = Annotated[Principal, require_roles("OWNER", "ADMIN")]


@router.get("", response_model=Envelope[Page[NumberRead]])
async def list_numbers(principal: CurrentPrincipal, session: SessionDep, page: Pagination):
    """Your tenant's numbers, oldest first."""
    items, total = await service.list_numbers(session, principal, offset=page.offset, limit=page.limit)
    return ok(paginate([n.model_dump(mode="json", by_alias=True) for n in items], total, page))


@router.post("", status_code=201, response_model=Envelope[NumberRead])
async def add_number(
    body: NumberCreate,
    principal: Manager,
    session: SessionDep,
    settings: SettingsDep,
):
    """Register a number you own at a provider (E.164): you may send from it, and SMS to it
    are yours. 409 if any tenant already has it."""
    return ok(await service.add(session, settings, principal, body))


@router.delete("/{number}")
async def remove_number(number: str, principal: Manager, session: SessionDep):
    """Remove one of your numbers."""
    return ok({"number": await service.remove(session, principal, number), "deleted": True})
