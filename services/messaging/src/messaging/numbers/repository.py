"""Every sms_numbers query. A number has one owner across all tenants (its primary key)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from messaging.models import SmsNumber

N = SmsNumber.__table__


class NumberRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_if_free(self, tenant_id: uuid.UUID, number: str, label: str | None) -> Any | None:
        """The new row, or None when some tenant (this one included) already owns the number."""
        stmt = (
            pg_insert(N)
            .values(number=number, tenant_id=tenant_id, label=label)
            .on_conflict_do_nothing(index_elements=[N.c.number])
            .returning(N.c.number, N.c.label, N.c.created_at)
        )
        return (await self.session.execute(stmt)).first()

    async def page(self, tenant_id: uuid.UUID, *, offset: int, limit: int) -> tuple[Sequence[Any], int]:
        total = await self.session.scalar(select(func.count()).select_from(N).where(N.c.tenant_id == tenant_id))
        rows = await self.session.execute(
            select(N.c.number, N.c.label, N.c.created_at)
            .where(N.c.tenant_id == tenant_id)
            .order_by(N.c.created_at, N.c.number)
            .offset(offset)
            .limit(limit)
        )
        return rows.all(), int(total or 0)

    async def delete(self, tenant_id: uuid.UUID, number: str) -> bool:
        deleted = await self.session.scalar(
            delete(N).where(N.c.tenant_id == tenant_id, N.c.number == number).returning(N.c.number)
        )
        return deleted is not None
