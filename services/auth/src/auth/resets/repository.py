from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import PasswordReset


class ResetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, reset: PasswordReset) -> None:
        self.session.add(reset)
        await self.session.flush()

    async def use(self, token_hash: str, at: datetime) -> PasswordReset | None:
        """Consume an unexpired, unused token; None if there is no such token (single use)."""
        return await self.session.scalar(
            update(PasswordReset)
            .where(
                PasswordReset.token_hash == token_hash,
                PasswordReset.used_at.is_(None),
                PasswordReset.expires_at > at,
            )
            .values(used_at=at)
            .returning(PasswordReset)
        )
