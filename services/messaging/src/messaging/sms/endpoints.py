"""Sending SMS and the SMS logs: seed 000's `/api/v1/sms/send` and `/api/v1/sms/logs`, seed 003's
`/api/send-sms` and `/api/get-conversation/{phone}`."""

from typing import Annotated

from common import idempotency
from common.api import Envelope, Page, PageParams, Pagination, ok, paginate
from common.auth import CurrentPrincipal
from common.db.session import SessionDep
from common.idempotency import OptionalIdempotencyKey
from fastapi import APIRouter, Depends, Query

from messaging.deps import SettingsDep
from messaging.messages import service as messages
from messaging.messages.endpoints import Direction, Since, Status, Until
from messaging.messages.schemas import MessageRead
from messaging.sms import service
from messaging.sms.coalesce import SendWriter
from messaging.sms.schemas import SeedSendSms, SendResult, SmsSend

router = APIRouter(prefix="/api/v1/sms", tags=["sms"])
seed_router = APIRouter(prefix="/api", tags=["sms (seed 003)"])

SEED_SENT = "SMS sent successfully"


def _conversation_page(
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> PageParams:
    return PageParams(page=page, limit=limit)


@router.post("/send", status_code=202, response_model=Envelope[SendResult])
async def send_sms(
    body: SmsSend,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    writer: SendWriter,
    key: OptionalIdempotencyKey = None,
):
    """Queue one text to up to 10,000 recipients (contact ids or E.164 numbers). Opted-out and
    repeated numbers are answered as `skipped`. With an `Idempotency-Key`, a repeat replays the
    first answer."""
    async def work() -> dict:
        sent = await service.send(
            session, settings, principal, text=body.message, recipients=body.recipients, sender=body.sender,
            writer=writer if key is None else None,
        )
        # The answer is built here rather than validated against response_model: 10,000 items.
        return ok(sent.result)

    return await idempotency.answer_once(
        session, f"sms.send:{principal.tenant_id}", key, body.model_dump(), 202, work
    )


@router.get("/logs", response_model=Envelope[Page[MessageRead]])
async def sms_logs(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: Pagination,
    since: Since = None,
    until: Until = None,
    direction: Direction = None,
    status: Status = None,
):
    """Your SMS, both directions, newest first; `from`/`to` (ISO dates or date-times, both
    inclusive) limit them to a period."""
    filters = messages.make_filter(since=since, until=until, direction=direction, status=status)
    items, total = await messages.list_messages(session, principal, filters, offset=page.offset, limit=page.limit)
    return ok(paginate([m.model_dump(mode="json", by_alias=True) for m in items], total, page))


@seed_router.post("/send-sms")
async def seed_send_sms(
    body: SeedSendSms, principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep, writer: SendWriter
):
    """Seed 003: send one SMS from `senderPhone` (one of your numbers, or the platform's) to
    `receiverPhone`. A `uuid` makes it idempotent: a repeat sends nothing and answers the same."""
    sent = await service.send_one(
        session, settings, principal, to=body.receiver_phone, text=body.message_text,
        sender=body.sender_phone, external_id=body.external_id, writer=writer,
    )
    result = sent.result
    message = result.messages[0]
    return ok({
        "message": SEED_SENT,
        "id": str(message.id),
        "uuid": body.external_id,
        "status": message.status,
        "from": result.sender,
        "to": message.to,
        "encoding": result.encoding,
        "segments": result.segments,
        "duplicate": sent.replayed,
    })


@seed_router.get("/get-conversation/{phone}")
async def seed_get_conversation(
    phone: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    page: Annotated[PageParams, Depends(_conversation_page)],
):
    """Seed 003: every SMS exchanged with `phone`, oldest first (`limit` ≤ 500, default 100).
    `phone_number` is who sent each message; `direction` is `sent` (by you) or `received`."""
    items, total = await messages.conversation(session, principal, phone, offset=page.offset, limit=page.limit)
    return ok({
        "messages": [m.model_dump(mode="json") for m in items],
        "pagination": {k: v for k, v in paginate([], total, page).items() if k != "items"},
    })
