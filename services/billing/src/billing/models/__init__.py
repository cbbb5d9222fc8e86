"""Billing's tables, all in the `billing` schema."""

import uuid
from datetime import datetime

from common.db import make_base
from sqlalchemy import BigInteger, CheckConstraint, DateTime, String, func
from sqlalchemy.orm import Mapped, mapped_column

Base = make_base("billing")


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("held_minor >= 0", name="held_non_negative"),
        CheckConstraint("balance_minor - held_minor >= 0", name="available_non_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(String(64), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    balance_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    held_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    opened_by_event: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
