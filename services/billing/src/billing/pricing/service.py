"""Price resolution: the most specific active rule wins; its price is the fixed price, or the
provider cost x (1 + margin), rounded up to the minor unit; without a rule, the default price."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import phonenumbers
from common.errors import Conflict, NotFound, Unprocessable
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import PricingRule
from billing.pricing.repository import SCOPE_FIELDS, CatalogCost, DuplicateScope, PricingRepository
from billing.pricing.schemas import SmsPriceRead
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
    rules = await PricingRepository(session).applicable(kind, match)
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


async def quote_sms(session: AsyncSession, settings: BillingSettings, country: str, route: str) -> SmsPriceRead:
    country = country.upper()
    if country not in phonenumbers.SUPPORTED_REGIONS:
        raise Unprocessable(
            "Unknown country",
            code="VALIDATION_ERROR",
            details=[{"field": "country", "message": "not an ISO 3166 alpha-2 country code", "type": "value_error"}],
        )
    price = await sms_segment_price(session, settings, country, route)
    return SmsPriceRead(country=country, route=route, segment_price=price, currency=settings.default_currency)


# -- rules, as the platform admin manages them --------------------------------------------------

RULE_NOT_FOUND = "PRICING_RULE_NOT_FOUND"


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


def catalog_fed(kind: str, scope: dict[str, Any]) -> bool:
    """Whether provider.catalog.updated can set this scope's cost: the catalogue prices an SMS
    route per country, and a number per provider, service and country."""
    if kind == "sms":
        return scope.get("country") is not None
    return all(scope.get(f) is not None for f in ("provider", "service", "country"))


def rule_problems(values: dict[str, Any], currency: str) -> list[dict[str, str]]:
    """Why a rule (as it would be stored) is not valid; empty when it is."""
    problems: list[dict[str, str]] = []

    def bad(field: str, message: str) -> None:
        problems.append({"field": _camel(field), "message": message, "type": "pricing_rule"})

    if values["kind"] == "sms":
        for field in ("provider", "service"):
            if values.get(field) is not None:
                bad(field, "an SMS rule is scoped by country and route only")
    elif values.get("route") is not None:
        bad("route", "an order rule is scoped by provider, service and country only")
    if values.get("currency", currency) != currency:
        bad("currency", f"prices are charged in {currency}")
    fixed, margin = values.get("fixed_price_minor"), values.get("margin_bp")
    if (fixed is None) == (margin is None):
        bad("fixed_price_minor", "give exactly one of fixedPriceMinor or marginBp")
    elif margin is not None and values.get("cost_minor") is None and not catalog_fed(values["kind"], values):
        bad(
            "cost_minor",
            "a margin rule needs costMinor, unless the provider catalogue feeds its scope "
            "(SMS: country; order: provider, service and country)",
        )
    return problems


def _check(values: dict[str, Any], currency: str) -> None:
    problems = rule_problems(values, currency)
    if problems:
        raise Unprocessable("Invalid pricing rule", code="VALIDATION_ERROR", details=problems)


async def _duplicate(repo: PricingRepository, kind: str, scope: dict[str, Any]) -> Conflict:
    existing = await repo.by_scope(kind, scope)
    return Conflict(
        "A pricing rule with this kind and scope already exists",
        code="DUPLICATE_PRICING_RULE",
        details={"id": str(existing.id)} if existing is not None else None,
    )


async def list_rules(
    session: AsyncSession, *, filters: dict[str, str | bool | None], offset: int, limit: int
) -> tuple[list[PricingRule], int]:
    return await PricingRepository(session).find(filters=filters, offset=offset, limit=limit)


async def get_rule(session: AsyncSession, rule_id: uuid.UUID, *, for_update: bool = False) -> PricingRule:
    rule = await PricingRepository(session).get(rule_id, for_update=for_update)
    if rule is None:
        raise NotFound("No such pricing rule", code=RULE_NOT_FOUND)
    return rule


async def create_rule(session: AsyncSession, settings: BillingSettings, values: dict[str, Any]) -> PricingRule:
    values = {**values, "currency": values.get("currency") or settings.default_currency}
    _check(values, settings.default_currency)
    repo = PricingRepository(session)
    rule = PricingRule(id=uuid.uuid4(), **values)
    try:
        await repo.add(rule)
    except DuplicateScope:
        raise await _duplicate(repo, values["kind"], values) from None
    return rule


async def update_rule(
    session: AsyncSession, settings: BillingSettings, rule_id: uuid.UUID, changes: dict[str, Any]
) -> PricingRule:
    rule = await get_rule(session, rule_id, for_update=True)
    stored = ("kind", "currency", "cost_minor", "margin_bp", "fixed_price_minor", *SCOPE_FIELDS)
    merged = {**{field: getattr(rule, field) for field in stored}, **changes}
    _check(merged, settings.default_currency)
    repo = PricingRepository(session)
    try:
        await repo.update(rule, changes)
    except DuplicateScope:
        raise await _duplicate(repo, merged["kind"], merged) from None
    return rule


async def delete_rule(session: AsyncSession, rule_id: uuid.UUID) -> None:
    if not await PricingRepository(session).delete(rule_id):
        raise NotFound("No such pricing rule", code=RULE_NOT_FOUND)


# -- the provider catalogue ----------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogOutcome:
    created: int
    updated: int
    skipped: int


async def apply_catalog(
    session: AsyncSession,
    *,
    provider: str,
    items: list[dict[str, Any]],
    currency: str,
    default_margin_bp: int,
) -> CatalogOutcome:
    """Feed provider costs into the margin rules of the scopes they price; a scope without a rule
    gets a margin rule with `default_margin_bp`. Fixed-price rules keep their price. Items that
    cannot be priced here (another currency, an unknown country, an order without a service, a
    zero cost) are skipped, not fatal: one bad line must not hold back a whole catalogue."""
    by_scope: dict[tuple[str, str, str | None, str | None, str | None], CatalogCost] = {}
    skipped = 0
    for item in items:
        country = str(item["country"]).upper()
        kind = item["kind"]
        cost = CatalogCost(
            kind=kind,
            country=country,
            route=(item.get("route") or None) if kind == "sms" else None,
            provider=provider if kind == "order" else None,
            service=(item.get("service") or None) if kind == "order" else None,
            cost_minor=item["cost_minor"],
        )
        if (
            item["currency"].upper() != currency
            or country not in phonenumbers.SUPPORTED_REGIONS
            or (kind == "order" and not cost.service)
            or cost.cost_minor <= 0  # a zero cost is a catalogue gap far more often than a free route
        ):
            skipped += 1
            continue
        # One row per scope per statement (ON CONFLICT cannot touch a row twice): the last wins.
        by_scope[(cost.kind, cost.country, cost.route, cost.provider, cost.service)] = cost
    # In scope order, so two catalogues touching the same rules lock them in the same order.
    costs = [by_scope[scope] for scope in sorted(by_scope, key=lambda s: tuple(v or "" for v in s))]
    created, updated = await PricingRepository(session).upsert_costs(
        costs, currency=currency, margin_bp=default_margin_bp
    )
    return CatalogOutcome(created, updated, skipped)
