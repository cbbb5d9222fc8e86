"""Pricing rules on the wire. Amounts are integers in minor units; margins in basis points
(1 bp = 0.01 %, so 3000 = 30 %)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import phonenumbers
from common.api import CamelModel, InputModel
from pydantic import AfterValidator, Field, StringConstraints, field_validator

RuleKind = Literal["sms", "order"]

MAX_PRICE_MINOR = 10_000_000  # 100,000.00: far above any SMS or number price
MAX_MARGIN_BP = 100_000  # 1,000 %


def _region(value: str) -> str:
    # The regions phone numbers exist for: what messaging derives a message's country from.
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value} is not an ISO 3166 alpha-2 country code with phone numbers")
    return value


Country = Annotated[
    str, StringConstraints(to_upper=True, pattern=r"^[A-Za-z]{2}$"), AfterValidator(_region)
]
Route = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.:-]+$")]
Provider = Annotated[str, StringConstraints(min_length=1, max_length=40)]
Service = Annotated[str, StringConstraints(min_length=1, max_length=60)]
Currency = Annotated[str, StringConstraints(to_upper=True, pattern=r"^[A-Za-z]{3}$")]
Minor = Annotated[int, Field(ge=0, le=MAX_PRICE_MINOR)]
Margin = Annotated[int, Field(ge=0, le=MAX_MARGIN_BP)]


class PricingRuleCreate(InputModel):
    """SMS rules are scoped by `country` and `route`, order rules by `provider`, `service` and
    `country`; an omitted scope field matches anything, and the most specific rule wins. Give
    exactly one of `fixedPriceMinor` or `marginBp` (price = cost x (1 + margin), rounded up)."""

    kind: RuleKind
    country: Country | None = None
    route: Route | None = None
    provider: Provider | None = None
    service: Service | None = None
    currency: Currency | None = None
    cost_minor: Minor | None = None
    margin_bp: Margin | None = None
    fixed_price_minor: Minor | None = None
    active: bool = True


class PricingRuleUpdate(InputModel):
    """Every field optional; `null` clears a scope field or a price field (the result must still
    be a valid rule). The kind of a rule cannot change: create another one."""

    country: Country | None = None
    route: Route | None = None
    provider: Provider | None = None
    service: Service | None = None
    cost_minor: Minor | None = None
    margin_bp: Margin | None = None
    fixed_price_minor: Minor | None = None
    active: bool | None = None

    @field_validator("active")
    @classmethod
    def _active_not_null(cls, value: bool | None) -> bool | None:
        if value is None:
            raise ValueError("active must be true or false")
        return value


class PricingRuleRead(CamelModel):
    id: uuid.UUID
    kind: RuleKind
    country: str | None
    route: str | None
    provider: str | None
    service: str | None
    currency: str
    cost_minor: int | None
    margin_bp: int | None
    fixed_price_minor: int | None
    price: int | None = Field(default=None, description="What the rule charges now; null: a margin rule with no cost yet")
    active: bool
    created_at: datetime
    updated_at: datetime


class SmsPriceRead(CamelModel):
    """What one SMS segment to `country` on `route` costs you now."""

    country: str
    route: str
    segment_price: int
    currency: str
