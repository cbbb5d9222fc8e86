"""Price resolution: the most specific active rule wins; its price is the fixed price, or the
provider cost x (1 + margin), rounded up to the minor unit; without a rule, the default price."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import PricingRule
from billing.settings import BillingSettings


def rule_price(rule: PricingRule) -> int | None:
    if rule.fixed_price_minor is not None:
        return rule.fixed_price_minor
    if rule.cost_minor is None or rule.margin_bp is None:
        return None
    return -(-rule.cost_minor * (10_000 + rule.margin_bp) // 10_000)  # ceil, integers only


def _specificity(rule: PricingRule, fields: tuple[str, ...]) -> int:
    return sum(getattr(rule, f) is not None for f in fields)


async def _best(session: AsyncSession, kind: str, match: dict[str, str]) -> int | None:
    stmt = select(PricingRule).where(PricingRule.kind == kind, PricingRule.active.is_(True))
    for field, value in match.items():
        column = getattr(PricingRule, field)
        stmt = stmt.where((column == value) | column.is_(None))
    rules = list(await session.scalars(stmt))
    for rule in sorted(rules, key=lambda r: _specificity(r, tuple(match)), reverse=True):
        price = rule_price(rule)
        if price is not None:
            return price
    return None


async def sms_segment_price(session: AsyncSession, settings: BillingSettings, country: str, route: str) -> int:
    price = await _best(session, "sms", {"country": country.upper(), "route": route})
    return settings.default_sms_price_minor if price is None else price


async def order_price(
    session: AsyncSession, settings: BillingSettings, provider: str, service: str, country: str
) -> int:
    price = await _best(session, "order", {"provider": provider, "service": service, "country": country.upper()})
    return settings.default_order_price_minor if price is None else price
