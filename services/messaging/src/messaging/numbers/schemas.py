"""A tenant's SMS numbers on the wire."""

from __future__ import annotations

from datetime import datetime

from common.api import CamelModel, InputModel
from pydantic import Field


class NumberCreate(InputModel):
    number: str = Field(min_length=1, max_length=32, description="E.164, with the country code")
    label: str | None = Field(None, max_length=100)


class NumberRead(CamelModel):
    number: str
    label: str | None
    created_at: datetime
