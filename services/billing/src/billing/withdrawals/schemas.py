import uuid
from datetime import datetime
from typing import Annotated, Literal

from common.api import CamelModel, InputModel
from pydantic import Field, StringConstraints

WithdrawalStatus = Literal["requested", "paid", "rejected"]

MIN_WITHDRAWAL_MINOR = 100  # 1.00: below this a payout costs more than it moves
MAX_WITHDRAWAL_MINOR = 100_000_000  # 1,000,000.00 per request


class WithdrawalCreate(InputModel):
    amount: int = Field(ge=MIN_WITHDRAWAL_MINOR, le=MAX_WITHDRAWAL_MINOR, description="minor units (cents)")
    note: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = None


class WithdrawalReject(InputModel):
    reason: Annotated[str, StringConstraints(min_length=3, max_length=180)]


class WithdrawalRead(CamelModel):
    """A withdrawal as its tenant sees it. While `requested`, its amount is held (not available)."""

    id: uuid.UUID
    amount: int
    currency: str
    status: WithdrawalStatus
    note: str | None
    rejection_reason: str | None
    payout_method: str | None
    payout_reference: str | None
    payout_refunded: int | None = Field(description="once paid: what went back to your card payments")
    payout_manual: int | None = Field(description="once paid: what is transferred to you by hand")
    requested_by: str
    created_at: datetime
    decided_at: datetime | None


class AdminWithdrawalRead(WithdrawalRead):
    tenant_id: str
    decided_by: str | None
