"""A tenant's messages: lists with filters (seed 002 `/messages`, seed 000 `/sms/logs`), one
message with its status history, and seed 003's conversation with one phone number."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from common.auth import Principal
from common.errors import NotFound, Unprocessable
from common.phones import to_e164
from sqlalchemy.ext.asyncio import AsyncSession

from messaging.messages.repository import MessageFilter, MessageRepository
from messaging.messages.schemas import ConversationMessage, MessageDetail, MessageRead, StatusChange

DIRECTIONS = {"outbound", "inbound"}
STATUSES = {"queued", "sent", "delivered", "failed", "rejected", "received"}


class MessageNotFound(NotFound):
    code, message = "MESSAGE_NOT_FOUND", "No such message"



def _choices(name: str, raw: str | None, allowed: set[str]) -> tuple[str, ...]:
    """`SENT,delivered` -> ("sent", "delivered"); any case; an unknown value is a 422."""
    if raw is None or not raw.strip():
        return ()
    values = tuple(dict.fromkeys(v.strip().lower() for v in raw.split(",") if v.strip()))
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise Unprocessable(
            f"Unknown {name}: {', '.join(unknown)}", code=f"INVALID_{name.upper()}",
            details={"field": name, "allowed": sorted(allowed)},
        )
    return values


def _instant(name: str, raw: str, *, end: bool) -> datetime:
    """An ISO date or date-time (without an offset: UTC). For `to` (end=True) the exclusive end
    of what it names: the next day for a date, the next microsecond for a date-time, so `to`
    is inclusive either way."""
    raw = raw.strip()
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise Unprocessable(
            f"`{name}` is not an ISO date or date-time", code="INVALID_DATE", details={"field": name, "value": raw}
        ) from exc
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value + timedelta(microseconds=1) if end else value


def make_filter(
    *,
    conversation_id: uuid.UUID | None = None,
    direction: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> MessageFilter:
    start = _instant("from", since, end=False) if since else None
    stop = _instant("to", until, end=True) if until else None
    if start is not None and stop is not None and start >= stop:
        raise Unprocessable("`from` is after `to`", code="INVALID_RANGE", details={"from": since, "to": until})
    return MessageFilter(
        conversation_id=conversation_id,
        directions=_choices("direction", direction, DIRECTIONS),
        statuses=_choices("status", status, STATUSES),
        since=start,
        until=stop,
    )


def message_read(row: Any) -> MessageRead:
    return MessageRead(
        id=row.id, conversation_id=row.conversation_id, channel=row.channel, direction=row.direction,
        from_=row.from_number, to=row.to_number, body=row.body, encoding=row.encoding, segments=row.segments,
        status=row.status, error=row.error, contact_id=row.contact_id, batch_id=row.batch_id,
        external_id=row.external_id, provider=row.provider, price_minor=row.price_minor, currency=row.currency,
        created_at=row.created_at, updated_at=row.updated_at, sent_at=row.sent_at, delivered_at=row.delivered_at,
    )


async def list_messages(
    session: AsyncSession, principal: Principal, filters: MessageFilter, *, offset: int, limit: int
) -> tuple[list[MessageRead], int]:
    rows, total = await MessageRepository(session).page(principal.tenant_uuid, filters, offset=offset, limit=limit)
    return [message_read(r) for r in rows], total


async def get(session: AsyncSession, principal: Principal, message_id: uuid.UUID) -> MessageDetail:
    repo = MessageRepository(session)
    row = await repo.get(principal.tenant_uuid, message_id)
    if row is None:
        raise MessageNotFound()
    history = [StatusChange(status=h.status, at=h.at, detail=h.detail) for h in await repo.history(message_id)]
    return MessageDetail(**message_read(row).model_dump(), history=history)


async def conversation(
    session: AsyncSession, principal: Principal, phone: str, *, offset: int, limit: int
) -> tuple[list[ConversationMessage], int]:
    """Seed 003: every message with `phone`, oldest first. `phone_number` is who sent the
    message: our number on a sent one, theirs on a received one."""
    peer = to_e164(phone)
    rows, total = await MessageRepository(session).with_peer(principal.tenant_uuid, peer, offset=offset, limit=limit)
    return [
        ConversationMessage(
            id=r.id, phone_number=r.from_number, message_text=r.body, timestamp=int(r.created_at.timestamp()),
            direction="sent" if r.direction == "outbound" else "received", status=r.status,
        )
        for r in rows
    ], total
