"""A tenant's SMS numbers: the numbers it may send from (`sender`, seed 003 `senderPhone`) and
whose inbound SMS belong to it. One owner per number, across tenants; the platform's shared
default sender is nobody's."""

from __future__ import annotations

from common.auth import Principal
from common.errors import Conflict, NotFound
from common.phones import to_e164
from sqlalchemy.ext.asyncio import AsyncSession

from messaging.numbers.repository import NumberRepository
from messaging.numbers.schemas import NumberCreate, NumberRead
from messaging.settings import MessagingSettings


class NumberTaken(Conflict):
    code, message = "NUMBER_TAKEN", "This number is already registered"


class NumberNotFound(NotFound):
    code, message = "NUMBER_NOT_FOUND", "No such number among yours"



async def add(session: AsyncSession, settings: MessagingSettings, principal: Principal, body: NumberCreate) -> NumberRead:
    number = to_e164(body.number)
    if number == settings.sms_default_sender:
        raise NumberTaken("This is the platform's shared number", details={"number": number})
    row = await NumberRepository(session).insert_if_free(principal.tenant_uuid, number, body.label or None)
    if row is None:
        # Whether it is yours or another tenant's is not told: either way it cannot be added.
        raise NumberTaken(details={"number": number})
    return NumberRead.model_validate(row)


async def list_numbers(
    session: AsyncSession, principal: Principal, *, offset: int, limit: int
) -> tuple[list[NumberRead], int]:
    rows, total = await NumberRepository(session).page(principal.tenant_uuid, offset=offset, limit=limit)
    return [NumberRead.model_validate(r) for r in rows], total


async def remove(session: AsyncSession, principal: Principal, raw: str) -> str:
    number = to_e164(raw)
    if not await NumberRepository(session).delete(principal.tenant_uuid, number):
        raise NumberNotFound(details={"number": number})
    return number
