from datetime import datetime
from typing import Annotated

from common.api import CamelModel, InputModel
from pydantic import Field, StringConstraints


class MovementRead(CamelModel):
    """One ledger movement on your account: amount > 0 adds credit, < 0 spends it."""

    id: int
    transaction_id: str
    kind: str
    description: str
    reference: str | None
    amount: int
    balance_after: int | None
    created_at: datetime


class AdjustmentCreate(InputModel):
    tenant_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    amount: int = Field(ge=-10_000_000_00, le=10_000_000_00)
    reason: Annotated[str, StringConstraints(min_length=3, max_length=200)]
