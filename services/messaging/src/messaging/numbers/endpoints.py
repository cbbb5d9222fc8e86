"""A tenant's SMS numbers: `/api/v1/sms/numbers`. Every member may list them; owners and
admins register (a code goes to the number), verify and remove them."""

from typing import Annotated

from common.api import Envelope, Page, Pagination, ok, paginate
from common.auth import CurrentPrincipal, Principal, require_roles
from common.db.session import SessionDep
from fastapi import APIRouter

from messaging.deps import SettingsDep
from messaging.numbers import service
from messaging.numbers.schemas import NumberCreate, NumberRead, NumberVerify

router = APIRouter(prefix="/api/v1/sms/numbers", tags=["sms numbers"])

Manager = Annotated[Principal, require_roles("OWNER", "ADMIN")]


@router.get("", response_model=Envelope[Page[NumberRead]])
async def list_numbers(principal: CurrentPrincipal, session: SessionDep, page: Pagination):
    """Your tenant's numbers, oldest first: `verified` ones and `pending` ones waiting for their code."""
    items, total = await service.list_numbers(session, principal, offset=page.offset, limit=page.limit)
    return ok(paginate([n.model_dump(mode="json", by_alias=True) for n in items], total, page))


@router.post("", status_code=202, response_model=Envelope[NumberRead])
async def add_number(
    body: NumberCreate,
    principal: Manager,
    session: SessionDep,
    settings: SettingsDep,
):
    """Register a number you own at a provider (E.164). A six-digit code goes to it by SMS and
    the number is `pending` until you send the code back (`POST .../{number}/verify`); then you
    may send from it, and SMS to it are yours. Posting again sends a new code (429 within
    `sms_number_code_resend_s` of the last). 409 if a tenant already has it."""
    return ok(await service.add(session, settings, principal, body))


@router.post("/{number}/verify", response_model=Envelope[NumberRead])
async def verify_number(
    number: str,
    body: NumberVerify,
    principal: Manager,
    session: SessionDep,
    settings: SettingsDep,
):
    """The code sent to the number: right, and the number is yours (`verified`). A wrong code
    is 422 with the attempts left; then 423 until a new code is asked for; an old one is 410."""
    return ok(await service.verify(session, settings, principal, number, body.code))


@router.delete("/{number}")
async def remove_number(number: str, principal: Manager, session: SessionDep):
    """Remove one of your numbers, or withdraw a pending one."""
    return ok({"number": await service.remove(session, principal, number), "deleted": True})
