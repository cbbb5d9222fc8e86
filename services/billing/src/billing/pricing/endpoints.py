import uuid
from typing import Annotated

from common.api import Envelope, Page, Pagination, ok, paginate
from common.auth import CurrentPrincipal, PlatformAdmin
from common.db.session import SessionDep
from fastapi import APIRouter, Query

from billing.deps import SettingsDep
from billing.models import PricingRule
from billing.pricing import service
from billing.pricing.schemas import (
    PricingRuleCreate,
    PricingRuleRead,
    PricingRuleUpdate,
    RuleKind,
    SmsPriceRead,
)

router = APIRouter(prefix="/api/v1", tags=["pricing"])

CountryQuery = Annotated[str | None, Query(pattern=r"^[A-Za-z]{2}$")]


def _read(rule: PricingRule) -> PricingRuleRead:
    return PricingRuleRead.model_validate(rule).model_copy(update={"price": service.rule_price(rule)})


@router.get("/payments/prices", response_model=Envelope[SmsPriceRead])
async def sms_price(
    _: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    country: Annotated[str, Query(pattern=r"^[A-Za-z]{2}$")],
    route: Annotated[str, Query(min_length=1, max_length=40)] = "standard",
):
    """The price of one SMS segment to `country` on `route` now, to show before sending."""
    return ok(await service.quote_sms(session, settings, country, route))


@router.get("/admin/pricing-rules", response_model=Envelope[Page[PricingRuleRead]])
async def list_rules(
    _: PlatformAdmin,
    session: SessionDep,
    page: Pagination,
    kind: RuleKind | None = None,
    country: CountryQuery = None,
    route: Annotated[str | None, Query(max_length=40)] = None,
    provider: Annotated[str | None, Query(max_length=40)] = None,
    service_: Annotated[str | None, Query(alias="service", max_length=60)] = None,
    active: bool | None = None,
):
    """Pricing rules, filtered by any of kind, country, route, provider, service and active."""
    filters = {
        "kind": kind, "country": country.upper() if country else None, "route": route,
        "provider": provider, "service": service_, "active": active,
    }
    rules, total = await service.list_rules(session, filters=filters, offset=page.offset, limit=page.limit)
    items = [_read(r).model_dump(mode="json", by_alias=True) for r in rules]
    return ok(paginate(items, total, page))


@router.get("/admin/pricing-rules/{rule_id}", response_model=Envelope[PricingRuleRead])
async def get_rule(rule_id: uuid.UUID, _: PlatformAdmin, session: SessionDep):
    """One pricing rule."""
    return ok(_read(await service.get_rule(session, rule_id)))


@router.post("/admin/pricing-rules", status_code=201, response_model=Envelope[PricingRuleRead])
async def create_rule(body: PricingRuleCreate, _: PlatformAdmin, session: SessionDep, settings: SettingsDep):
    """Add a rule; one rule per kind and scope (`409 DUPLICATE_PRICING_RULE` names the other)."""
    return ok(_read(await service.create_rule(session, settings, body.model_dump())))


@router.patch("/admin/pricing-rules/{rule_id}", response_model=Envelope[PricingRuleRead])
async def update_rule(
    rule_id: uuid.UUID, body: PricingRuleUpdate, _: PlatformAdmin, session: SessionDep, settings: SettingsDep
):
    """Change a rule's scope, price or cost, or switch it off (`active: false`)."""
    rule = await service.update_rule(session, settings, rule_id, body.model_dump(exclude_unset=True))
    return ok(_read(rule))


@router.delete("/admin/pricing-rules/{rule_id}")
async def delete_rule(rule_id: uuid.UUID, _: PlatformAdmin, session: SessionDep):
    """Remove a rule. A scope the provider catalogue prices gets a default-margin rule again on
    the next catalogue update: to stop charging by a rule but keep it, set `active: false`."""
    await service.delete_rule(session, rule_id)
    return ok({"id": str(rule_id), "deleted": True})
