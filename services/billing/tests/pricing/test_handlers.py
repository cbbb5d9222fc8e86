"""provider.catalog.updated feeds the cost of margin rules, creating default-margin rules for new
scopes, and never touches a fixed price."""

import uuid

from billing.pricing import service
from billing.pricing.handlers import DEFAULT_MARGIN_BP, make_handlers
from billing.settings import BillingSettings
from common.contracts import EventEnvelope
from common.contracts.provider.v1 import CatalogUpdatedV1

from tests.support import rollback_session

SETTINGS = BillingSettings()
on_catalog_updated = make_handlers(SETTINGS)["provider.catalog.updated.v1"]


def catalog(provider: str, *items: dict) -> EventEnvelope[CatalogUpdatedV1]:
    return EventEnvelope[CatalogUpdatedV1](
        source="/switchboard/provider-sync", type="provider.catalog.updated.v1", subject=provider,
        data=CatalogUpdatedV1.model_validate({"provider": provider, "items": list(items)}),
    )


def item(**values) -> dict:  # noqa: ANN003
    return {"kind": "sms", "country": "FO", "currency": "USD", **values}


async def rules(session, **filters):  # noqa: ANN001, ANN003, ANN201
    found, _ = await service.list_rules(session, filters=filters, offset=0, limit=100)
    return found


async def test_costs_feed_margin_rules_and_new_scopes_get_the_default_margin():
    provider, margin_route, fixed_route, new_route = (f"t-{uuid.uuid4().hex[:10]}" for _ in range(4))
    async with rollback_session(SETTINGS) as session:
        margin = await service.create_rule(session, SETTINGS, {"kind": "sms", "country": "FO", "route": margin_route, "margin_bp": 5000})
        fixed = await service.create_rule(session, SETTINGS, {"kind": "sms", "country": "FO", "route": fixed_route, "fixed_price_minor": 3})
        await on_catalog_updated(session, catalog(
            provider,
            item(route=margin_route, cost_minor=5),
            item(route=fixed_route, cost_minor=50),
            item(route=new_route, cost_minor=9),
            item(route=new_route, cost_minor=10),  # the same scope twice: the last one counts
            {"kind": "order", "country": "fo", "service": "telegram", "cost_minor": 20, "currency": "usd"},
            # Not priceable here: skipped, and the rest still applies.
            item(route=new_route, cost_minor=4, currency="EUR"),
            item(country="ZZ", route=new_route, cost_minor=4),
            item(route=f"{new_route}-zero", cost_minor=0),
            {"kind": "order", "country": "FO", "cost_minor": 4, "currency": "USD"},
        ))
        await session.refresh(margin)
        await session.refresh(fixed)
        assert (margin.cost_minor, service.rule_price(margin)) == (5, 8)  # 7.5 -> 8
        assert (fixed.cost_minor, service.rule_price(fixed)) == (None, 3)
        [created] = await rules(session, route=new_route)
        assert (created.kind, created.country, created.provider, created.margin_bp, created.cost_minor) == (
            "sms", "FO", None, DEFAULT_MARGIN_BP, 10
        )
        [order] = await rules(session, provider=provider)
        assert (order.kind, order.service, order.country, order.route, service.rule_price(order)) == (
            "order", "telegram", "FO", None, 26
        )
        assert await service.order_price(session, SETTINGS, provider, "telegram", "FO") == 26
        assert await rules(session, route=f"{new_route}-zero") == []

        # A later catalogue moves the cost; an admin's margin stays.
        await on_catalog_updated(session, catalog(provider, item(route=margin_route, cost_minor=11)))
        await session.refresh(margin)
        assert (margin.cost_minor, margin.margin_bp, service.rule_price(margin)) == (11, 5000, 17)
