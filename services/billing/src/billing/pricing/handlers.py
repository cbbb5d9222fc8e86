"""provider.catalog.updated -> the provider costs behind margin rules (consumer group
`billing-pricing`). Catalogues are keyed by provider, so one provider's updates arrive in order."""

from __future__ import annotations

import logging

from common.contracts import EventEnvelope
from common.contracts.provider.v1 import CatalogUpdatedV1
from sqlalchemy.ext.asyncio import AsyncSession

from billing.pricing import service
from billing.settings import BillingSettings

log = logging.getLogger("billing.pricing")

# The margin of a rule the catalogue creates for a scope no admin has priced yet (30 %). A
# module constant rather than a setting: admins change a scope's margin on its rule.
DEFAULT_MARGIN_BP = 3000


def make_handlers(settings: BillingSettings):
    async def on_catalog_updated(session: AsyncSession, event: EventEnvelope[CatalogUpdatedV1]) -> None:
        catalog = event.data
        outcome = await service.apply_catalog(
            session,
            provider=catalog.provider,
            items=[item.model_dump() for item in catalog.items],
            currency=settings.default_currency,
            default_margin_bp=DEFAULT_MARGIN_BP,
        )
        log.info(
            "provider catalogue applied",
            extra={
                "provider": catalog.provider, "items": len(catalog.items),
                "rules_created": outcome.created, "rules_updated": outcome.updated,
                "items_skipped": outcome.skipped,
            },
        )

    return {"provider.catalog.updated.v1": on_catalog_updated}
