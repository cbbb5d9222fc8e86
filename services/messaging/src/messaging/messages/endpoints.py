"""Messages (seed 002): the tenant's SMS, both directions, with filters; one message with its
status history; sending one text message. Reached at /api/v1/messages and, through the
gateway, at /api/messages."""

import uuid
from typing import Annotated

from common import idempotency
from common.api import Envelope, Page, Pagination, ok, paginate
from common.auth import CurrentPrincipal
from common.db.session import SessionDep
from common.errors import Unprocessable
from common.idempotency import OptionalIdempotencyKey
from fastapi import APIRouter, Query

from messaging.deps import SettingsDep
from messaging.messages import service
from messaging.messages.schemas import MessageCreate, MessageDetail, MessageQueued, MessageRead
from messaging.sms import service as sms
from messaging.sms.coalesce import SendWriter

router = APIRouter(prefix="/api/v1/messages", tags=["messages"])

Direction = Annotated[str | None, Query(max_length=40, description="INBOUND or OUTBOUND (any case)")]
Status = Annotated[
    str | None,
    Query(max_length=200, description="queued, sent, delivered, failed, rejected, received; any case, comma-separated"),
]
Since = Annotated[str | None, Query(alias="from", max_length=40, description="ISO date or date-time (UTC if no offset)")]
Until = Annotated[str | None, Query(alias="to", max_length=40, description="ISO date or date-time, inclusive")]


class UnsupportedType(Unprocessable):
    code, message = "UNSUPPORTED_TYPE", "Only text messages can be sent today"


@router.get("", response_model=Envelope[Page[MessageRead]])
async def list_messages(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: Pagination,
    conversation_id: Annotated[uuid.UUID | None, Query(alias="conversationId")] = None,
    direction: Direction = None,
    status: Status = None,
    since: Since = None,
    until: Until = None,
):
    """Your tenant's messages, newest first, filtered by conversation, direction, status, dates."""
    filters = service.make_filter(
        conversation_id=conversation_id, direction=direction, status=status, since=since, until=until
    )
    items, total = await service.list_messages(session, principal, filters, offset=page.offset, limit=page.limit)
    return ok(paginate([m.model_dump(mode="json", by_alias=True) for m in items], total, page))


@router.post("", status_code=202, response_model=Envelope[MessageQueued])
async def send_message(
    body: MessageCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    writer: SendWriter,
    key: OptionalIdempotencyKey = None,
):
    """Send one message: `type: "text"` with `content.text`, from the platform's number
    (other types answer 422 UNSUPPORTED_TYPE for now). Queued: answers 202."""
    if body.type.lower() != "text":
        raise UnsupportedType(details={"type": body.type, "supported": ["text"]})
    text = body.content.get("text")
    if not isinstance(text, str) or set(body.content) != {"text"}:
        raise Unprocessable("A text message's content is {\"text\": \"...\"}", code="INVALID_CONTENT")
    async def work() -> dict:
        result = (
            await sms.send_one(
                session, settings, principal, to=body.to, text=text, writer=writer if key is None else None
            )
        ).result
        message = result.messages[0]
        return ok(
            MessageQueued(
                id=message.id, to=message.to, from_=result.sender, content={"text": text}, status=message.status,
                encoding=result.encoding, segments=result.segments, contact_id=message.contact_id,
                batch_id=result.batch_id,
            )
        )

    return await idempotency.answer_once(
        session, f"messages.send:{principal.tenant_id}", key, body.model_dump(), 202, work
    )


@router.get("/{message_id}", response_model=Envelope[MessageDetail])
async def get_message(message_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep):
    """One message of your tenant with its status history, price, segments and provider."""
    return ok(await service.get(session, principal, message_id))
