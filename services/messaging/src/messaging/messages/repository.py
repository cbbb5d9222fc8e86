"""Reading messages, every query scoped by the tenant. Rows, not ORM objects: lists are read
often and never changed here (status changes go through `messaging.sms.status`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from messaging.models import Conversation, Message, MessageStatusHistory

M = Message.__table__
H = MessageStatusHistory.__table__
C = Conversation.__table__
COLUMNS = [c for c in M.c if c.name not in {"tenant_id", "route", "billing", "attempts", "next_attempt_at",
                                           "lease_until", "provider_message_id"}]


@dataclass(frozen=True)
class MessageFilter:
    conversation_id: uuid.UUID | None = None
    directions: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def _filtered(stmt: Select[Any], tenant_id: uuid.UUID, f: MessageFilter) -> Select[Any]:
    stmt = stmt.where(M.c.tenant_id == tenant_id)
    if f.conversation_id is not None:
        stmt = stmt.where(M.c.conversation_id == f.conversation_id)
    if f.directions:
        stmt = stmt.where(M.c.direction.in_(f.directions))
    if f.statuses:
        stmt = stmt.where(M.c.status.in_(f.statuses))
    if f.since is not None:
        stmt = stmt.where(M.c.created_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(M.c.created_at < f.until)
    return stmt


class MessageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(
        self, tenant_id: uuid.UUID, f: MessageFilter, *, offset: int, limit: int
    ) -> tuple[Sequence[Any], int]:
        """Newest first (UUIDv7 ids break ties: a batch lists its last recipient first)."""
        total = await self.session.scalar(_filtered(select(func.count()).select_from(M), tenant_id, f))
        rows = await self.session.execute(
            _filtered(select(*COLUMNS), tenant_id, f)
            .order_by(M.c.created_at.desc(), M.c.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return rows.all(), int(total or 0)

    async def get(self, tenant_id: uuid.UUID, message_id: uuid.UUID) -> Any | None:
        return (
            await self.session.execute(select(*COLUMNS).where(M.c.tenant_id == tenant_id, M.c.id == message_id))
        ).first()

    async def history(self, message_id: uuid.UUID) -> Sequence[Any]:
        rows = await self.session.execute(
            select(H.c.status, H.c.at, H.c.detail).where(H.c.message_id == message_id).order_by(H.c.id)
        )
        return rows.all()

    async def with_peer(
        self, tenant_id: uuid.UUID, peer: str, *, offset: int, limit: int
    ) -> tuple[Sequence[Any], int]:
        """Every message exchanged with `peer` (from any of the tenant's numbers), oldest first."""
        conversations = select(C.c.id).where(C.c.tenant_id == tenant_id, C.c.peer_number == peer).scalar_subquery()
        where = (M.c.conversation_id.in_(conversations), M.c.tenant_id == tenant_id)
        total = await self.session.scalar(select(func.count()).select_from(M).where(*where))
        rows = await self.session.execute(
            select(M.c.id, M.c.direction, M.c.from_number, M.c.body, M.c.status, M.c.created_at)
            .where(*where)
            .order_by(M.c.created_at, M.c.id)
            .offset(offset)
            .limit(limit)
        )
        return rows.all(), int(total or 0)
