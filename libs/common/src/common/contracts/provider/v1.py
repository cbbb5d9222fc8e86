"""Events published by the provider-sync service, version 1."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.contracts.base import Payload
from common.contracts.registry import event


class CatalogItemV1(Payload):
    """One priced line of a provider's catalogue: an SMS route to a country, or a number for a
    service in a country. `cost_minor` is what the provider charges us, in `currency`."""

    kind: Literal["sms", "order"]
    country: str = Field(min_length=2, max_length=2)
    route: str | None = Field(default=None, max_length=40)
    service: str | None = Field(default=None, max_length=60)
    cost_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)


@event("provider.catalog.updated.v1")
class CatalogUpdatedV1(Payload):
    """A provider's prices changed (or were synced): the items carry the current cost of each
    scope listed; scopes not listed are unchanged. Subject (the Kafka key): the provider, so
    one provider's updates stay in order."""

    provider: str = Field(min_length=1, max_length=40)
    items: list[CatalogItemV1]
