"""Every sms_numbers and sms_number_claims query. A number has one owner across all tenants (its
primary key in sms_numbers); any number of tenants may claim it until one proves it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from messaging.models import SmsNumber, SmsNumberClaim

N = SmsNumber.__table__
C = SmsNumberClaim.__table__

# A tenant's numbers: the ones it owns and the ones it claimed and has not proved yet.
_MINE = """
    WITH mine AS (
      SELECT number, label, created_at, 'verified' AS status, NULL::timestamptz AS expires_at
        FROM sms_numbers WHERE tenant_id = :tenant
      UNION ALL
      SELECT c.number, c.label, c.created_at, 'pending', c.expires_at
        FROM sms_number_claims c
       WHERE c.tenant_id = :tenant
         AND NOT EXISTS (SELECT 1 FROM sms_numbers n WHERE n.number = c.number AND n.tenant_id = :tenant)
    )
"""
_PAGE = text(_MINE + "SELECT * FROM mine ORDER BY created_at, number OFFSET :offset LIMIT :limit")
_COUNT = text(_MINE + "SELECT count(*) FROM mine")


class NumberRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def owner(self, number: str) -> uuid.UUID | None:
        return await self.session.scalar(select(N.c.tenant_id).where(N.c.number == number))

    async def owned(self, tenant_id: uuid.UUID, number: str) -> Any | None:
        return (
            await self.session.execute(
                select(N.c.number, N.c.label, N.c.created_at).where(N.c.tenant_id == tenant_id, N.c.number == number)
            )
        ).first()

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
        """The tenant's numbers, verified and waiting for their code, oldest first."""
        total = await self.session.scalar(_COUNT, {"tenant": tenant_id})
        rows = await self.session.execute(_PAGE, {"tenant": tenant_id, "offset": offset, "limit": limit})
        return rows.all(), int(total or 0)

    async def delete(self, tenant_id: uuid.UUID, number: str) -> bool:
        """Remove the number or the tenant's claim on it; False when it had neither."""
        owned = await self.session.scalar(
            delete(N).where(N.c.tenant_id == tenant_id, N.c.number == number).returning(N.c.number)
        )
        claimed = await self.session.scalar(
            delete(C).where(C.c.tenant_id == tenant_id, C.c.number == number).returning(C.c.number)
        )
        return owned is not None or claimed is not None

    # -- claims --------------------------------------------------------------------------------

    async def put_claim(
        self,
        tenant_id: uuid.UUID,
        number: str,
        *,
        label: str | None,
        code_id: uuid.UUID,
        code_hash: str,
        now: datetime,
        expires_at: datetime,
        resend_after: datetime,
    ) -> Any | None:
        """Claim the number with a new code (a renewed claim starts its attempts again). None
        when this tenant's last code for it went out after `resend_after`: too soon for another."""
        stmt = pg_insert(C).values(
            tenant_id=tenant_id, number=number, label=label, code_id=code_id, code_hash=code_hash,
            attempts=0, sent_at=now, expires_at=expires_at,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[C.c.tenant_id, C.c.number],
            set_={
                "label": func.coalesce(stmt.excluded.label, C.c.label),
                "code_id": stmt.excluded.code_id,
                "code_hash": stmt.excluded.code_hash,
                "attempts": 0,
                "sent_at": stmt.excluded.sent_at,
                "expires_at": stmt.excluded.expires_at,
            },
            where=C.c.sent_at <= resend_after,
        ).returning(C.c.number, C.c.label, C.c.created_at, C.c.expires_at)
        return (await self.session.execute(stmt)).first()

    async def claim(self, tenant_id: uuid.UUID, number: str) -> Any | None:
        return (
            await self.session.execute(select(C).where(C.c.tenant_id == tenant_id, C.c.number == number))
        ).first()

    async def spend_attempt(self, tenant_id: uuid.UUID, number: str, max_attempts: int, now: datetime) -> Any | None:
        """Count one try at the code, under the row lock (parallel guesses queue and cannot pass
        the limit): the claim with its new count, or None when there is no live claim with tries
        left."""
        return (
            await self.session.execute(
                update(C)
                .where(
                    C.c.tenant_id == tenant_id, C.c.number == number,
                    C.c.attempts < max_attempts, C.c.expires_at > now,
                )
                .values(attempts=C.c.attempts + 1)
                .returning(C.c.code_id, C.c.code_hash, C.c.attempts, C.c.label)
            )
        ).first()

    async def drop_claims(self, number: str) -> None:
        """Every claim on the number (it has an owner now: no other can succeed)."""
        await self.session.execute(delete(C).where(C.c.number == number))

