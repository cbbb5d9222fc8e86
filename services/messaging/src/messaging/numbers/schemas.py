"""A tenant's SMS numbers on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from common.api import CamelModel, InputModel
from pydantic import Field


class NumberCreate(InputModel):
    number: str = Field(min_length=1, max_length=32, description="E.164, with the country code")
    label: str | None = Field(None, max_length=100)


class NumberVerify(InputModel):
    code: str = Field(pattern=r"^\d{6}$", description="The six digits sent to the number by SMS")


class NumberRead(CamelModel):
    number: str
    label: str | None
    created_at: datetime
    status: Literal["pending", "verified"] = Field(
        description="`pending`: a code went to the number and it cannot be used yet; `verified`: yours"
    )
    expires_at: datetime | None = Field(None, description="When a pending number's code stops working")
