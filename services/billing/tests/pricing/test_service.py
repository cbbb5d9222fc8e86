"""Pricing rules as the service applies them: validation, one rule per scope, the most specific
rule wins. Each test runs in a transaction that is rolled back."""

import random
import uuid

import pytest
from billing.pricing import service
from billing.settings import BillingSettings
from common.errors import Conflict, NotFound, Unprocessable

from tests.support import rollback_session

SETTINGS = BillingSettings()
# Territories no other test prices, so a country-wide rule here cannot change anyone's price.
QUIET_COUNTRIES = ["FO", "GL", "AX", "GI", "IM", "JE", "GG", "SM", "LI", "MC", "AD", "KN", "LC", "VC", "DM"]


def route() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def sms(**values):  # noqa: ANN003, ANN201
    return {"kind": "sms", "country": None, "route": None, "provider": None, "service": None,
            "currency": None, "cost_minor": None, "margin_bp": None, "fixed_price_minor": None,
            "active": True, **values}


def fields(values: dict) -> set[str]:
    values = {**values, "currency": values.get("currency") or "USD"}
    return {p["field"] for p in service.rule_problems(values, "USD")}


def test_a_rule_has_exactly_one_way_to_price_and_a_scope_of_its_kind():
    assert fields(sms(country="FO", fixed_price_minor=5)) == set()
    assert fields(sms(country="FO", fixed_price_minor=5, margin_bp=100)) == {"fixedPriceMinor"}
    assert fields(sms(country="FO")) == {"fixedPriceMinor"}
    assert fields(sms(country="FO", provider="p", service="s", fixed_price_minor=5)) == {"provider", "service"}
    assert fields({**sms(route="x", fixed_price_minor=5), "kind": "order"}) == {"route"}
    assert fields(sms(country="FO", fixed_price_minor=5, currency="EUR")) == {"currency"}


def test_a_margin_rule_needs_a_cost_unless_the_catalogue_feeds_its_scope():
    assert fields(sms(route="x", margin_bp=2000)) == {"costMinor"}  # no country: never fed
    assert fields(sms(route="x", margin_bp=2000, cost_minor=4)) == set()
    assert fields(sms(country="FO", margin_bp=2000)) == set()
    order = {**sms(margin_bp=2000), "kind": "order", "provider": "smsman", "country": "FO"}
    assert fields(order) == {"costMinor"}
    assert fields({**order, "service": "telegram"}) == set()


def test_price_is_the_fixed_price_or_the_cost_plus_margin_rounded_up():
    from billing.models import PricingRule

    assert service.rule_price(PricingRule(fixed_price_minor=0, margin_bp=None)) == 0
    assert service.rule_price(PricingRule(cost_minor=7, margin_bp=3000)) == 10  # 9.1 -> 10
    assert service.rule_price(PricingRule(cost_minor=10, margin_bp=3000)) == 13  # exact
    assert service.rule_price(PricingRule(cost_minor=None, margin_bp=3000)) is None


async def test_country_and_route_beat_country_beat_the_default():
    country, fast, other = random.choice(QUIET_COUNTRIES), route(), route()
    async with rollback_session(SETTINGS) as session:
        assert await service.sms_segment_price(session, SETTINGS, country, fast) == SETTINGS.default_sms_price_minor
        await service.create_rule(session, SETTINGS, sms(country=country, fixed_price_minor=40))
        await service.create_rule(session, SETTINGS, sms(country=country, route=fast, margin_bp=5000, cost_minor=30))
        assert await service.sms_segment_price(session, SETTINGS, country.lower(), fast) == 45
        assert await service.sms_segment_price(session, SETTINGS, country, other) == 40
        quote = await service.quote_sms(session, SETTINGS, country, fast)
        assert (quote.segment_price, quote.currency) == (45, "USD")


async def test_an_inactive_or_costless_rule_gives_way_to_a_less_specific_one():
    country, r = random.choice(QUIET_COUNTRIES), route()
    async with rollback_session(SETTINGS) as session:
        await service.create_rule(session, SETTINGS, sms(country=country, fixed_price_minor=40))
        specific = await service.create_rule(session, SETTINGS, sms(country=country, route=r, fixed_price_minor=9))
        assert await service.sms_segment_price(session, SETTINGS, country, r) == 9
        await service.update_rule(session, SETTINGS, specific.id, {"active": False})
        assert await service.sms_segment_price(session, SETTINGS, country, r) == 40
        await service.update_rule(session, SETTINGS, specific.id, {"active": True, "fixed_price_minor": None, "margin_bp": 1000})
        assert await service.sms_segment_price(session, SETTINGS, country, r) == 40  # no cost yet


async def test_one_rule_per_scope_and_the_conflict_names_the_other():
    r = route()
    async with rollback_session(SETTINGS) as session:
        first = await service.create_rule(session, SETTINGS, sms(country="FO", route=r, fixed_price_minor=5))
        with pytest.raises(Conflict) as exc:
            await service.create_rule(session, SETTINGS, sms(country="FO", route=r, margin_bp=10, cost_minor=3))
        assert exc.value.code == "DUPLICATE_PRICING_RULE" and exc.value.details == {"id": str(first.id)}
        # Moving another rule onto the same scope is the same conflict, and the session goes on.
        second = await service.create_rule(session, SETTINGS, sms(country="GL", route=r, fixed_price_minor=6))
        with pytest.raises(Conflict):
            await service.update_rule(session, SETTINGS, second.id, {"country": "FO"})
        assert (await service.get_rule(session, first.id)).fixed_price_minor == 5


async def test_an_update_is_validated_as_the_rule_it_would_leave():
    async with rollback_session(SETTINGS) as session:
        rule = await service.create_rule(session, SETTINGS, sms(route=route(), fixed_price_minor=5))
        with pytest.raises(Unprocessable) as exc:
            await service.update_rule(session, SETTINGS, rule.id, {"margin_bp": 2000})
        assert exc.value.details[0]["field"] == "fixedPriceMinor"
        with pytest.raises(Unprocessable):  # no country: the catalogue cannot supply the cost
            await service.update_rule(session, SETTINGS, rule.id, {"margin_bp": 2000, "fixed_price_minor": None})
        rule = await service.update_rule(
            session, SETTINGS, rule.id, {"margin_bp": 2000, "fixed_price_minor": None, "cost_minor": 10}
        )
        assert service.rule_price(rule) == 12
        await service.delete_rule(session, rule.id)
        with pytest.raises(NotFound):
            await service.get_rule(session, rule.id)
        with pytest.raises(NotFound):
            await service.delete_rule(session, rule.id)
