import uuid
from datetime import datetime

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import OtpChallenge


class OtpRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def supersede_open(self, phone: str, purpose: str, at: datetime) -> None:
        await self.session.execute(
            update(OtpChallenge)
            .where(
                OtpChallenge.phone == phone,
                OtpChallenge.purpose == purpose,
                OtpChallenge.consumed_at.is_(None),
                OtpChallenge.superseded_at.is_(None),
            )
            .values(superseded_at=at)
        )

    async def add(self, challenge: OtpChallenge) -> None:
        self.session.add(challenge)
        await self.session.flush()

    async def latest_open(self, phone: str, purpose: str) -> OtpChallenge | None:
        return await self.session.scalar(
            select(OtpChallenge)
            .where(
                OtpChallenge.phone == phone,
                OtpChallenge.purpose == purpose,
                OtpChallenge.consumed_at.is_(None),
                OtpChallenge.superseded_at.is_(None),
            )
            .order_by(OtpChallenge.created_at.desc())
            .limit(1)
        )

    async def claim_attempt(self, challenge_id: uuid.UUID, max_attempts: int, at: datetime) -> int | None:
        """Spend one attempt before the code is compared (so parallel guesses cannot exceed the
        limit); None when none is left. Locks the challenge with its last attempt."""
        return await self.session.scalar(
            update(OtpChallenge)
            .where(
                OtpChallenge.id == challenge_id,
                OtpChallenge.attempts < max_attempts,
                OtpChallenge.consumed_at.is_(None),
            )
            .values(
                attempts=OtpChallenge.attempts + 1,
                locked_at=case(
                    (OtpChallenge.attempts + 1 >= max_attempts, at), else_=OtpChallenge.locked_at
                ),
            )
            .returning(OtpChallenge.attempts)
        )

    async def consume(self, challenge_id: uuid.UUID, at: datetime) -> bool:
        """Mark used; False when someone else used it first (single use under races)."""
        row = await self.session.scalar(
            update(OtpChallenge)
            .where(OtpChallenge.id == challenge_id, OtpChallenge.consumed_at.is_(None))
            .values(consumed_at=at)
            .returning(OtpChallenge.id)
        )
        return row is not None
