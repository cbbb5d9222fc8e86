from datetime import datetime

from sqlalchemy import or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import SigningKey


class KeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock(self) -> None:
        """Serialise key creation across API processes starting together."""
        await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext('auth.signing_keys'))"))

    async def signer(self, now: datetime) -> SigningKey | None:
        return await self.session.scalar(
            select(SigningKey)
            .where(SigningKey.retired_at.is_(None), SigningKey.active_from <= now)
            .order_by(SigningKey.active_from.desc())
            .limit(1)
        )

    async def published(self, now: datetime) -> list[SigningKey]:
        rows = await self.session.scalars(
            select(SigningKey)
            .where(or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > now))
            .order_by(SigningKey.active_from)
        )
        return list(rows)

    async def retire_active(self, at: datetime) -> None:
        await self.session.execute(
            update(SigningKey).where(SigningKey.retired_at.is_(None)).values(retired_at=at)
        )

    async def add(self, key: SigningKey) -> None:
        self.session.add(key)
        await self.session.flush()
